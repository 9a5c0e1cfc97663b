"""The order status projection behind ``GET /orders/{order_id}``.

The ingress consumes ``orders.fulfilled`` and every ``<stage>.dlq`` and keeps, per
order, the view of its newest event: the one with the highest ``sequence``, the later
record timestamp breaking ties (a dead letter replayed and then fulfilled keeps the
fulfilled view). The rule is :func:`supersedes`; it does not depend on the order in
which the topics are read, so the projection converges whatever the interleaving.

The store is a :class:`ProjectionStore`. :class:`InMemoryProjectionStore` (the default)
lives in the process: it is rebuilt from the earliest offsets on every start (the
projection never commits for a store that is not ``durable``), and with several
ingress replicas each one would hold only the partitions the group gave it — so it
suits one replica, development and tests.

Backing it with a real database, for several replicas and restarts without a replay:

1. One table keyed by order id::

       CREATE TABLE order_status (
           order_id   text PRIMARY KEY,
           status     text NOT NULL,
           event_id   text,
           sequence   integer NOT NULL,
           kind       text,
           reason     text,
           stage      text,
           updated_at timestamptz NOT NULL
       );

2. ``apply`` is one conditional upsert, so concurrent replicas and redelivered
   records cannot move a view backwards::

       INSERT INTO order_status AS cur VALUES (...)
       ON CONFLICT (order_id) DO UPDATE SET ... = excluded....
       WHERE (excluded.sequence, excluded.updated_at) >= (cur.sequence, cur.updated_at);

3. ``get`` is a primary-key lookup returning :class:`OrderView` or ``None``.
4. ``durable = True``: the projection then commits its offsets after each applied
   batch, and every replica of the ``ingress-projection`` group writes its share of
   the partitions into the one table.
5. Build the store in the app factory and put it on ``app.state.projection`` (or
   override the :func:`pipeline.ingress.app.projection_store` dependency).
"""

from __future__ import annotations

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


class ProjectionStore(Protocol):
    """Where the projection keeps one :class:`OrderView` per order."""

    @property
    def durable(self) -> bool:
        """Whether views survive a restart (then the consumer commits its offsets)."""
        ...

    async def get(self, order_id: str) -> OrderView | None:
        """The order's view, or ``None`` when no outcome is known yet."""
        ...

    async def apply(self, view: OrderView) -> None:
        """Keep ``view`` unless the stored one :func:`supersedes` it (atomically)."""
        ...


def supersedes(current: OrderView, candidate: OrderView) -> bool:
    """Whether ``current`` is newer than ``candidate`` and must be kept."""
    return (current.sequence, current.updated_at) > (candidate.sequence, candidate.updated_at)


class InMemoryProjectionStore:
    """The default store: a dict in this process."""

    durable = False

    def __init__(self) -> None:
        self._views: dict[str, OrderView] = {}

    async def get(self, order_id: str) -> OrderView | None:
        """The order's view, if any."""
        return self._views.get(order_id)

    async def apply(self, view: OrderView) -> None:
        """Keep the newer of the stored view and ``view``."""
        current = self._views.get(view.order_id)
        if current is None or not supersedes(current, view):
            self._views[view.order_id] = view


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
