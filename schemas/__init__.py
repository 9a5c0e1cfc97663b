"""Event models of the order pipeline."""

from schemas.orders import (
    ORDER_EVENT_ADAPTER,
    SCHEMA_VERSION,
    LineItem,
    OrderAmended,
    OrderCancelled,
    OrderEvent,
    OrderPlaced,
    order_total_cents,
)
from schemas.progress import OrderProgress, OrderStatus

__all__ = [
    "ORDER_EVENT_ADAPTER",
    "SCHEMA_VERSION",
    "LineItem",
    "OrderAmended",
    "OrderCancelled",
    "OrderEvent",
    "OrderPlaced",
    "OrderProgress",
    "OrderStatus",
    "order_total_cents",
]
