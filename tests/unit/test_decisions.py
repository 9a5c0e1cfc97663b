"""The failure path as a table: verdict and position in, one action out."""

from __future__ import annotations

import pytest

from pipeline.failures.classify import Verdict
from pipeline.runtime.core.decisions import (
    Climb,
    DeadLetter,
    FailStage,
    FailureAction,
    RetryInProcess,
    after_failure,
)

pytestmark = pytest.mark.unit

R, D, F = Verdict.RETRY, Verdict.DEAD_LETTER, Verdict.FAIL_STAGE


@pytest.mark.parametrize(
    ("verdict", "level", "before", "here", "in_process", "expected"),
    [
        # first failure on the input topic: retried in process first
        (R, 0, 0, 1, 3, RetryInProcess(2)),
        # the in-process attempts failed too: the first rung, key held
        (R, 0, 0, 3, 3, Climb(1, 3, hold=True)),
        # no in-process retries configured: straight to the first rung
        (R, 0, 0, 1, 1, Climb(1, 1, hold=True)),
        # back from rung 1 and failing again: rung 2, attempts add up
        (R, 1, 3, 1, 3, Climb(2, 4, hold=True)),
        # failing on the last rung: dead letter with every attempt counted
        (R, 3, 5, 1, 3, DeadLetter(6)),
        # permanent failures skip the ladder, wherever they happen
        (D, 0, 0, 1, 3, DeadLetter(1)),
        (D, 2, 4, 1, 3, DeadLetter(5)),
        # an in-process retry that turned permanent is dead-lettered, not climbed
        (D, 0, 0, 3, 3, DeadLetter(3)),
        # fencing, configuration: the stage stops, nothing is decided for the record
        (F, 0, 0, 1, 3, FailStage()),
        (F, 2, 4, 1, 3, FailStage()),
    ],
)
def test_after_failure(
    verdict: Verdict, level: int, before: int, here: int, in_process: int, expected: FailureAction
) -> None:
    action = after_failure(
        verdict,
        level=level,
        attempts_before=before,
        attempts_here=here,
        in_process_attempts=in_process,
        ladder_levels=3,
        ordered=True,
    )
    assert action == expected


def test_without_key_ordering_a_climb_holds_nothing() -> None:
    action = after_failure(
        Verdict.RETRY,
        level=0,
        attempts_before=0,
        attempts_here=1,
        in_process_attempts=1,
        ladder_levels=3,
        ordered=False,
    )
    assert action == Climb(1, 1, hold=False)


def test_a_stage_without_retry_topics_dead_letters_what_keeps_failing() -> None:
    action = after_failure(
        Verdict.RETRY,
        level=0,
        attempts_before=0,
        attempts_here=3,
        in_process_attempts=3,
        ladder_levels=0,
        ordered=True,
    )
    assert action == DeadLetter(3)
