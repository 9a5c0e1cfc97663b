"""The retry ladder: which rung a failed record climbs to, when it is due, and how
that is written on the record.

A record that keeps failing after its in-process attempts goes to ``<stage>.retry.1``,
then ``.retry.2`` ... each with a longer delay, then to ``<stage>.dlq``. The delay is
carried as a due time in a header; the retry consumer pauses the partition until then.
"""

from __future__ import annotations

import time
from dataclasses import dataclass

from aiokafka.structs import ConsumerRecord

from pipeline.failures.provenance import ATTEMPT, Headers

RETRY_LEVEL = "pipeline.retry.level"
RETRY_DUE_AT_MS = "pipeline.retry.due_at_ms"


@dataclass(frozen=True, slots=True)
class Rung:
    """Where a record is on the ladder."""

    level: int
    """0 for the stage's input topic, n for ``<stage>.retry.n``."""
    due_at_ms: int
    attempts: int
    """Attempts made so far, over every rung."""


def rung_of(record: ConsumerRecord, level: int) -> Rung:
    """The rung a record read from ``level`` stands on (level 0: never failed here)."""
    if level == 0:
        return Rung(0, 0, 0)
    headers = dict(record.headers)
    due = headers.get(RETRY_DUE_AT_MS)
    attempts = headers.get(ATTEMPT)
    return Rung(level, int(due) if due else 0, int(attempts) if attempts else 0)


@dataclass(frozen=True, slots=True)
class Ladder:
    """The delays of a stage's retry topics, rung 1 first."""

    delays_s: tuple[float, ...]

    @property
    def levels(self) -> int:
        """How many retry topics the stage has."""
        return len(self.delays_s)

    def next_level(self, level: int) -> int | None:
        """The rung after ``level``, or ``None`` when the dead-letter topic is next."""
        return level + 1 if level < self.levels else None

    def due_at_ms(self, level: int, now_s: float | None = None) -> int:
        """When a record sent to ``level`` now becomes due, in epoch milliseconds."""
        start = time.time() if now_s is None else now_s
        return int((start + self.delays_s[level - 1]) * 1000)


def rung_headers(level: int, due_at_ms: int) -> Headers:
    """Headers that put a record on ``level`` until ``due_at_ms``."""
    return [(RETRY_LEVEL, str(level).encode()), (RETRY_DUE_AT_MS, str(due_at_ms).encode())]
