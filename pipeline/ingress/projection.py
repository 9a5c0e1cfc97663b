"""The order status projection behind ``GET /orders/{order_id}``.

The ingress consumes ``orders.fulfilled`` and every ``<stage>.dlq`` and keeps, per
order, the view of its newest event: the one with the highest ``sequence``, the later
record timestamp breaking ties (a dead letter replayed and then fulfilled keeps the
fulfilled view). The rule is :func:`supersedes`; it does not depend on the order in
which the topics are read, so the projection converges whatever the interleaving.

The store is a :class:`ProjectionStore`. It applies a batch of views together with the
highest offset of each topic-partition they came from, atomically, and on a partition
assignment tells the consumer where to resume (:mod:`pipeline.ingress.projector`): so a
restart reads nothing twice and nothing is skipped. The default is the database store
(:class:`pipeline.ingress.database.SqlProjectionStore`: SQLite embedded, PostgreSQL
shared by replicas, where each replica of the consumer group writes its share of the
partitions and every replica answers for every order). :class:`InMemoryProjectionStore`
holds the same in a dict, for tests: it knows no offsets after a restart, so the
consumer reads its partitions from the beginning again.
"""

from __future__ import annotations

from collections.abc import Collection, Iterable, Mapping, Sequence
from datetime import UTC, datetime
from typing import Literal, Protocol

import orjson
from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel, ConfigDict, Field, ValidationError

from pipeline.failures import provenance
from schemas import ORDER_EVENT_ADAPTER, OrderProgress, OrderStatus

DEAD_LETTERED = "dead_lettered"


class OrderView(BaseModel):
    """The latest known status of an order."""

    model_config = ConfigDict(frozen=True)

    order_id: str
    status: OrderStatus | Literal["dead_lettered"] = Field(
        description="The status of the order's newest event; dead_lettered when a stage "
        "gave up on it (an operator replays or discards it)."
    )
    event_id: str | None = Field(description="The newest event's id; None if unreadable.")
    sequence: int = Field(description="The newest event's per-order sequence (0: unknown).")
    kind: str | None = None
    reason: str | None = None
    stage: str | None = Field(default=None, description="The stage that dead-lettered it.")
    updated_at: datetime = Field(description="When that outcome was written to Kafka.")


Partition = tuple[str, int]
"""A topic-partition as ``(topic, partition)``."""


class ProjectionStore(Protocol):
    """Where the projection keeps one :class:`OrderView` per order, and how far it read."""

    async def get(self, order_id: str) -> OrderView | None:
        """The order's view, or ``None`` when no outcome is known yet."""
        ...

    async def apply(self, views: Sequence[OrderView], applied: Mapping[Partition, int]) -> None:
        """Keep each view unless the stored one :func:`supersedes` it, and record
        ``applied`` (partition -> highest offset applied; never moving back), all in one
        transaction."""
        ...

    async def applied_offsets(self, topics: Collection[str]) -> dict[Partition, int]:
        """The highest applied offset of each partition of ``topics`` the store knows."""
        ...


def supersedes(current: OrderView, candidate: OrderView) -> bool:
    """Whether ``current`` is newer than ``candidate`` and must be kept."""
    return (current.sequence, current.updated_at) > (candidate.sequence, candidate.updated_at)


def newest_per_order(views: Iterable[OrderView]) -> list[OrderView]:
    """One view per order: the one no other view of the batch :func:`supersedes`."""
    newest: dict[str, OrderView] = {}
    for view in views:
        current = newest.get(view.order_id)
        if current is None or not supersedes(current, view):
            newest[view.order_id] = view
    return list(newest.values())


class InMemoryProjectionStore:
    """Views and offsets in a dict of this process (tests; lost on restart)."""

    def __init__(self) -> None:
        self._views: dict[str, OrderView] = {}
        self._applied: dict[Partition, int] = {}

    async def get(self, order_id: str) -> OrderView | None:
        """The order's view, if any."""
        return self._views.get(order_id)

    async def apply(self, views: Sequence[OrderView], applied: Mapping[Partition, int]) -> None:
        """Keep the newer of each stored view and the given one; move offsets forward."""
        for view in views:
            current = self._views.get(view.order_id)
            if current is None or not supersedes(current, view):
                self._views[view.order_id] = view
        for partition, offset in applied.items():
            self._applied[partition] = max(offset, self._applied.get(partition, -1))

    async def applied_offsets(self, topics: Collection[str]) -> dict[Partition, int]:
        """The offsets applied since this process started."""
        return {tp: offset for tp, offset in self._applied.items() if tp[0] in topics}


def view_of_fulfilled(record: ConsumerRecord) -> OrderView | None:
    """The view an ``orders.fulfilled`` record stands for (``None`` if unreadable)."""
    try:
        progress = OrderProgress.model_validate_json(record.value or b"")
    except ValidationError:
        return None
    event = progress.event
    return OrderView(
        order_id=event.order_id,
        status=progress.status,
        event_id=event.event_id,
        sequence=event.sequence,
        kind=event.kind,
        reason=progress.reason,
        updated_at=_timestamp(record),
    )


def view_of_dead_letter(record: ConsumerRecord) -> OrderView | None:
    """The view a dead letter stands for: its event if readable, else its key alone."""
    headers = {name: value.decode(errors="replace") for name, value in record.headers}
    stage = headers.get(provenance.STAGE)
    reason = headers.get(provenance.ERROR_TYPE, "").rsplit(".", 1)[-1] or None
    event = _event_in(record.value or b"")
    if event is not None:
        order_id, event_id, sequence, kind = event
    elif record.key:
        order_id, event_id, sequence, kind = record.key.decode(errors="replace"), None, 0, None
    else:
        return None
    return OrderView(
        order_id=order_id,
        status=DEAD_LETTERED,
        event_id=event_id,
        sequence=sequence,
        kind=kind,
        reason=reason,
        stage=stage,
        updated_at=_timestamp(record),
    )


def _event_in(value: bytes) -> tuple[str, str, int, str] | None:
    """(order id, event id, sequence, kind) of a dead letter's event, if it decodes."""
    try:
        body = orjson.loads(value)
        payload = body.get("event", body) if isinstance(body, dict) else body
        event = ORDER_EVENT_ADAPTER.validate_python(payload)
    except (orjson.JSONDecodeError, ValidationError):
        return None
    return event.order_id, event.event_id, event.sequence, event.kind


def _timestamp(record: ConsumerRecord) -> datetime:
    return datetime.fromtimestamp(record.timestamp / 1000, UTC)
