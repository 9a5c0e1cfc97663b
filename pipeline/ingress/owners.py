"""Which customer each order belongs to: what the API checks before it lets a caller
change or read an order.

The owner of an order is the ``customer_id`` of its ``OrderPlaced`` event, the first one
seen; later events of the order (amendments, cancellations) name no customer. The
ingress learns owners twice: at once when it accepts an ``OrderPlaced`` itself (so that
the customer's next request already finds the order), and from ``orders.events``, which
also carries orders placed by other producers and by other ingress replicas.

:class:`InMemoryOrderOwners` (the default) is rebuilt on every start: each replica reads
``orders.events`` from its earliest offset, every partition, without a consumer group. It
holds one entry per order within the topic's retention; a table keyed by order id
(insert-if-absent) is the store for larger volumes.
"""

from __future__ import annotations

from typing import Protocol

from aiokafka.structs import ConsumerRecord
from fastapi import Request
from pydantic import ValidationError

from schemas import ORDER_EVENT_ADAPTER, OrderPlaced


class OrderOwners(Protocol):
    """Order id -> the customer who placed it."""

    async def owner_of(self, order_id: str) -> str | None:
        """The customer who placed the order, or ``None`` when no placement is known."""
        ...

    async def claim(self, order_id: str, customer_id: str) -> None:
        """Record ``customer_id`` as the owner unless the order has one already."""
        ...


class InMemoryOrderOwners:
    """The default store: a dict in this process."""

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}

    async def owner_of(self, order_id: str) -> str | None:
        """The order's owner, if known."""
        return self._owners.get(order_id)

    async def claim(self, order_id: str, customer_id: str) -> None:
        """Keep the first owner recorded for the order."""
        self._owners.setdefault(order_id, customer_id)


def order_owners(request: Request) -> OrderOwners:
    """The app's owner store (a FastAPI dependency; override it in tests)."""
    store: OrderOwners = request.app.state.owners
    return store


def placement_in(record: ConsumerRecord) -> tuple[str, str] | None:
    """(order id, customer id) when ``record`` is a valid ``OrderPlaced`` event; anything
    else names no owner (the validate stage dead-letters what does not fit the schema)."""
    try:
        event = ORDER_EVENT_ADAPTER.validate_json(record.value or b"")
    except ValidationError:
        return None
    if isinstance(event, OrderPlaced):
        return event.order_id, event.customer_id
    return None
