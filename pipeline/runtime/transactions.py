"""Exactly-once hops on a broker without KIP-447: one transactional producer per input
partition.

Brokers since Kafka 2.5 fence zombies by group generation, and the stage uses one
producer per process there (:mod:`pipeline.runtime.process_transactions`); this scheme
is what remains for older brokers, or when chosen with
``PIPELINE_STAGE_TRANSACTIONS=per_partition``.

A stage in ``exactly_once`` mode sends the outputs of input partition *p* (and of retry
partition *p*: the range assignor gives both to one member) through a producer whose
transactional id is ``<group>-<p>``, and commits the input offsets of *p* in that
producer's transaction. When partition *p* moves to another member, the new owner's
producer starts with the same transactional id, which fences the old one (a zombie that
was only paused, not dead) and aborts its open transaction. aiokafka's
``send_offsets_to_transaction`` takes a group id, not the group's generation, so this
pre-KIP-447 choice of ids is what fences zombies; it costs a producer per owned
partition.

The engine decides *when* to commit (a barrier: intake stops, in-flight records finish);
this module only owns the producers and their transactions.
"""

from __future__ import annotations

import asyncio
import logging
from collections import defaultdict
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from pipeline.failures.provenance import Headers
from pipeline.kafka.internals import TRANSACTION_STATE_ERRORS
from pipeline.runtime.batching import BatchingSink
from pipeline.runtime.core.receipts import Receipt
from pipeline.runtime.ports import Delivered

log = logging.getLogger(__name__)

ProducerFactory = Callable[[str], AIOKafkaProducer]
"""Builds an (unstarted) producer for a transactional id."""


class _Slot:
    """One input partition's producer, its batches and its open transaction."""

    __slots__ = ("batches", "dirty", "producer")

    def __init__(self, producer: AIOKafkaProducer, batches: BatchingSink) -> None:
        self.producer = producer
        self.batches = batches
        self.dirty = False


class PartitionTransactions:
    """The stage's sink and committer in ``exactly_once`` mode, a producer per input
    partition."""

    spans_partitions = False
    """Each input partition has its own transaction (a commit may cover a subset)."""

    def __init__(
        self,
        make_producer: ProducerFactory,
        group_id: str,
        partition_counts: dict[str, int],
    ) -> None:
        self._make_producer = make_producer
        self._group_id = group_id
        self._counts = partition_counts
        self._slots: dict[int, _Slot] = {}
        self._on_delivered: Delivered | None = None
        self.on_error: Callable[[BaseException], None] | None = None

    def transactional_id(self, number: int) -> str:
        """The id of input partition ``number``'s producer, the same on every member."""
        return f"{self._group_id}-{number}"

    @property
    def partitions(self) -> set[int]:
        """Input partition numbers that have a producer now."""
        return set(self._slots)

    # -- RecordSink ------------------------------------------------------------------

    def bind(self, on_delivered: Delivered) -> None:
        """Who hears about deliveries (the engine)."""
        self._on_delivered = on_delivered

    def append(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers, receipt: Receipt
    ) -> None:
        """Queue a record in the open transaction of its input's partition."""
        slot = self._slots.get(receipt.partition_number)
        if slot is None:
            return  # finished after its partition was given back: the next owner redoes it
        slot.dirty = True
        slot.batches.append(topic, key, value, headers, receipt)

    # -- partitions come and go ------------------------------------------------------

    async def assign(self, partitions: Iterable[TopicPartition]) -> Mapping[TopicPartition, int]:
        """Start a producer (fencing any earlier owner) for each new partition number.

        Starting it ends the earlier owner's open transaction (aborted), so the committed
        offsets the consumer fetches are already stable: no floor is returned.
        """
        fresh = [n for n in {tp.partition for tp in partitions} if n not in self._slots]
        slots = await asyncio.gather(*(self._open(n) for n in fresh))
        self._slots.update(zip(fresh, slots, strict=True))
        return {}

    async def _open(self, number: int) -> _Slot:
        producer = self._make_producer(self.transactional_id(number))
        await producer.start()  # InitProducerId: fences the previous owner, aborts its txn
        await producer.begin_transaction()
        batches = BatchingSink(producer, self._counts)
        if self._on_delivered is not None:
            batches.bind(self._on_delivered)
        batches.on_error = self._failed
        batches.start()
        return _Slot(producer, batches)

    def _failed(self, exc: BaseException) -> None:
        if self.on_error is not None:
            self.on_error(exc)

    async def release(self, numbers: Iterable[int]) -> None:
        """Close the producers of partitions given back (after their last commit); what is
        still open is aborted and redone by the next owner."""
        slots = [self._slots.pop(n) for n in set(numbers) if n in self._slots]
        await asyncio.gather(*(self._close(slot) for slot in slots))

    async def close(self) -> None:
        """Close every producer."""
        await self.release(list(self._slots))

    @staticmethod
    async def _close(slot: _Slot) -> None:
        slot.batches.gate.clear()  # nothing more goes into the open transaction
        await slot.batches.discard()
        try:
            await slot.producer.abort_transaction()
        except (KafkaError, *TRANSACTION_STATE_ERRORS) as exc:
            # Fenced or failed already (aiokafka asserts on the state change then): the
            # broker aborts it, or the next owner's producer does.
            log.debug("abort on release: %r", exc)
        finally:
            await slot.producer.stop()

    # -- OffsetCommitter -------------------------------------------------------------

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit every open transaction, each with its partition's input offsets."""
        await (await self.begin_commit(offsets, None))

    async def begin_commit(
        self, offsets: dict[TopicPartition, int], numbers: Iterable[int] | None
    ) -> asyncio.Future[Any]:
        """Close the transactions of ``numbers`` (every one when ``None``) that hold
        records or offsets, and return the commit of all of them, under way.

        Once this returns, records appended go into the next transactions (they wait in
        their batches until it begins), so the caller may take new records while the
        commit travels. The returned future raises when a transaction cannot commit
        (fenced, timed out).
        """
        by_number: defaultdict[int, dict[TopicPartition, int]] = defaultdict(dict)
        for tp, offset in offsets.items():
            by_number[tp.partition][tp] = offset
        wanted = None if numbers is None else set(numbers)
        chosen = [
            (slot, by_number.get(number, {}))
            for number, slot in self._slots.items()
            if (wanted is None or number in wanted) and (slot.dirty or number in by_number)
        ]
        # What is appended so far belongs to this transaction; after this, to the next.
        await asyncio.gather(*(slot.batches.flush() for slot, _ in chosen))
        for slot, _ in chosen:
            slot.batches.gate.clear()
            slot.dirty = False
        return asyncio.gather(*(self._commit(slot, offs) for slot, offs in chosen))

    async def _commit(self, slot: _Slot, offsets: dict[TopicPartition, int]) -> None:
        try:
            producer = slot.producer
            if offsets:
                await producer.send_offsets_to_transaction(offsets, self._group_id)
            await producer.commit_transaction()
            await producer.begin_transaction()
        finally:
            slot.batches.gate.set()
