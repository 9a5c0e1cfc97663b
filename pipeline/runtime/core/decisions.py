"""What happens to a record after its handler failed: the failure path as data.

The stage's error policy classifies the exception (a
:class:`~pipeline.failures.verdict.Verdict`);
:func:`after_failure` turns that verdict and where the record stands into one action —
retry in this process, climb a rung of the retry ladder (holding the key with
``ordering="key"``), dead-letter it, or stop the stage. The driver performs the action;
this function only decides, so every path is a table row in
``tests/unit/test_decisions.py``.
"""

from __future__ import annotations

from dataclasses import dataclass

from pipeline.failures.verdict import Verdict


@dataclass(frozen=True, slots=True)
class RetryInProcess:
    """Try again here, with backoff, up to ``attempts`` more times; the key waits."""

    attempts: int


@dataclass(frozen=True, slots=True)
class Climb:
    """Send the record to retry rung ``level``; ``hold``: its key's later records wait
    until it comes back."""

    level: int
    attempts: int
    hold: bool


@dataclass(frozen=True, slots=True)
class DeadLetter:
    """Send the record to the dead-letter topic after ``attempts`` attempts."""

    attempts: int


@dataclass(frozen=True, slots=True)
class FailStage:
    """Stop the stage without committing past the record."""


FailureAction = RetryInProcess | Climb | DeadLetter | FailStage


def after_failure(
    verdict: Verdict,
    *,
    level: int,
    attempts_before: int,
    attempts_here: int,
    in_process_attempts: int,
    ladder_levels: int,
    ordered: bool,
) -> FailureAction:
    """The action for a record that failed with ``verdict``.

    ``level`` is the rung the record was read from (0: the stage's input topic),
    ``attempts_before`` the attempts its headers count from earlier rungs, and
    ``attempts_here`` the attempts just made in this process (1, or more after an
    in-process retry). In-process retries happen once, on the input topic only: a
    record back from the ladder has waited its delay and climbs again at once.
    """
    if verdict is Verdict.FAIL_STAGE:
        return FailStage()
    if verdict is Verdict.DEAD_LETTER:
        return DeadLetter(attempts_before + attempts_here)
    if level == 0 and attempts_here == 1 and in_process_attempts > 1:
        return RetryInProcess(in_process_attempts - 1)
    attempts = attempts_before + attempts_here
    if level < ladder_levels:
        return Climb(level + 1, attempts, hold=ordered)
    return DeadLetter(attempts)
