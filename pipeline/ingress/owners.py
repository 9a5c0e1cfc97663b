"""Which customer each order belongs to: what the API checks before it lets a caller
change or read an order.

The owner of an order is the ``customer_id`` of its ``OrderPlaced`` event, the first one
seen; later events of the order (amendments, cancellations) name no customer. The
ingress learns owners twice: at once when it accepts an ``OrderPlaced`` itself (so that
the customer's next request already finds the order), and from ``orders.events``, which
also carries orders placed by other producers and by other ingress replicas.

The store is the database (:class:`pipeline.ingress.database.SqlOrderOwners`), shared by
the replicas like the status projection, and fed the same way: the owner projection's
consumer group (:func:`owner_group`) spreads ``orders.events`` over the replicas, each
writes its partitions' owners and offsets in one transaction, and resumes from those
offsets (:mod:`pipeline.ingress.projector`). So every replica authorizes every order, a
restart reads nothing again, and the API's memory does not grow with the orders.
:class:`InMemoryOrderOwners` holds the same in a dict, for tests.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka.structs import ConsumerRecord
from fastapi import Request
from pydantic import ValidationError

from pipeline.ingress.projection import Partition
from pipeline.settings import IngressSettings
from schemas import ORDER_EVENT_ADAPTER, OrderPlaced


class OrderOwners(Protocol):
    """Order id -> the customer who placed it, and how far ``orders.events`` was read."""

    async def owner_of(self, order_id: str) -> str | None:
        """The customer who placed the order, or ``None`` when no placement is known."""
        ...

    async def claim(self, order_id: str, customer_id: str) -> None:
        """Record ``customer_id`` as the owner unless the order has one already."""
        ...

    async def apply(self, owners: Mapping[str, str], applied: Mapping[Partition, int]) -> None:
        """:meth:`claim` each order -> customer of ``owners`` and record ``applied``
        (partition -> highest offset read; never moving back), in one transaction."""
        ...

    async def applied_offsets(self, topics: Collection[str]) -> dict[Partition, int]:
        """The highest applied offset of each partition of ``topics`` the store knows."""
        ...


@dataclass(slots=True)
class OwnerBatch:
    """The owners a batch of ``orders.events`` records names (the first placement of each
    order), and the highest offset per partition."""

    owners: dict[str, str] = field(default_factory=dict)
    applied: dict[Partition, int] = field(default_factory=dict)


def read_placements(records: Iterable[Any]) -> OwnerBatch:
    """The batch's owners and offsets; records that place no order count as read."""
    batch = OwnerBatch()
    for record in records:
        partition = (record.topic, record.partition)
        batch.applied[partition] = max(record.offset, batch.applied.get(partition, -1))
        placement = placement_in(record)
        if placement is not None:
            batch.owners.setdefault(*placement)
    return batch


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


def owner_group(api: IngressSettings) -> str:
    """The owner projection's consumer group (prefixed like every group): the status
    projection's with ``-owners``, so that the two never share offsets."""
    return f"{api.projection_group}-owners"


def order_owners(request: Request) -> OrderOwners:
    """The app's owner store (a FastAPI dependency; override it in tests)."""
    store: OrderOwners = request.app.state.owners
    return store


class InMemoryOrderOwners:
    """Owners and offsets in a dict of this process (tests; lost on restart)."""

    def __init__(self) -> None:
        self._owners: dict[str, str] = {}
        self._applied: dict[Partition, int] = {}

    async def owner_of(self, order_id: str) -> str | None:
        """The order's owner, if known."""
        return self._owners.get(order_id)

    async def claim(self, order_id: str, customer_id: str) -> None:
        """Keep the first owner recorded for the order."""
        self._owners.setdefault(order_id, customer_id)

    async def apply(self, owners: Mapping[str, str], applied: Mapping[Partition, int]) -> None:
        """Keep the first owner of each order; move offsets forward."""
        for order_id, customer_id in owners.items():
            self._owners.setdefault(order_id, customer_id)
        for partition, offset in applied.items():
            self._applied[partition] = max(offset, self._applied.get(partition, -1))

    async def applied_offsets(self, topics: Collection[str]) -> dict[Partition, int]:
        """The offsets applied since this process started."""
        return {tp: offset for tp, offset in self._applied.items() if tp[0] in topics}
