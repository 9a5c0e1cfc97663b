"""Output batching: a stage's outputs go to the producer as one batch per partition.

``AIOKafkaProducer.send`` costs a coroutine, a future and an accumulator lookup per
record, which is most of a hop's CPU. Here a record is appended to its partition's open
``BatchBuilder`` (synchronous, in C), every open batch is sealed once per event-loop
tick, and one flusher hands sealed batches to the producer strictly in order, so
per-partition (and so per-key) order is exactly the order of appends.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections import deque
from collections.abc import Callable
from functools import partial
from typing import Any

from aiokafka import AIOKafkaProducer

from pipeline.failures.provenance import Headers
from pipeline.kafka.murmur2 import murmur2
from pipeline.runtime.core.receipts import Receipt
from pipeline.runtime.ports import Delivered

log = logging.getLogger(__name__)


def partition_for(key: bytes | None, partitions: int) -> int:
    """The partition Kafka's default partitioner (Java and aiokafka alike) picks."""
    if key is None:
        return random.randrange(partitions)
    return int(murmur2(key) & 0x7FFFFFFF) % partitions


class PartitionCache:
    """Remembers each key's partition: the hash is pure Python (about a microsecond a
    key), and a key (an order) passes by several times. Bounded: cleared when it grows
    too large."""

    __slots__ = ("_by_key", "_limit", "partitions")

    def __init__(self, partitions: int, limit: int = 200_000) -> None:
        self.partitions = partitions
        self._limit = limit
        self._by_key: dict[bytes, int] = {}

    def __call__(self, key: bytes | None) -> int:
        if key is None:
            return random.randrange(self.partitions)
        partition = self._by_key.get(key)
        if partition is None:
            if len(self._by_key) >= self._limit:
                self._by_key.clear()
            partition = self._by_key[key] = partition_for(key, self.partitions)
        return partition


class _OpenBatch:
    __slots__ = ("builder", "partition", "receipts", "topic")

    def __init__(self, builder: Any, topic: str, partition: int) -> None:
        self.builder = builder
        self.topic = topic
        self.partition = partition
        self.receipts: list[Receipt] = []


class BatchingSink:
    """Appends outputs to per-partition batches and flushes them in order."""

    def __init__(self, producer: AIOKafkaProducer, partition_counts: dict[str, int]) -> None:
        self._producer = producer
        self._partitioners = {
            topic: PartitionCache(count) for topic, count in partition_counts.items()
        }
        self._open: dict[tuple[str, int], _OpenBatch] = {}
        self._sealed: deque[_OpenBatch] = deque()
        self._wake = asyncio.Event()
        self._idle = asyncio.Event()
        self._seal_scheduled = False
        self._flusher: asyncio.Task[None] | None = None
        self.on_error: Callable[[BaseException], None] | None = None
        self._on_delivered: Delivered | None = None
        # Closed while a transaction commits: batches sealed meanwhile wait for the next.
        self.gate = asyncio.Event()
        self.gate.set()

    def bind(self, on_delivered: Delivered) -> None:
        """Who hears about deliveries (the engine)."""
        self._on_delivered = on_delivered

    def start(self) -> None:
        """Start the flusher task."""
        self._flusher = asyncio.create_task(self._flush_forever())

    async def flush(self) -> None:
        """Return once everything appended so far has been handed to the producer."""
        self._seal_all()
        if self._flusher is not None and not self._flusher.done() and self._sealed:
            self._idle.clear()
            await self._idle.wait()

    async def discard(self) -> None:
        """Stop the flusher; what was not handed to the producer yet is dropped (its
        transaction is aborted, and the records are redone by the next owner)."""
        self._open.clear()
        self._sealed.clear()
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)

    async def close(self) -> None:
        """Flush what is open and stop the flusher."""
        await self.flush()
        if self._flusher is not None:
            self._flusher.cancel()
            await asyncio.gather(self._flusher, return_exceptions=True)

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers,
        receipt: Receipt,
    ) -> None:
        """Queue one record; its ``receipt`` comes back when its batch is delivered."""
        partition = self._partitioners[topic](key)
        slot = (topic, partition)
        batch = self._open.get(slot)
        if batch is None:
            batch = self._open[slot] = _OpenBatch(self._producer.create_batch(), topic, partition)
        if batch.builder.append(timestamp=None, key=key, value=value, headers=headers) is None:
            self._seal(slot)  # full: it goes first, this record opens the next one
            batch = self._open[slot] = _OpenBatch(self._producer.create_batch(), topic, partition)
            batch.builder.append(timestamp=None, key=key, value=value, headers=headers)
        batch.receipts.append(receipt)
        if not self._seal_scheduled:
            self._seal_scheduled = True
            asyncio.get_running_loop().call_soon(self._seal_all)

    def _seal(self, slot: tuple[str, int]) -> None:
        batch = self._open.pop(slot)
        batch.builder.close()
        self._sealed.append(batch)
        self._wake.set()

    def _seal_all(self) -> None:
        self._seal_scheduled = False
        for slot in list(self._open):
            self._seal(slot)

    async def _flush_forever(self) -> None:
        producer = self._producer
        sealed = self._sealed
        while True:
            while sealed:
                if not self.gate.is_set():
                    await self.gate.wait()
                batch = sealed[0]
                try:
                    delivery = await producer.send_batch(
                        batch.builder, batch.topic, partition=batch.partition
                    )
                except Exception as exc:
                    log.error("handing a batch to the producer failed", exc_info=exc)
                    if self.on_error is not None:
                        self.on_error(exc)
                    return
                sealed.popleft()
                if self._on_delivered is not None:
                    delivery.add_done_callback(partial(self._on_delivered, batch.receipts))
            self._idle.set()
            self._wake.clear()
            await self._wake.wait()
