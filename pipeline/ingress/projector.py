"""How the projections consume: resume where the store is, apply batches atomically.

Two projections build the API's state from Kafka, each with a consumer group of its
own that spreads its topics over the API's replicas, each replica applying its
partitions' records to the one shared store: the status projection (``orders.fulfilled``
and the dead-letter topics -> :class:`ProjectionStore`) and the owner projection
(``orders.events`` -> :class:`~pipeline.ingress.owners.OrderOwners`).
Where a partition resumes is the store's business, not Kafka's: on every assignment
:class:`ResumeFromStore` seeks each partition to the offset after the highest one the
store applied (the beginning when it knows none). The offsets are written in the same
transaction as the state they produced (:meth:`ProjectionStore.apply`,
:meth:`~pipeline.ingress.owners.OrderOwners.apply`), so a restart reads nothing twice and
skips nothing, whatever Kafka's committed offsets say. The consumer commits to Kafka as
well, after the database, only so that lag can be watched — and as the fallback start
when the database cannot be read at an assignment, which is safe because it never
passes the database's offsets.

A batch the store cannot take (:class:`~pipeline.errors.DatabaseUnavailable`) is not
lost: every partition is rewound to the batch's first record and read again after a
short pause, until the database answers.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Awaitable, Callable, Collection, Iterable
from dataclasses import dataclass, field
from typing import Any, Protocol

from aiokafka import ConsumerRebalanceListener
from aiokafka.errors import KafkaError

from pipeline.errors import DatabaseUnavailable
from pipeline.ingress.owners import OrderOwners, read_placements
from pipeline.ingress.projection import (
    OrderView,
    Partition,
    ProjectionStore,
    view_of_dead_letter,
    view_of_fulfilled,
)

log = logging.getLogger(__name__)

STATUS_PROJECTION = "projection"
OWNER_PROJECTION = "owner projection"
"""How the two consumers name themselves in logs."""

RETRY_PAUSE_S = 1.0
"""Pause before a batch the database refused is read again (well within
``max.poll.interval.ms``: the consumer stays in its group meanwhile)."""


@dataclass(slots=True)
class ProjectionBatch:
    """The views a batch of records stands for, and the highest offset per partition."""

    views: list[OrderView] = field(default_factory=list)
    applied: dict[Partition, int] = field(default_factory=dict)


def read_batch(records: Iterable[Any], outcome_topic: str) -> ProjectionBatch:
    """The batch's views (unreadable records skipped, with a warning) and offsets."""
    batch = ProjectionBatch()
    for record in records:
        partition = (record.topic, record.partition)
        batch.applied[partition] = max(record.offset, batch.applied.get(partition, -1))
        outcome = record.topic == outcome_topic
        view = view_of_fulfilled(record) if outcome else view_of_dead_letter(record)
        if view is None:
            log.warning(
                "unreadable record skipped by the projection: %s[%d]@%d",
                record.topic,
                record.partition,
                record.offset,
            )
            continue
        batch.views.append(view)
    return batch


async def project(message: Any, store: ProjectionStore, outcome_topic: str) -> None:
    """Apply one consumed batch (a FastStream ``KafkaMessage``) to ``store``."""
    batch = read_batch(message.raw_message, outcome_topic)
    await _apply_or_rewind(
        message,
        lambda: store.apply(batch.views, batch.applied),
        STATUS_PROJECTION,
        len(batch.applied),
    )


async def project_owners(message: Any, owners: OrderOwners) -> None:
    """Apply one consumed batch of ``orders.events`` (a FastStream ``KafkaMessage``) to
    ``owners``."""
    batch = read_placements(message.raw_message)
    await _apply_or_rewind(
        message,
        lambda: owners.apply(batch.owners, batch.applied),
        OWNER_PROJECTION,
        len(batch.applied),
    )


async def _apply_or_rewind(
    message: Any, apply: Callable[[], Awaitable[None]], consumer: str, partitions: int
) -> None:
    """Run ``apply``, then commit to Kafka; when the database is unavailable, rewind the
    batch's partitions instead, to be read again after a pause."""
    try:
        await apply()
    except DatabaseUnavailable as exc:
        log.warning(
            "%s paused, the database is unavailable (%s); %d partitions rewound",
            consumer,
            exc,
            partitions,
        )
        await message.nack()  # seeks each partition back to the batch's first record
        await asyncio.sleep(RETRY_PAUSE_S)
        return
    try:
        await message.ack()
    except KafkaError as exc:
        # The database holds the real position; a commit lost in a rebalance only
        # leaves the lag metric behind until the next batch.
        log.debug("%s offsets not committed to Kafka: %r", consumer, exc)


class AppliedOffsets(Protocol):
    """A store that knows how far its consumer read each partition."""

    async def applied_offsets(self, topics: Collection[str]) -> dict[Partition, int]:
        """The highest applied offset of each partition of ``topics`` the store knows."""
        ...


class ResumeFromStore(ConsumerRebalanceListener):  # type: ignore[misc]
    """Seeks every assigned partition to where the store left it.

    ``consumer`` returns the subscriber's consumer (it exists only once started);
    ``store`` the store in use; ``name`` is how logs call the consumer. ``assigned`` is
    what this replica owns now.
    """

    def __init__(
        self,
        consumer: Callable[[], Any],
        store: Callable[[], AppliedOffsets],
        name: str = STATUS_PROJECTION,
    ) -> None:
        self._consumer = consumer
        self._store = store
        self._name = name
        self.assigned: frozenset[Partition] = frozenset()

    async def on_partitions_revoked(self, revoked: Any) -> None:
        """Nothing to hand over: every applied batch is already in the store."""
        self.assigned = frozenset()

    async def on_partitions_assigned(self, assigned: Any) -> None:
        """Seek each partition to the offset after the store's, or to its beginning."""
        consumer = self._consumer()
        partitions = {(tp.topic, tp.partition): tp for tp in assigned}
        try:
            stored = await self._store().applied_offsets({topic for topic, _ in partitions})
        except DatabaseUnavailable as exc:
            log.warning(
                "%s resumes from Kafka's committed offsets, the database is unavailable (%s)",
                self._name,
                exc,
            )
            self.assigned = frozenset(partitions)
            return
        unknown = []
        for partition, tp in partitions.items():
            if partition in stored:
                consumer.seek(tp, stored[partition] + 1)
            else:
                unknown.append(tp)
        if unknown:
            await consumer.seek_to_beginning(*unknown)
        self.assigned = frozenset(partitions)
        log.info(
            "%s resumes %d partitions from the store, %d from the beginning",
            self._name,
            len(partitions) - len(unknown),
            len(unknown),
        )
