"""Headers that tell where a retried or dead-lettered record came from and why.

Only facts about the record and the failure go in; never configuration or credentials.
"""

from __future__ import annotations

import traceback
from dataclasses import dataclass
from datetime import UTC, datetime

from aiokafka.structs import ConsumerRecord

HEADER_PREFIX = "pipeline."
STAGE = "pipeline.stage"
ATTEMPT = "pipeline.attempt"
ORIGIN_TOPIC = "pipeline.origin.topic"
ORIGIN_PARTITION = "pipeline.origin.partition"
ORIGIN_OFFSET = "pipeline.origin.offset"
ORIGIN_TIMESTAMP = "pipeline.origin.timestamp"
ORIGIN_KEY = "pipeline.origin.key"
ERROR_TYPE = "pipeline.error.type"
ERROR_MESSAGE = "pipeline.error.message"
ERROR_STACK = "pipeline.error.stack"
FIRST_FAILURE_AT = "pipeline.failure.first_at"
LAST_FAILURE_AT = "pipeline.failure.last_at"
REPLAYED_AT = "pipeline.replay.at"
REPLAY_OF = "pipeline.replay.of"
EVENT_ID = "pipeline.event.id"
HOLD = "pipeline.hold"
"""On a dead letter that holds its key, and on the key's parked events: the hold's id."""
RELEASE_OF = "pipeline.release.of"
"""On a replayed dead letter or a discard marker: the hold it releases."""
RELEASE_DISCARD = "pipeline.release.discard"
"""On a discard marker: release the parked events without the dead letter."""
PARKED_AT = "pipeline.parked.at"
"""On a stage's outputs and dead letters: the stage's ``identify`` of the input, so a
stage restarted after a crash recognises, from its output tails, the inputs whose
outputs already exist, whatever the outputs look like."""

MAX_MESSAGE_CHARS = 500
MAX_STACK_CHARS = 2_000

Headers = list[tuple[str, bytes]]


@dataclass(frozen=True, slots=True)
class Failure:
    """One failure of a record, with the first time this record failed at this stage."""

    error: BaseException
    attempt: int
    first_failure_at: datetime
    last_failure_at: datetime


def _exception_name(exc: BaseException) -> str:
    kind = type(exc)
    if kind.__module__ == "builtins":
        return kind.__name__
    return f"{kind.__module__}.{kind.__qualname__}"


def failure_headers(record: ConsumerRecord, stage: str, failure: Failure) -> Headers:
    """Provenance headers for a record leaving ``stage`` because of ``failure``.

    The record's own headers (trace context among them) are kept, except earlier
    provenance, which this replaces.
    """
    exc = failure.error
    stack = "".join(traceback.format_exception(exc))[-MAX_STACK_CHARS:]
    # The replay marker stays: a replayed record that fails again is still a replay.
    kept = [
        (k, v)
        for k, v in record.headers
        if not k.startswith(HEADER_PREFIX) or k in (REPLAY_OF, REPLAYED_AT)
    ]
    origin = dict(record.headers)
    key = record.key.decode(errors="replace") if record.key is not None else ""
    return [
        *kept,
        (STAGE, stage.encode()),
        (ATTEMPT, str(failure.attempt).encode()),
        (ORIGIN_TOPIC, origin.get(ORIGIN_TOPIC, record.topic.encode())),
        (ORIGIN_PARTITION, origin.get(ORIGIN_PARTITION, str(record.partition).encode())),
        (ORIGIN_OFFSET, origin.get(ORIGIN_OFFSET, str(record.offset).encode())),
        (ORIGIN_TIMESTAMP, origin.get(ORIGIN_TIMESTAMP, str(record.timestamp).encode())),
        (ORIGIN_KEY, key.encode()),
        (ERROR_TYPE, _exception_name(exc).encode()),
        (ERROR_MESSAGE, str(exc)[:MAX_MESSAGE_CHARS].encode(errors="replace")),
        (ERROR_STACK, stack.encode(errors="replace")),
        (FIRST_FAILURE_AT, failure.first_failure_at.isoformat().encode()),
        (LAST_FAILURE_AT, failure.last_failure_at.isoformat().encode()),
    ]


def now() -> datetime:
    """The current UTC time (one place, so tests can reason about it)."""
    return datetime.now(UTC)
