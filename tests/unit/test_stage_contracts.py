"""Each stage's contract on FastStream's in-memory broker: input -> output, bad -> DLQ.

TestKafkaBroker has no offsets or concurrency; the real behaviour is in tests/integration.
"""

from __future__ import annotations

from datetime import UTC, datetime
from typing import Any

import pytest
from faststream.kafka import TestKafkaBroker
from faststream.kafka.annotations import KafkaMessage

from pipeline.app import PipelineApp, create_app
from pipeline.failures import provenance
from pipeline.kafka.topology import STAGE_TOPICS
from pipeline.settings import Settings
from pipeline.stages.services import PaymentResult, Reservation, Services
from pipeline.testing import BrokerSink
from schemas import LineItem, OrderCancelled, OrderPlaced, OrderProgress, OrderStatus

PLACED = OrderPlaced(
    event_id="o1-1",
    order_id="o1",
    sequence=1,
    occurred_at=datetime(2026, 1, 1, tzinfo=UTC),
    customer_id="c1",
    currency="EUR",
    items=(LineItem(sku="sku-1", quantity=2, unit_price_cents=1_000),),
)


class FakeInventory:
    """Out of stock for orders listed in ``missing``."""

    def __init__(self, missing: frozenset[str] = frozenset()) -> None:
        self.missing = missing
        self.released: list[str] = []

    async def reserve(self, order_id: str, items: tuple[LineItem, ...]) -> Reservation:
        if order_id in self.missing:
            return Reservation(None, out_of_stock_sku=items[0].sku)
        return Reservation(f"r-{order_id}")

    async def release(self, order_id: str) -> None:
        self.released.append(order_id)


class FakePayment:
    """Declines orders listed in ``declined``."""

    def __init__(self, declined: frozenset[str] = frozenset()) -> None:
        self.declined = declined
        self.charges: list[tuple[str, int]] = []

    async def charge(self, order_id: str, amount_cents: int, idempotency_key: str) -> PaymentResult:
        self.charges.append((order_id, amount_cents))
        if order_id in self.declined:
            return PaymentResult(None, declined_reason="card declined")
        return PaymentResult(f"p-{idempotency_key}")

    async def refund(self, order_id: str, idempotency_key: str) -> None:
        return None


def _stage_app(stage: str, services: Services) -> PipelineApp:
    return create_app(Settings(), [stage], services=services, sink_factory=BrokerSink, http=False)


async def _run(stage: str, services: Services, value: bytes) -> list[Any]:
    """Publish ``value`` to the stage's input; return the records on its output and DLQ."""
    pipeline = _stage_app(stage, services)
    source, sink = STAGE_TOPICS[stage]
    seen: list[Any] = []

    @pipeline.broker.subscriber(sink, f"{stage}.dlq", group_id="contract-test")
    async def capture(message: KafkaMessage) -> None:
        seen.append(message.raw_message)

    async with TestKafkaBroker(pipeline.broker) as broker:
        await broker.publish(value, source, key=b"o1")
        await pipeline.runtimes[0].engine.wait_idle()
    return seen


def _progress(record: Any) -> OrderProgress:
    return OrderProgress.model_validate_json(record.value)


def _services(**kwargs: Any) -> Services:
    return Services(
        inventory=kwargs.get("inventory", FakeInventory()),
        payment=kwargs.get("payment", FakePayment()),
    )


async def test_validate_turns_an_order_event_into_a_validated_order_with_its_key() -> None:
    [record] = await _run("validate", _services(), PLACED.model_dump_json().encode())
    assert record.topic == "orders.validated"
    assert record.key == b"o1"
    progress = _progress(record)
    assert progress.status is OrderStatus.VALIDATED
    assert progress.total_cents == 2_000


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        (b"\x00\xff garbage", "Invalid JSON"),
        (PLACED.model_dump_json().replace('"quantity":2', '"quantity":0').encode(), "quantity"),
    ],
)
async def test_validate_dead_letters_undecodable_input_with_its_reason(
    value: bytes, reason: str
) -> None:
    [record] = await _run("validate", _services(), value)
    headers = dict(record.headers)
    assert record.topic == "validate.dlq"
    assert record.value == value
    assert headers[provenance.ERROR_TYPE].endswith(b"UndecodableRecord")
    assert reason.encode() in headers[provenance.ERROR_MESSAGE]
    assert headers[provenance.ORIGIN_TOPIC] == b"orders.events"
    assert headers[provenance.STAGE] == b"validate"


async def test_reserve_reports_out_of_stock_as_an_outcome_not_an_error() -> None:
    validated = OrderProgress(event=PLACED, status=OrderStatus.VALIDATED, total_cents=2_000)
    services = _services(inventory=FakeInventory(missing=frozenset({"o1"})))
    [record] = await _run("reserve", services, validated.model_dump_json().encode())
    assert record.topic == "orders.reserved"
    assert _progress(record).status is OrderStatus.OUT_OF_STOCK


async def test_reserve_releases_stock_of_a_cancelled_order() -> None:
    cancelled = OrderCancelled(
        event_id="o1-2", order_id="o1", sequence=2, occurred_at=PLACED.occurred_at
    )
    inventory = FakeInventory()
    validated = OrderProgress(event=cancelled, status=OrderStatus.VALIDATED)
    [record] = await _run(
        "reserve", _services(inventory=inventory), validated.model_dump_json().encode()
    )
    assert _progress(record).status is OrderStatus.CANCELLED
    assert inventory.released == ["o1"]


async def test_pay_charges_the_order_total_through_the_injected_gateway() -> None:
    payment = FakePayment()
    reserved = OrderProgress(event=PLACED, status=OrderStatus.RESERVED, total_cents=2_000)
    [record] = await _run("pay", _services(payment=payment), reserved.model_dump_json().encode())
    assert payment.charges == [("o1", 2_000)]
    assert _progress(record).status is OrderStatus.PAID


async def test_pay_reports_a_decline_as_an_outcome() -> None:
    payment = FakePayment(declined=frozenset({"o1"}))
    reserved = OrderProgress(event=PLACED, status=OrderStatus.RESERVED, total_cents=2_000)
    [record] = await _run("pay", _services(payment=payment), reserved.model_dump_json().encode())
    assert _progress(record).status is OrderStatus.DECLINED


async def test_fulfil_invoices_and_ships_a_paid_order() -> None:
    paid = OrderProgress(event=PLACED, status=OrderStatus.PAID, total_cents=2_000)
    [record] = await _run("fulfil", _services(), paid.model_dump_json().encode())
    progress = _progress(record)
    assert record.topic == "orders.fulfilled"
    assert progress.status is OrderStatus.FULFILLED
    assert progress.invoice_id == "inv-o1-1"
