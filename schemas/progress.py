"""The record that travels between stages: the original event plus each stage's outcome.

Business outcomes (rejected, out of stock, declined, cancelled) are values of
:class:`OrderStatus`, not errors: they flow on to ``orders.fulfilled`` like any other.
"""

from __future__ import annotations

from enum import StrEnum

from pydantic import BaseModel, ConfigDict

from schemas.orders import SCHEMA_VERSION, OrderAmended, OrderCancelled, OrderEvent, OrderPlaced


class OrderStatus(StrEnum):
    """Where an order event stands after the last stage that handled it."""

    VALIDATED = "validated"
    REJECTED = "rejected"
    RESERVED = "reserved"
    OUT_OF_STOCK = "out_of_stock"
    PAID = "paid"
    DECLINED = "declined"
    CANCELLED = "cancelled"
    FULFILLED = "fulfilled"


class OrderProgress(BaseModel):
    """An order event on its way through the stages."""

    model_config = ConfigDict(
        frozen=True,
        json_schema_extra={
            "examples": [
                {
                    "schema_version": 1,
                    "event": {
                        "schema_version": 1,
                        "event_id": "evt-0001",
                        "order_id": "ord-42",
                        "sequence": 1,
                        "occurred_at": "2025-01-31T12:00:00Z",
                        "kind": "OrderPlaced",
                        "customer_id": "cus-7",
                        "currency": "EUR",
                        "items": [{"sku": "book-1", "quantity": 2, "unit_price_cents": 1_250}],
                    },
                    "status": "fulfilled",
                    "total_cents": 2_500,
                    "reservation_id": "rsv-ord-42",
                    "payment_id": "pay-evt-0001",
                    "invoice_id": "inv-ord-42",
                    "shipment_id": "shp-ord-42",
                }
            ]
        },
    )

    schema_version: int = SCHEMA_VERSION
    event: OrderEvent
    status: OrderStatus
    total_cents: int = 0
    reason: str | None = None
    reservation_id: str | None = None
    payment_id: str | None = None
    invoice_id: str | None = None
    shipment_id: str | None = None

    def advance(self, status: OrderStatus, **changes: object) -> OrderProgress:
        """A copy moved to ``status`` with ``changes`` applied."""
        return self.model_copy(update={"status": status, **changes})


__all__ = ["OrderAmended", "OrderCancelled", "OrderPlaced", "OrderProgress", "OrderStatus"]
