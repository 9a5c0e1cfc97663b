"""Exactly-once hops with one transactional producer per stage process (KIP-447).

Every output of the process and the input offsets of every partition it owns commit in
one transaction per interval. Zombies are fenced by the consumer group, not by
transactional ids: the offsets travel in ``TxnOffsetCommit`` v3 with the member's
generation, so a member the group has moved on from can only abort
(:mod:`pipeline.kafka.group_fencing`). A new owner of a partition waits until no open
transaction holds offsets for it (``OffsetFetch`` with ``require_stable``) and processes
nothing below the offsets it then finds.

The transactional id is the stage's group and the process's instance id. With a stable
instance id (a StatefulSet pod's name) a restarted process fences its predecessor's
open transaction at once; without one, a killed process's transaction is aborted by the
broker after ``transaction_timeout_ms``, and downstream read_committed consumers wait
that long for the partitions it wrote to.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import IncompatibleBrokerVersion, KafkaError
from aiokafka.structs import TopicPartition

from pipeline.failures.provenance import Headers
from pipeline.kafka.group_fencing import (
    ConsumerGroupMetadata,
    GroupFencedOffsets,
    fetch_stable_offsets,
)
from pipeline.kafka.internals import TRANSACTION_STATE_ERRORS
from pipeline.runtime.batching import BatchingSink
from pipeline.runtime.core.receipts import Receipt
from pipeline.runtime.ports import Delivered
from pipeline.settings import TransactionScheme

log = logging.getLogger(__name__)


async def transaction_scheme(
    producer: AIOKafkaProducer, wanted: TransactionScheme
) -> TransactionScheme:
    """``per_process`` where the broker fences by group generation (KIP-447: Kafka 2.5
    and later), else ``per_partition``; an explicit choice is kept, if the broker can."""
    if wanted == "per_partition":
        return wanted
    try:
        # OffsetFetch v7 came with TxnOffsetCommit v3; asking for no partitions costs
        # one round trip to the coordinator of an empty group.
        await fetch_stable_offsets(producer.client, "pipeline-version-probe", [], 10)
    except (IncompatibleBrokerVersion, NotImplementedError):
        if wanted == "per_process":
            raise
        log.warning("the broker predates KIP-447: one transactional producer per partition")
        return "per_partition"
    return "per_process"


class ProcessTransactions:
    """The stage's sink and committer in ``exactly_once`` mode: one producer, one open
    transaction spanning every owned partition."""

    spans_partitions = True
    """A commit covers every owned partition (the engine drains them all first)."""

    def __init__(
        self,
        producer: AIOKafkaProducer,
        group_id: str,
        partition_counts: dict[str, int],
        group_metadata: Callable[[], ConsumerGroupMetadata],
        stable_timeout_s: float,
    ) -> None:
        self._producer = producer
        self._group_id = group_id
        self._metadata = group_metadata
        self._stable_timeout_s = stable_timeout_s
        self._offsets = GroupFencedOffsets(producer)
        self._batches = BatchingSink(producer, partition_counts)
        self._owned: set[int] = set()
        self._dirty = False
        self._started = False
        self.on_error: Callable[[BaseException], None] | None = None

    @property
    def partitions(self) -> set[int]:
        """Input partition numbers whose outputs go into the open transaction."""
        return set(self._owned)

    async def start(self) -> None:
        """Start the producer (fencing an earlier process with the same id) and open
        the first transaction."""
        await self._producer.start()
        await self._producer.begin_transaction()
        self._batches.on_error = self._failed
        self._batches.start()
        self._started = True

    def _failed(self, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(exc)

    # -- RecordSink ------------------------------------------------------------------

    def bind(self, on_delivered: Delivered) -> None:
        """Who hears about deliveries (the engine)."""
        self._batches.bind(on_delivered)

    def append(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers, receipt: Receipt
    ) -> None:
        """Queue a record in the open transaction."""
        if receipt.partition_number not in self._owned:
            return  # finished after its partition was given back: the next owner redoes it
        self._dirty = True
        self._batches.append(topic, key, value, headers, receipt)

    # -- partitions come and go ------------------------------------------------------

    async def assign(self, partitions: Iterable[TopicPartition]) -> Mapping[TopicPartition, int]:
        """Own ``partitions`` once no transaction of an earlier owner holds offsets for
        them; returns their committed offsets (nothing below them is processed)."""
        fresh = list(partitions)
        stable = await fetch_stable_offsets(
            self._producer.client, self._group_id, fresh, self._stable_timeout_s
        )
        self._owned.update(tp.partition for tp in fresh)
        return stable

    async def release(self, numbers: Iterable[int]) -> None:
        """Stop taking outputs of partitions given back (their last commit is done)."""
        self._owned.difference_update(numbers)

    async def close(self) -> None:
        """Abort what is still open and stop the producer."""
        self._owned.clear()
        self._batches.gate.clear()  # nothing more goes into the open transaction
        await self._batches.discard()
        if self._started:
            try:
                await self._producer.abort_transaction()
            except (KafkaError, *TRANSACTION_STATE_ERRORS) as exc:
                # Fenced or failed already: the broker aborts it, or a successor does.
                log.debug("abort on close: %r", exc)
        await self._producer.stop()

    # -- OffsetCommitter -------------------------------------------------------------

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the open transaction with ``offsets``."""
        await (await self.begin_commit(offsets, None))

    async def begin_commit(
        self, offsets: dict[TopicPartition, int], numbers: Iterable[int] | None
    ) -> asyncio.Future[Any]:
        """Close the open transaction (``numbers`` is ignored: it spans every owned
        partition) and return its commit, under way.

        Once this returns, records appended go into the next transaction (they wait in
        their batches until it begins). The returned future raises when the transaction
        cannot commit (fenced by the group, timed out).
        """
        if not self._dirty and not offsets:
            done: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
            done.set_result(None)
            return done
        await self._batches.flush()
        self._batches.gate.clear()
        self._dirty = False
        return asyncio.ensure_future(self._commit(offsets))

    async def _commit(self, offsets: dict[TopicPartition, int]) -> None:
        try:
            if offsets:
                await self._offsets.send(offsets, self._metadata())
            await self._producer.commit_transaction()
            await self._producer.begin_transaction()
        finally:
            self._batches.gate.set()
