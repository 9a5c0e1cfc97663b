"""Events of the order aggregate as they enter the pipeline on ``orders.events``.

Every event carries an ``event_id`` (unique), the ``order_id`` it belongs to (the Kafka
key) and a per-order ``sequence`` that starts at 1 and grows by one per event.
"""

from __future__ import annotations

from datetime import datetime
from typing import Annotated, Literal

from pydantic import BaseModel, ConfigDict, Field, TypeAdapter

SCHEMA_VERSION = 1


class LineItem(BaseModel):
    """One product line of an order."""

    model_config = ConfigDict(frozen=True)

    sku: str = Field(min_length=1, max_length=64)
    quantity: int = Field(gt=0, le=1_000)
    unit_price_cents: int = Field(ge=0)


class _OrderEventBase(BaseModel):
    model_config = ConfigDict(frozen=True)

    schema_version: int = SCHEMA_VERSION
    event_id: str = Field(min_length=1, max_length=64)
    order_id: str = Field(min_length=1, max_length=64)
    sequence: int = Field(ge=1)
    occurred_at: datetime


class OrderPlaced(_OrderEventBase):
    """A customer placed an order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "schema_version": 1,
                    "event_id": "evt-0001",
                    "order_id": "ord-42",
                    "sequence": 1,
                    "occurred_at": "2025-01-31T12:00:00Z",
                    "kind": "OrderPlaced",
                    "customer_id": "cus-7",
                    "currency": "EUR",
                    "items": [{"sku": "book-1", "quantity": 2, "unit_price_cents": 1_250}],
                }
            ]
        }
    )
    kind: Literal["OrderPlaced"] = "OrderPlaced"
    customer_id: str = Field(min_length=1, max_length=64)
    currency: str = Field(pattern=r"^[A-Z]{3}$")
    items: tuple[LineItem, ...] = Field(min_length=1, max_length=100)


class OrderAmended(_OrderEventBase):
    """The customer changed the lines of an open order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "schema_version": 1,
                    "event_id": "evt-0002",
                    "order_id": "ord-42",
                    "sequence": 2,
                    "occurred_at": "2025-01-31T12:05:00Z",
                    "kind": "OrderAmended",
                    "items": [{"sku": "book-1", "quantity": 3, "unit_price_cents": 1_250}],
                }
            ]
        }
    )
    kind: Literal["OrderAmended"] = "OrderAmended"
    items: tuple[LineItem, ...] = Field(min_length=1, max_length=100)


class OrderCancelled(_OrderEventBase):
    """The customer cancelled the order."""

    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "schema_version": 1,
                    "event_id": "evt-0003",
                    "order_id": "ord-42",
                    "sequence": 3,
                    "occurred_at": "2025-01-31T12:10:00Z",
                    "kind": "OrderCancelled",
                    "reason": "customer request",
                }
            ]
        }
    )
    kind: Literal["OrderCancelled"] = "OrderCancelled"
    reason: str = Field(default="customer request", max_length=200)


OrderEvent = Annotated[OrderPlaced | OrderAmended | OrderCancelled, Field(discriminator="kind")]
"""Any event of ``orders.events``, told apart by ``kind``."""

ORDER_EVENT_ADAPTER: TypeAdapter[OrderPlaced | OrderAmended | OrderCancelled] = TypeAdapter(
    OrderEvent
)


def order_total_cents(items: tuple[LineItem, ...]) -> int:
    """Sum of the lines of an order, in cents."""
    return sum(item.quantity * item.unit_price_cents for item in items)
