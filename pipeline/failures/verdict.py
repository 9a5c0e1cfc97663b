"""The runtime's answer to a failure, apart from how failures are classified (so the
engine's pure core can decide on it without importing the Kafka client)."""

from __future__ import annotations

from enum import StrEnum


class Verdict(StrEnum):
    """The runtime's answer to a failure."""

    RETRY = "retry"
    """Try the record again later; its key waits behind it."""
    DEAD_LETTER = "dead_letter"
    """Send the record to the stage's dead-letter topic now."""
    FAIL_STAGE = "fail_stage"
    """Stop the stage without committing: the pipeline itself is broken."""
