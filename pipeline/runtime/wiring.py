"""Wires a :class:`StageSpec` into FastStream: a router with one batch subscriber whose
handler feeds the :class:`StageEngine`, plus the stage's own producer.

FastStream owns what it is good at (declaring subscribers, the consumer's lifecycle,
dependency injection, AsyncAPI); the engine owns the per-record path, because
FastStream's per-message path costs about 30x the CPU of a batched one.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.coordinator.assignors.range import RangePartitionAssignor
from aiokafka.structs import TopicPartition
from faststream import AckPolicy
from faststream.kafka import KafkaRouter
from faststream.kafka.annotations import KafkaMessage

from pipeline.errors import MissingTopics
from pipeline.failures.provenance import Headers
from pipeline.kafka.admin import missing_topics
from pipeline.kafka.connection import new_producer
from pipeline.kafka.group_fencing import ConsumerGroupMetadata
from pipeline.kafka.internals import fetch_position, group_metadata, skip_decoding
from pipeline.kafka.topology import Naming
from pipeline.runtime.batching import BatchingSink
from pipeline.runtime.engine import StageEngine
from pipeline.runtime.observer import NullObserver, StageObserver
from pipeline.runtime.ports import RecordSink
from pipeline.runtime.process_transactions import ProcessTransactions, transaction_scheme
from pipeline.runtime.stage import StageSpec
from pipeline.runtime.transactions import PartitionTransactions
from pipeline.settings import KafkaSettings, StageSettings
from pipeline.telemetry.tracing import RecordTracing

log = logging.getLogger(__name__)


class ConsumerFlow:
    """The subscriber's aiokafka consumer as the engine's :class:`ConsumerPort`: pause,
    resume and seek, explicit commits, fetch positions and end offsets."""

    def __init__(self, consumer: AIOKafkaConsumer) -> None:
        self._consumer = consumer

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        """Commit ``offsets`` (next offset to consume per partition)."""
        await self._consumer.commit(offsets)

    def highwater(self, partition: TopicPartition) -> int | None:
        """The partition's end offset as of the last fetch."""
        end: int | None = self._consumer.highwater(partition)
        return end

    async def end_offsets(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The partitions' end offsets, asked of the broker now (not the last fetch's)."""
        ends: dict[TopicPartition, int] = await self._consumer.end_offsets(partitions)
        return ends

    async def committed(self, partitions: list[TopicPartition]) -> dict[TopicPartition, int]:
        """The group's committed offsets of the partitions (those that have one)."""
        found = {tp: await self._consumer.committed(tp) for tp in partitions}
        return {tp: offset for tp, offset in found.items() if offset is not None}

    def pause(self, partition: TopicPartition) -> None:
        """Stop fetching ``partition``."""
        self._consumer.pause(partition)

    def resume(self, partition: TopicPartition) -> None:
        """Fetch ``partition`` again if still assigned."""
        if partition in self._consumer.assignment():
            self._consumer.resume(partition)

    def seek(self, partition: TopicPartition, offset: int) -> None:
        """Fetch ``partition`` from ``offset`` next."""
        self._consumer.seek(partition, offset)

    def position(self, partition: TopicPartition) -> int | None:
        """The next offset the consumer hands out (past transaction markers)."""
        return fetch_position(self._consumer, partition)

    def describe(self) -> dict[str, Any]:
        """Paused partitions and the positions the consumer will fetch next."""
        return {
            "paused": sorted(f"{tp.topic}[{tp.partition}]" for tp in self._consumer.paused()),
            "positions": {
                f"{tp.topic}[{tp.partition}]": self.position(tp)
                for tp in self._consumer.assignment()
            },
        }


class _EngineListener(ConsumerRebalanceListener):  # type: ignore[misc]
    """Drains and commits revoked partitions before the group moves them elsewhere."""

    def __init__(self, engine: StageEngine, settings: StageSettings) -> None:
        self._engine = engine
        self._settings = settings

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        await self._engine.revoked(set(revoked), self._settings.revoke_drain_timeout_s)

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        await self._engine.assigned(set(assigned))


class StageRuntime:
    """One stage in one process: its router, engine and producer."""

    def __init__(
        self,
        spec: StageSpec[Any, Any],
        kafka: KafkaSettings,
        settings: StageSettings,
        services: Any,
        observer: StageObserver | None = None,
        sink: RecordSink | None = None,
        naming: Naming | None = None,
        tracing: RecordTracing | None = None,
        dependency_overrides: Mapping[Any, Any] | None = None,
    ) -> None:
        self.spec = spec
        self.naming = naming or Naming()
        self._kafka = kafka
        self._settings = settings
        self._producer: AIOKafkaProducer | None = None
        self._own_sink = sink is None
        self._topics_checked = False
        self._batches: BatchingSink | None = None
        self._transactions: ProcessTransactions | PartitionTransactions | None = None
        self._deferred = _DeferredSink()
        self._sink: RecordSink = sink or self._deferred
        self.engine = StageEngine(
            spec,
            services,
            settings,
            self._sink,
            observer or NullObserver(),
            self.naming,
            kafka=kafka,
            tracing=tracing,
            dependency_overrides=dependency_overrides,
        )
        self._consumer: AIOKafkaConsumer | None = None
        self.router = self._build_router()

    @property
    def consumer(self) -> AIOKafkaConsumer | None:
        """The subscriber's consumer, once the first batch arrived."""
        return self._consumer

    def _build_router(self) -> KafkaRouter:
        spec, settings, engine, naming = self.spec, self._settings, self.engine, self.naming
        source, sink = naming.topic(spec.source), naming.topic(spec.sink)
        dead_letter = naming.topic(spec.dead_letter_topic)
        router = KafkaRouter()
        router.publisher(
            sink,
            schema=spec.output_type,
            title=f"{sink}:publish",
            description=f"Output of the {spec.name} stage.",
        )
        for extra in spec.output_topics[1:]:
            router.publisher(
                naming.topic(extra),
                title=f"{naming.topic(extra)}:publish",
                description=f"Further output of the {spec.name} stage.",
            )
        router.publisher(
            dead_letter,
            title=f"{dead_letter}:publish",
            description=f"Records {spec.name} gave up on, with provenance headers.",
        )

        subscriber = router.subscriber(
            source,
            *engine.retry_topics,
            # Range assignment gives one member partition p of the input and of every
            # retry topic, so a key's waiting state never spans two processes.
            partition_assignment_strategy=(RangePartitionAssignor,),
            group_id=naming.group(spec.name),
            batch=True,
            max_records=settings.fetch_max_records,
            batch_timeout_ms=settings.fetch_timeout_ms,
            ack_policy=AckPolicy.MANUAL,
            auto_offset_reset="earliest",
            # Upstream stages may write transactionally: never see aborted outputs.
            isolation_level="read_committed",
            listener=_EngineListener(engine, settings),
            max_poll_interval_ms=settings.max_poll_interval_ms,
            # A killed member is noticed after the session timeout; the whole group waits
            # for it in the meantime, so this is the failover time after a kill -9.
            session_timeout_ms=settings.session_timeout_ms,
            # One id per process and stage: each stage is its own group, so a process
            # running several stages is one static member of each.
            group_instance_id=settings.group_instance_id,
            rebalance_timeout_ms=settings.rebalance_timeout_ms,
            heartbeat_interval_ms=min(3_000, settings.session_timeout_ms // 3),
            title=f"{source}:{spec.name}",
            decoder=skip_decoding,
            description=spec.description,
        )

        @subscriber
        async def consume_batch(message: KafkaMessage) -> None:
            if self._consumer is None:
                self._consumer = message.consumer
                consumer = message.consumer
                engine.start(
                    ConsumerFlow(consumer) if isinstance(consumer, AIOKafkaConsumer) else None
                )
            await engine.submit(message.raw_message)

        return router

    def _output_topics(self) -> list[str]:
        """Every topic the stage writes: its sink first, then its other outputs, dead
        letters, holds journal, retry ladder and (holding keys) parked events."""
        return [
            *(self.naming.topic(topic) for topic in self.spec.output_topics),
            self.naming.topic(self.spec.dead_letter_topic),
            self.engine.holds_topic,
            *self.engine.retry_topics,
            *([self.engine.parked_topic] if self.engine.parks else []),
        ]

    async def check_topics(self) -> None:
        """Refuse, naming them, topics the stage uses that the broker does not have: one
        clear error instead of aiokafka's "not found in cluster metadata" ten times a
        second until its request timeout. A stage never creates topics."""
        if self._topics_checked:
            return
        topics = [*self._output_topics(), self.engine.source_topic]
        missing = await missing_topics(self._kafka, topics)
        if missing:
            raise MissingTopics(
                f"stage {self.spec.name}: topics missing on the broker: {', '.join(missing)}. "
                "Create them from the code with `pipeline topics apply [MODULE:ATTR]` (or as "
                "the KafkaTopics `pipeline topics render` writes)"
            )
        self._topics_checked = True

    async def start(self) -> None:
        """Start the stage's producer (before the consumer delivers anything)."""
        if not self._own_sink:
            return
        await self.check_topics()
        self._producer = self._new_producer()
        await self._producer.start()
        topics = self._output_topics()
        counts = {topic: len(await self._producer.partitions_for(topic)) for topic in topics}
        source_partitions = counts[topics[0]]
        if self.exactly_once:
            # Outputs go through transactional producers; this one only looked up the
            # partition counts and what the broker speaks.
            scheme = await transaction_scheme(self._producer, self._settings.transactions)
            await self._producer.stop()
            self._producer = None
            group = self.naming.group(self.spec.name)
            if scheme == "per_process":
                self._transactions = ProcessTransactions(
                    self._new_producer(f"{group}-{self._settings.instance_id}"),
                    group,
                    counts,
                    self._group_metadata,
                    stable_timeout_s=self._settings.transaction_timeout_ms / 1000,
                )
                await self._transactions.start()
            else:
                self._transactions = PartitionTransactions(self._new_producer, group, counts)
            self._transactions.on_error = self.engine.fail
            self._deferred.target = self._transactions
            self.engine.attach_sink(
                self._transactions,
                source_partitions=source_partitions,
                transactions=self._transactions,
            )
            return
        self._batches = BatchingSink(self._producer, counts)
        self._batches.on_error = self.engine.fail
        self._batches.start()
        self._deferred.target = self._batches
        self.engine.attach_sink(self._batches, source_partitions=source_partitions)

    def _group_metadata(self) -> ConsumerGroupMetadata:
        """The stage consumer's current place in its group (what offsets commit as)."""
        consumer = self._consumer
        if not isinstance(consumer, AIOKafkaConsumer):
            raise RuntimeError("offsets committed before the stage's consumer started")
        return group_metadata(consumer, self.naming.group(self.spec.name))

    def _new_producer(self, transactional_id: str | None = None) -> AIOKafkaProducer:
        return new_producer(
            self._kafka,
            client_id=f"{self._kafka.client_id_prefix}-{self.spec.name}",
            linger_ms=self._settings.producer_linger_ms,
            max_batch_size=self._settings.producer_max_batch_bytes,
            transactional_id=transactional_id,
            transaction_timeout_ms=self._settings.transaction_timeout_ms,
        )

    @property
    def exactly_once(self) -> bool:
        """Whether this stage commits outputs and input offsets in one transaction."""
        return self._settings.guarantee_of(self.spec.name) == "exactly_once"

    async def stop(self) -> None:
        """Stop taking records, drain, commit, flush and close the producer."""
        if self._consumer is not None and isinstance(self._consumer, AIOKafkaConsumer):
            try:
                self._consumer.pause(*self._consumer.assignment())
            except Exception:  # the consumer may already be gone
                log.debug("pause on stop failed", exc_info=True)
        await self.engine.stop(self._settings.shutdown_drain_timeout_s)
        if self._batches is not None:
            await self._batches.close()
            self._batches = None
        if self._transactions is not None:
            await self._transactions.close()
        if self._producer is not None:
            await self._producer.stop()
            self._producer = None

    def readiness(self) -> str:
        """``assigned`` (owns partitions), ``idle`` (joined, nothing to own), ``starting``
        or ``failed``."""
        if self.engine.failure is not None:
            return "failed"
        assigned = self.engine.assignment
        if assigned is None:
            return "starting"
        return "assigned" if assigned else "idle"


class _DeferredSink:
    """Forwards to the batching sink once the stage's producer has started."""

    def __init__(self) -> None:
        self.target: RecordSink | None = None
        self.on_delivered: Callable[[list[Any], asyncio.Future[Any]], None] | None = None

    def bind(self, on_delivered: Callable[[list[Any], asyncio.Future[Any]], None]) -> None:
        """Remember the engine's callback for the real sink."""
        self.on_delivered = on_delivered

    def append(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers, receipt: Any
    ) -> None:
        """Queue a record on the started producer's batches."""
        if self.target is None:
            raise RuntimeError("the stage's producer is not started")
        self.target.append(topic, key, value, headers, receipt)
