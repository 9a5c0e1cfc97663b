"""What the stage engine needs from the outside world, as protocols.

The engine is handed these at construction or once the consumer exists; aiokafka-backed
implementations live in :mod:`pipeline.runtime.wiring`, :mod:`pipeline.runtime.batching`
and :mod:`pipeline.runtime.transactions`, test doubles in the unit tests.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any, Protocol

from aiokafka.structs import TopicPartition

from pipeline.errors import PipelineError
from pipeline.failures.provenance import Headers
from pipeline.runtime.core.receipts import Receipt

Delivered = Callable[[list[Receipt], asyncio.Future[Any]], None]
"""Called with the receipts of records the broker has (or refused: see the future)."""


class StageFailed(PipelineError):
    """The stage cannot go on (its producer failed or a record demanded a stop)."""


class RecordSink(Protocol):
    """Where a stage's output records go (batches for the producer, or a test double)."""

    def bind(self, on_delivered: Delivered) -> None:
        """Register the callback that receives delivered records' receipts."""
        ...

    def append(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers, receipt: Receipt
    ) -> None:
        """Queue a record in order; its ``receipt`` is handed back, with the delivery
        future, once the broker has it."""
        ...


class OffsetCommitter(Protocol):
    """Commits consumed offsets for the stage's consumer group."""

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit the given next-to-consume offsets."""
        ...


class Transactions(OffsetCommitter, Protocol):
    """``exactly_once``: the transactional producers of a stage (the sink too) — one per
    process, or one per input partition where the broker lacks KIP-447."""

    spans_partitions: bool
    """Whether one transaction holds every owned partition's outputs (so a commit
    covers them all)."""

    async def assign(self, partitions: Iterable[TopicPartition]) -> Mapping[TopicPartition, int]:
        """Take newly owned partitions once an earlier owner's transaction has ended;
        returns committed offsets below which nothing may be processed."""
        ...

    async def release(self, numbers: Iterable[int]) -> None:
        """Stop writing for partition numbers given back."""
        ...

    async def begin_commit(
        self, offsets: dict[TopicPartition, int], numbers: Iterable[int] | None
    ) -> asyncio.Future[Any]:
        """Close the open transactions of ``numbers`` (all when ``None``) to new records
        and return their commit, with ``offsets``, under way."""
        ...


class ConsumerControl(Protocol):
    """Flow control on the stage's consumer, for waiting out retry delays."""

    def pause(self, partition: TopicPartition) -> None:
        """Stop fetching ``partition``."""
        ...

    def resume(self, partition: TopicPartition) -> None:
        """Fetch ``partition`` again (ignored when it is no longer assigned)."""
        ...

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Fetch ``partition`` from ``offset`` next."""
        ...

    def position(self, partition: TopicPartition) -> int | None:
        """The next offset the consumer hands out for ``partition`` (past any
        transaction markers), if known."""
        ...

    def describe(self) -> dict[str, Any]:
        """The consumer's view: paused partitions and fetch positions."""
        ...


class ConsumerPort(ConsumerControl, OffsetCommitter, Protocol):
    """The stage's consumer as the engine uses it: flow control, commits, end offsets."""

    def highwater(self, partition: TopicPartition) -> int | None:
        """The partition's end offset as last fetched, if known (for lag)."""
        ...

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The partitions' end offsets, asked of the broker now."""
        ...

    async def committed(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed offsets of the partitions (those that have one)."""
        ...
