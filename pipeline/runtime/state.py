"""The state every part of the stage engine shares, and what a part may ask of it.

:class:`EngineState` holds the stage's pure bookkeeping (the core's
:class:`~pipeline.runtime.core.ledger.StageLedger`), the collaborators it was given,
and the few events that coordinate the asyncio side: room for more records, progress,
an assignment settled, a transaction commit being set up. The parts — intake and the
per-record path (:mod:`.engine`), outcomes (:mod:`.outcomes`), commits and rebalances
(:mod:`.checkpointing`) — each extend it.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable, Mapping
from typing import Any

from aiokafka.structs import ConsumerRecord, TopicPartition

from pipeline.failures.holds import Hold
from pipeline.failures.ladder import Ladder
from pipeline.kafka.topology import Naming
from pipeline.runtime.core.ledger import Lane, StageLedger
from pipeline.runtime.core.receipts import Receipt
from pipeline.runtime.dedupe import RecentIds
from pipeline.runtime.micro_batch import MicroBatcher
from pipeline.runtime.observer import StageObserver
from pipeline.runtime.ports import ConsumerPort, RecordSink, Transactions
from pipeline.runtime.stage import StageSpec
from pipeline.settings import KafkaSettings, StageSettings
from pipeline.telemetry.tracing import RecordTracing

log = logging.getLogger("pipeline.runtime.engine")


class EngineState:
    """One stage's engine state; see :class:`~pipeline.runtime.engine.StageEngine`."""

    def __init__(
        self,
        spec: StageSpec[Any, Any],
        services: Any,
        settings: StageSettings,
        sink: RecordSink,
        observer: StageObserver,
        naming: Naming | None = None,
        *,
        kafka: KafkaSettings | None = None,
        tracing: RecordTracing | None = None,
        dependency_overrides: Mapping[Any, Any] | None = None,
    ) -> None:
        """``kafka``: where the holds journal and dedupe tails are read on assignment
        (``None``: nothing to read, as in contract tests); ``tracing``: per-record spans;
        ``dependency_overrides``: replacements for the handler's ``Depends`` providers.
        The consumer arrives with :meth:`start`, the producer with :meth:`attach_sink`."""
        self.spec = spec
        naming = naming or Naming()
        self._sink_topic = naming.topic(spec.sink)
        self._declared = {topic: naming.topic(topic) for topic in spec.output_topics}
        self._key_of = spec.key
        self._dead_letter_topic = naming.topic(spec.dead_letter_topic)
        self._ladder = Ladder(tuple(settings.retry_delays_s))
        self.source_topic = naming.topic(spec.source)
        self.retry_topics = [naming.retry(spec.name, n) for n in range(1, self._ladder.levels + 1)]
        self.holds_topic = naming.holds(spec.name)
        self._parked_topic = naming.parked(spec.name)
        self._levels = {topic: n for n, topic in enumerate([self.source_topic, *self.retry_topics])}
        self._ordered = settings.ordering == "key"
        # on_dead_letter=hold: a dead letter parks its key (pipeline.runtime.parking)
        self._parks = self._ordered and settings.on_dead_letter == "hold"
        self._releases: dict[Lane, asyncio.Task[None]] = {}
        self._in_release: Lane | None = None
        self._commits = asyncio.Event()
        self._ledger: StageLedger[ConsumerRecord, Hold] = StageLedger()
        self._resume_timers: dict[TopicPartition, asyncio.TimerHandle] = {}
        self._consumer: ConsumerPort | None = None
        self._identify = spec.identify or str
        self._recent = (
            RecentIds(settings.dedupe_window)
            if spec.identify is not None and settings.dedupe_window
            else None
        )
        self._source_partitions = 1
        self.tracing = tracing
        self._spans: dict[int, Any] = {}
        self._kafka = kafka
        self.services = services
        self._settings = settings
        self._sink = sink
        sink.bind(self._delivered)
        self._observer = observer
        self._decode = spec.decoder()
        self._call = spec.call(services, dependency_overrides)
        # a batched handler: events go to it without a future each (see micro_batch)
        self._batcher = self._call if isinstance(self._call, MicroBatcher) else None
        self._max_in_flight = settings.max_in_flight
        self._capacity = asyncio.Event()
        self._progress = asyncio.Event()
        self._commit_lock = asyncio.Lock()
        self.transactions: Transactions | None = None  # exactly_once, from attach_sink
        # exactly_once: cleared while a transaction commit is being set up, so intake
        # waits for it
        self._unsealed = asyncio.Event()
        self._unsealed.set()
        # Set once the current assignment is settled (producers, holds and dedupe tails
        # loaded): the consumer hands out records while its rebalance callback still runs.
        self._settled = asyncio.Event()
        self._commit_task: asyncio.Task[None] | None = None
        self._lag_task: asyncio.Task[None] | None = None
        self._closing = False
        self.failure: BaseException | None = None
        self._failure_listeners: list[Callable[[BaseException], None]] = []
        observer.ready(False)

    # -- what the stage is doing -------------------------------------------------------

    @property
    def in_flight(self) -> int:
        """Records taken from Kafka and not yet finished."""
        return self._ledger.in_flight

    async def wait_idle(self) -> None:
        """Return once nothing is in flight (or the stage failed)."""
        while self._ledger.in_flight and self.failure is None:
            self._progress.clear()
            await self._progress.wait()

    def describe(self) -> dict[str, Any]:
        """The engine's state, for an operator asking what a stage is doing."""
        ledger = self._ledger
        return {
            "stage": self.spec.name,
            "in_flight": ledger.in_flight,
            "closing": self._closing,
            "failure": repr(self.failure) if self.failure else None,
            "assigned": sorted(f"{topic}[{number}]" for topic, number in ledger.assigned or ()),
            "busy_lanes": len(ledger.lanes),
            "held_keys": len(ledger.holds),
            "waiting_for_due_time": sorted(
                f"{tp.topic}[{tp.partition}]" for tp in self._resume_timers
            ),
            "partitions": {
                f"{p.tp[0]}[{p.number}]": {
                    "unfinished": p.offsets.unfinished,
                    "uncommitted": p.offsets.uncommitted,
                    "safe_offset": p.offsets.safe_offset,
                    "committed": p.offsets.committed_offset,
                }
                for p in ledger.partitions.values()
            },
            "consumer": self._consumer.describe() if self._consumer is not None else None,
        }

    def attach_sink(
        self,
        sink: RecordSink,
        *,
        source_partitions: int,
        transactions: Transactions | None = None,
    ) -> None:
        """Send outputs straight to ``sink`` from now on (the stage's started producer);
        ``transactions`` (exactly_once) also commits the input offsets.
        ``source_partitions`` sizes the dedupe tail read per partition."""
        sink.bind(self._delivered)
        self._sink = sink
        self._source_partitions = max(1, source_partitions)
        self.transactions = transactions

    def on_failure(self, listener: Callable[[BaseException], None]) -> None:
        """Call ``listener`` once when the stage fails (to stop its process)."""
        self._failure_listeners.append(listener)

    @property
    def assignment(self) -> set[TopicPartition] | None:
        """Partitions the consumer owns; ``None`` before the first assignment."""
        assigned = self._ledger.assigned
        return None if assigned is None else {TopicPartition(*slot) for slot in assigned}

    @property
    def parks(self) -> bool:
        """Whether a dead letter parks its key (``on_dead_letter="hold"``)."""
        return self._parks

    @property
    def parked_topic(self) -> str:
        """Where the stage parks the events of held keys."""
        return self._parked_topic

    @property
    def closing(self) -> bool:
        """Whether the engine refuses new records."""
        return self._closing

    def _delivered(self, receipts: list[Receipt], delivery: asyncio.Future[Any]) -> None:
        if delivery.cancelled() or delivery.exception() is not None:
            # The producer gave up after its own retries: stop without committing past it.
            self.fail(delivery.exception() or asyncio.CancelledError())
            return
        ledger = self._ledger
        ledger.acknowledged(receipts)
        self._observer.finished(ledger.in_flight)
        if ledger.in_flight < self._max_in_flight:
            self._capacity.set()
        self._progress.set()

    def fail(self, exc: BaseException) -> None:
        """Stop the stage without committing past unfinished records."""
        if self.failure is None:
            self.failure = exc
            self._observer.ready(False)
            log.error("stage %s failed; stopping without committing", self.spec.name, exc_info=exc)
            for listener in self._failure_listeners:
                listener(exc)
        self._capacity.set()
        self._progress.set()
        self._settled.set()  # nothing waits for an assignment that will not come
        self._unsealed.set()
