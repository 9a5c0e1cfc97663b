"""What a record stands for when a stage asks "did I emit this already?"."""

from __future__ import annotations

from collections.abc import Sequence

import pytest
from aiokafka.structs import ConsumerRecord

from pipeline.errors import UndecodableRecord
from pipeline.failures.provenance import Failure, failure_headers, now
from pipeline.runtime.dedupe import RecentIds, record_identity
from tests.unit.records import consumer_record

pytestmark = pytest.mark.unit


def _record(
    value: bytes,
    topic: str = "orders.events",
    offset: int = 1399,
    headers: Sequence[tuple[str, bytes]] = (),
) -> ConsumerRecord[bytes, bytes]:
    return consumer_record(topic, offset, None, value, partition=2, headers=headers)


def test_an_event_is_known_by_its_event_id() -> None:
    assert record_identity(_record(b'{"event_id": "e-1", "order_id": "o-1"}')) == "e-1"
    assert record_identity(_record(b'{"event": {"event_id": "e-1"}, "status": "paid"}')) == "e-1"


def test_undecodable_bytes_are_known_by_the_position_they_were_read_from() -> None:
    assert record_identity(_record(b"\xff\x00garbage")) == "orders.events/2/1399"


def test_a_dead_letter_of_undecodable_bytes_is_known_by_its_origin() -> None:
    garbage = _record(b"\xff\x00garbage")
    failure = Failure(UndecodableRecord("not JSON"), 1, now(), now())
    dead_letter = _record(
        garbage.value or b"",
        topic="validate.dlq",
        offset=7,
        headers=failure_headers(garbage, "validate", failure),
    )

    # The redelivered input and its dead letter stand for the same thing.
    assert record_identity(dead_letter) == record_identity(garbage)


def test_recent_ids_forget_the_oldest_first() -> None:
    recent = RecentIds(2)
    for event_id in ("a", "b", "c"):
        recent.add(event_id)

    assert "a" not in recent
    assert "b" in recent
    assert "c" in recent
