"""The invariant checker over hand-built records: lost, duplicated, reordered, unknown."""

from __future__ import annotations

from datetime import UTC, datetime

import orjson
import pytest
from aiokafka.structs import ConsumerRecord

from pipeline.errors import UndecodableRecord
from pipeline.failures import provenance
from pipeline.verify import check
from schemas import LineItem, OrderAmended, OrderPlaced, OrderProgress, OrderStatus
from tests.unit.records import consumer_record

pytestmark = pytest.mark.unit

EVENTS = "orders.events"
FULFILLED = "orders.fulfilled"
AT = datetime(2026, 1, 1, tzinfo=UTC)
ITEMS = (LineItem(sku="sku-001", quantity=2, unit_price_cents=500),)


def _event(order_id: str, sequence: int) -> OrderPlaced | OrderAmended:
    event_id = f"{order_id}-{sequence}"
    if sequence == 1:
        return OrderPlaced(
            event_id=event_id,
            order_id=order_id,
            sequence=1,
            occurred_at=AT,
            customer_id="cust-1",
            currency="EUR",
            items=ITEMS,
        )
    return OrderAmended(
        event_id=event_id, order_id=order_id, sequence=sequence, occurred_at=AT, items=ITEMS
    )


def _inputs(*events: OrderPlaced | OrderAmended) -> list[ConsumerRecord[bytes, bytes]]:
    return [
        consumer_record(EVENTS, offset, event.order_id.encode(), event.model_dump_json().encode())
        for offset, event in enumerate(events)
    ]


def _fulfilled(*events: OrderPlaced | OrderAmended) -> list[ConsumerRecord[bytes, bytes]]:
    return [
        consumer_record(FULFILLED, offset, event.order_id.encode(), _progress(event))
        for offset, event in enumerate(events)
    ]


def _progress(event: OrderPlaced | OrderAmended) -> bytes:
    progress = OrderProgress(event=event, status=OrderStatus.FULFILLED, total_cents=1_000)
    return progress.model_dump_json().encode()


def _dead_letter(
    source: ConsumerRecord[bytes, bytes], stage: str, error: Exception, value: bytes | None = None
) -> ConsumerRecord[bytes, bytes]:
    failure = provenance.Failure(error, 1, AT, AT)
    headers = provenance.failure_headers(source, stage, failure)
    body = source.value if value is None else value
    return consumer_record(f"dlq.{stage}", 0, source.key or b"", body or b"", headers=headers)


ORDER_A = [_event("ord-a", 1), _event("ord-a", 2)]
ORDER_B = [_event("ord-b", 1)]


def test_every_event_fulfilled_once_in_order_is_clean() -> None:
    events = [ORDER_A[0], ORDER_B[0], ORDER_A[1]]

    report = check(_inputs(*events), _fulfilled(*events), [])

    assert report.clean
    assert (report.events, report.fulfilled, report.accounted) == (3, 3, 3)
    assert (report.lost, report.duplicated, report.out_of_order, report.unknown) == (0, 0, 0, 0)
    assert report.statuses == {"fulfilled": 3}
    assert report.examples == {}


def test_event_neither_fulfilled_nor_dead_lettered_is_lost() -> None:
    report = check(_inputs(*ORDER_A, *ORDER_B), _fulfilled(ORDER_A[0], *ORDER_B), [])

    assert not report.clean
    assert report.lost == 1
    assert report.accounted == 2
    assert report.examples["lost"] == ["ord-a-2"]


def test_second_copy_of_an_output_is_a_duplicate() -> None:
    report = check(_inputs(*ORDER_B), _fulfilled(ORDER_B[0], ORDER_B[0]), [])

    assert not report.clean
    assert report.duplicated == 1
    assert report.lost == 0
    assert report.examples["duplicated"] == ["ord-b-1"]


def test_event_both_fulfilled_and_dead_lettered_is_a_duplicate() -> None:
    inputs = _inputs(*ORDER_B)
    dead = _dead_letter(inputs[0], "pay", TimeoutError("gave up"), _progress(ORDER_B[0]))

    report = check(inputs, _fulfilled(*ORDER_B), [dead])

    assert report.duplicated == 1
    assert not report.clean


def test_lower_sequence_after_a_higher_one_in_a_partition_is_out_of_order() -> None:
    report = check(_inputs(*ORDER_A), _fulfilled(ORDER_A[1], ORDER_A[0]), [])

    assert not report.clean
    assert report.out_of_order == 1
    assert (report.lost, report.duplicated) == (0, 0)
    assert report.examples["out_of_order"] == ["ord-a: 1 after 2"]


def test_fulfilled_records_are_ordered_by_offset_not_by_read_order() -> None:
    fulfilled = _fulfilled(*ORDER_A)

    report = check(_inputs(*ORDER_A), list(reversed(fulfilled)), [])

    assert report.out_of_order == 0
    assert report.clean


def test_undecodable_input_is_accounted_by_its_dead_letters_origin_headers() -> None:
    garbage = consumer_record(EVENTS, 7, b"bad-1", b"\x00\xffnot json", partition=2)
    inputs = [*_inputs(*ORDER_B), garbage]
    dead = _dead_letter(garbage, "validate", UndecodableRecord("not JSON"))

    report = check(inputs, _fulfilled(*ORDER_B), [dead])

    assert dict(dead.headers)[provenance.ORIGIN_OFFSET] == b"7"
    assert report.clean
    assert (report.events, report.dead_lettered, report.lost) == (2, 1, 0)
    assert report.dead_letter_reasons == {"validate: UndecodableRecord": 1}


def test_undecodable_dead_letter_pointing_elsewhere_leaves_the_input_lost() -> None:
    garbage = consumer_record(EVENTS, 7, b"bad-1", b"\x00\xffnot json")
    elsewhere = consumer_record(EVENTS, 8, b"bad-1", b"\x00\xffnot json")
    dead = _dead_letter(elsewhere, "validate", UndecodableRecord("not JSON"))

    report = check([garbage], [], [dead])

    assert (report.lost, report.unknown) == (1, 1)
    assert report.examples["lost"] == [f"{EVENTS}/0/7"]


def test_schema_invalid_input_is_accounted_by_its_event_id() -> None:
    invalid = ORDER_B[0].model_dump(mode="json") | {"order_id": "ord-c", "event_id": "ord-c-1"}
    invalid["items"][0]["quantity"] = 0
    inputs = _inputs(*ORDER_B)
    inputs.append(consumer_record(EVENTS, 1, b"ord-c", orjson.dumps(invalid)))
    dead = _dead_letter(inputs[1], "validate", UndecodableRecord("quantity must be > 0"))

    report = check(inputs, _fulfilled(*ORDER_B), [dead])

    assert report.clean
    assert report.dead_lettered == 1


def test_dead_letter_of_a_later_stage_is_accounted_by_its_progress_event() -> None:
    inputs = _inputs(*ORDER_A)
    dead = _dead_letter(inputs[1], "reserve", TimeoutError("inventory"), _progress(ORDER_A[1]))

    report = check(inputs, _fulfilled(ORDER_A[0]), [dead])

    assert report.clean
    assert report.dead_letter_reasons == {"reserve: TimeoutError": 1}


def test_output_without_an_input_is_unknown() -> None:
    stray = _event("ord-z", 1)

    report = check(_inputs(*ORDER_B), _fulfilled(ORDER_B[0], stray), [])

    assert not report.clean
    assert report.unknown == 1
    assert report.lost == 0


def test_input_missing_its_sequence_is_accounted_by_its_dead_letter() -> None:
    broken = consumer_record(EVENTS, 0, b"ord-c", b'{"event_id": "ord-c-1", "order_id": "ord-c"}')
    dead = _dead_letter(broken, "validate", UndecodableRecord("sequence missing"))

    report = check([broken], [], [dead])

    assert (report.lost, report.unknown) == (0, 0)


def _parked(event: OrderPlaced | OrderAmended, offset: int) -> ConsumerRecord[bytes, bytes]:
    headers = [(provenance.HOLD, b"orders.events/0/0")]
    body = event.model_dump_json().encode()
    return consumer_record(
        "validate.parked", offset, event.order_id.encode(), body, headers=headers
    )


def test_an_event_parked_behind_a_held_key_is_parked_not_lost() -> None:
    inputs = _inputs(*ORDER_A)
    dead = [_dead_letter(inputs[0], "validate", UndecodableRecord("held here"))]

    report = check(inputs, [], dead, parked=[_parked(ORDER_A[1], 0)])

    assert report.clean
    assert (report.dead_lettered, report.parked, report.lost) == (1, 1, 0)


def test_a_released_event_still_in_the_parked_topic_is_no_duplicate() -> None:
    inputs = _inputs(*ORDER_A)
    dead = [_dead_letter(inputs[0], "validate", UndecodableRecord("held here"))]

    report = check(inputs, _fulfilled(ORDER_A[1]), dead, parked=[_parked(ORDER_A[1], 0)])

    assert report.clean
    assert (report.parked, report.duplicated) == (0, 0)


def test_a_discard_marker_in_the_input_is_no_event() -> None:
    marker = consumer_record(
        EVENTS,
        5,
        b"ord-b",
        b"",
        headers=[(provenance.RELEASE_OF, b"orders.events/0/0"), (provenance.RELEASE_DISCARD, b"1")],
    )

    report = check([*_inputs(*ORDER_B), marker], _fulfilled(*ORDER_B), [])

    assert report.clean
    assert report.events == 1
