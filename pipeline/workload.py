"""Realistic order lifecycles for ``orders.events``: placed, sometimes amended or
cancelled, interleaved across orders, plus a few records that must be dead-lettered."""

from __future__ import annotations

import random
import secrets
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime

from pydantic import BaseModel

from schemas import LineItem, OrderAmended, OrderCancelled, OrderPlaced

CURRENCIES = ("EUR", "EUR", "EUR", "USD", "GBP")


@dataclass(frozen=True, slots=True)
class WorkloadRecord:
    """One record to produce: its key and value bytes."""

    key: bytes
    value: bytes


def _items(rng: random.Random) -> tuple[LineItem, ...]:
    return tuple(
        LineItem(
            sku=f"sku-{rng.randrange(500):03d}",
            quantity=rng.randint(1, 5),
            unit_price_cents=rng.randrange(199, 20_000),
        )
        for _ in range(rng.randint(1, 4))
    )


def order_lifecycle(order_id: str, rng: random.Random) -> list[BaseModel]:
    """The events of one order, in sequence order."""
    now = datetime.now(UTC)
    events: list[BaseModel] = [
        OrderPlaced(
            event_id=f"{order_id}-1",
            order_id=order_id,
            sequence=1,
            occurred_at=now,
            customer_id=f"cust-{rng.randrange(10_000)}",
            currency=rng.choice(CURRENCIES),
            items=_items(rng),
        )
    ]
    for _ in range(rng.choices((0, 1, 2), weights=(6, 3, 1))[0]):
        sequence = len(events) + 1
        events.append(
            OrderAmended(
                event_id=f"{order_id}-{sequence}",
                order_id=order_id,
                sequence=sequence,
                occurred_at=now,
                items=_items(rng),
            )
        )
    if rng.random() < 0.1:
        sequence = len(events) + 1
        events.append(
            OrderCancelled(
                event_id=f"{order_id}-{sequence}",
                order_id=order_id,
                sequence=sequence,
                occurred_at=now,
            )
        )
    return events


def invalid_records(order_id: str) -> list[WorkloadRecord]:
    """Bytes that are not JSON, and JSON that breaks the schema (quantity 0)."""
    key = order_id.encode()
    schema_invalid = (
        b'{"kind":"OrderPlaced","event_id":"' + key + b'-invalid","order_id":"' + key + b'",'
        b'"sequence":1,"occurred_at":"2026-01-01T00:00:00Z","customer_id":"c",'
        b'"currency":"EUR","items":[{"sku":"x","quantity":0,"unit_price_cents":1}]}'
    )
    return [WorkloadRecord(key, b"\x00\xffnot json"), WorkloadRecord(key + b"-s", schema_invalid)]


def generate(
    orders: int,
    *,
    seed: int = 7,
    invalid_every: int = 500,
    window: int = 64,
    run_id: str | None = None,
) -> Iterator[WorkloadRecord]:
    """Events of ``orders`` orders, interleaved (each order's events stay in sequence).

    Every ``invalid_every`` orders (0: never) a pair of invalid records is mixed in.
    Order ids carry ``run_id`` (random by default) so runs never collide.
    """
    rng = random.Random(seed)
    active: list[list[BaseModel]] = []
    next_order = 0
    run_id = run_id or secrets.token_hex(3)
    while next_order < orders or active:
        while next_order < orders and len(active) < window:
            order_id = f"ord-{run_id}-{next_order}"
            active.append(order_lifecycle(order_id, rng))
            next_order += 1
            if invalid_every and next_order % invalid_every == 0:
                yield from invalid_records(f"bad-{run_id}-{next_order}")
        index = rng.randrange(len(active))
        event = active[index].pop(0)
        if not active[index]:
            active[index] = active[-1]
            active.pop()
        order_id = event.order_id  # type: ignore[attr-defined]
        yield WorkloadRecord(order_id.encode(), event.__pydantic_serializer__.to_json(event))
