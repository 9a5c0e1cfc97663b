"""The stage engine: the path every record takes through a stage.

Glossary
  lane        records of one key in one partition; only the lane's head is in progress
  in flight   records taken from Kafka whose outputs the broker has not acknowledged yet
  safe offset one past everything finished below a partition's first unfinished record

A batch from the consumer is *submitted*: each record is tracked in its partition's
:class:`PartitionOffsets` and queued in its lane. A lane's head is decoded, handled and
its output handed to the producer without waiting; the next record of the same key may
start as soon as the output is *issued*, because the producer keeps per-partition order.
A record is *finished* when the broker acknowledges its output, and only then may the
committed offset pass it. When too many records are in flight, ``submit`` waits, so the
consumer stops fetching and memory stays flat under any backlog.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable, Iterable, Sequence
from functools import partial
from typing import Any, Protocol

from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from pipeline.errors import PipelineError, UndecodableRecord
from pipeline.failures.classify import Verdict
from pipeline.failures.holds import Hold, encode_hold, load_holds
from pipeline.failures.ladder import Ladder, rung_headers, rung_of
from pipeline.failures.provenance import (
    HEADER_PREFIX,
    REPLAY_OF,
    Failure,
    Headers,
    failure_headers,
    now,
)
from pipeline.kafka.topology import Naming
from pipeline.runtime.dedupe import RecentIds, recent_event_ids, record_identity
from pipeline.runtime.eager import Pending, step
from pipeline.runtime.key_lanes import KeyLanes
from pipeline.runtime.observer import StageObserver
from pipeline.runtime.offsets import PartitionOffsets
from pipeline.runtime.stage import StageSpec, encode
from pipeline.services import Services
from pipeline.settings import StageSettings
from pipeline.telemetry.tracing import RecordTracing

log = logging.getLogger(__name__)

Lane = tuple[int, bytes | None]


class RecordSink(Protocol):
    """Where a stage's output records go (batches for the producer, or a test double)."""

    def bind(self, on_delivered: Callable[[list[Any], asyncio.Future[Any]], None]) -> None:
        """Register the callback that receives delivered records' receipts."""
        ...

    def append(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers, receipt: Any
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
    """``exactly_once``: a transactional producer per input partition (the sink too)."""

    async def assign(self, numbers: Iterable[int]) -> None:
        """Start producers for newly owned partition numbers, fencing earlier owners."""
        ...

    async def release(self, numbers: Iterable[int]) -> None:
        """Close the producers of partition numbers given back."""
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


class _Joint:
    """A receipt shared by several output records: the input finishes with the last."""

    __slots__ = ("offset", "partition", "remaining")

    def __init__(self, partition: _Partition, offset: int, remaining: int) -> None:
        self.partition = partition
        self.offset = offset
        self.remaining = remaining


class StageFailed(PipelineError):
    """The stage cannot go on (its producer failed or a record demanded a stop)."""


class _Partition:
    """One assigned partition's offsets; replaced when the partition is assigned again."""

    __slots__ = ("key", "offsets", "tp")

    def __init__(self, tp: TopicPartition) -> None:
        self.tp = tp
        self.key = (tp.topic, tp.partition)
        self.offsets = PartitionOffsets()


class StageEngine:
    """Runs one stage's records with key-ordered concurrency and a safe commit rule."""

    def __init__(
        self,
        spec: StageSpec[Any, Any],
        services: Services,
        settings: StageSettings,
        sink: RecordSink,
        observer: StageObserver,
        naming: Naming | None = None,
    ) -> None:
        self.spec = spec
        naming = naming or Naming()
        self._sink_topic = naming.topic(spec.sink)
        self._dead_letter_topic = naming.topic(spec.dead_letter_topic)
        self._ladder = Ladder(tuple(settings.retry_delays_s))
        self.source_topic = naming.topic(spec.source)
        self.retry_topics = [naming.retry(spec.name, n) for n in range(1, self._ladder.levels + 1)]
        self.holds_topic = naming.holds(spec.name)
        self._levels = {topic: n for n, topic in enumerate([self.source_topic, *self.retry_topics])}
        self._ordered = settings.ordering == "key"
        self._holds: dict[Lane, Hold] = {}
        self._resume_timers: dict[TopicPartition, asyncio.TimerHandle] = {}
        self.control: ConsumerControl | None = None
        self._identify = spec.identify or str
        self._recent = (
            RecentIds(settings.dedupe_window)
            if spec.identify is not None and settings.dedupe_window
            else None
        )
        self.partition_count = 1
        self.tracing: RecordTracing | None = None
        self._spans: dict[int, Any] = {}
        self.kafka_settings: Any = None
        self.services = services
        self._settings = settings
        self._sink = sink
        sink.bind(self._delivered)
        self._observer = observer
        self._decode = spec.decoder()
        self._handler = spec.handler
        self._lanes: KeyLanes[Lane, ConsumerRecord | None] = KeyLanes()
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._assigned: set[TopicPartition] | None = None
        self._max_in_flight = settings.max_in_flight
        self._in_flight = 0
        self._capacity = asyncio.Event()
        self._progress = asyncio.Event()
        self._committer: OffsetCommitter | None = None
        self._commit_lock = asyncio.Lock()
        self.transactions: Transactions | None = None
        # exactly_once: cleared while a transaction commits, so intake waits for it
        self._unsealed = asyncio.Event()
        self._unsealed.set()
        # Set once the current assignment is settled (producers, holds and dedupe tails
        # loaded): the consumer hands out records while its rebalance callback still runs.
        self._settled = asyncio.Event()
        self._commit_task: asyncio.Task[None] | None = None
        self._closing = False
        self.failure: BaseException | None = None
        self.on_failure: Callable[[BaseException], None] | None = None
        self.highwater: Callable[[TopicPartition], int | None] | None = None
        observer.ready(False)

    # -- lifecycle -------------------------------------------------------------------

    def start(self, committer: OffsetCommitter | None) -> None:
        """Begin periodic commits through ``committer`` (``None``: nothing to commit)."""
        self._committer = committer
        if committer is None:
            self._settled.set()  # no consumer group (a test broker): nothing to settle
        if committer is not None and self._commit_task is None:
            self._commit_task = asyncio.create_task(self._commit_periodically())

    async def stop(self, timeout_s: float) -> None:
        """Take no more records, let in-flight ones finish within ``timeout_s``, commit."""
        self._closing = True
        self._observer.ready(False)
        self._capacity.set()
        self._settled.set()
        await self._drain(list(self._partitions.values()), timeout_s)
        if self._commit_task is not None:
            self._commit_task.cancel()
            await asyncio.gather(self._commit_task, return_exceptions=True)
            self._commit_task = None
        await self.commit()

    @property
    def in_flight(self) -> int:
        """Records taken from Kafka and not yet finished."""
        return self._in_flight

    async def wait_idle(self) -> None:
        """Return once nothing is in flight (or the stage failed)."""
        while self._in_flight and self.failure is None:
            self._progress.clear()
            await self._progress.wait()

    def describe(self) -> dict[str, Any]:
        """The engine's state, for an operator asking what a stage is doing."""
        return {
            "stage": self.spec.name,
            "in_flight": self._in_flight,
            "closing": self._closing,
            "failure": repr(self.failure) if self.failure else None,
            "assigned": sorted(f"{tp.topic}[{tp.partition}]" for tp in self._assigned or ()),
            "busy_lanes": len(self._lanes),
            "held_keys": len(self._holds),
            "waiting_for_due_time": sorted(
                f"{tp.topic}[{tp.partition}]" for tp in self._resume_timers
            ),
            "partitions": {
                f"{p.tp.topic}[{p.tp.partition}]": {
                    "in_flight": p.offsets.in_flight,
                    "safe_offset": p.offsets.safe_offset,
                    "committed": p.offsets.committed_offset,
                }
                for p in self._partitions.values()
            },
            "consumer": self.control.describe() if self.control is not None else None,
        }

    def attach_sink(self, sink: RecordSink) -> None:
        """Send outputs straight to ``sink`` from now on (the stage's started producer)."""
        sink.bind(self._delivered)
        self._sink = sink

    @property
    def assignment(self) -> set[TopicPartition] | None:
        """Partitions the consumer owns; ``None`` before the first assignment."""
        return self._assigned

    @property
    def closing(self) -> bool:
        """Whether the engine refuses new records."""
        return self._closing

    # -- intake ----------------------------------------------------------------------

    async def submit(self, records: Sequence[ConsumerRecord]) -> None:
        """Take a fetched batch; returns once there is room for the next one."""
        if not self._settled.is_set():
            await self._settled.wait()
        if not self._unsealed.is_set():
            await self._unsealed.wait()  # a transaction is committing: join the next one
        if self.failure is not None:
            raise StageFailed(f"stage {self.spec.name} failed") from self.failure
        if self._closing:
            return  # never tracked, never committed: the next owner gets them
        partitions = self._partitions
        lanes = self._lanes
        levels = self._levels
        waiting: set[tuple[str, int]] = set()
        control = self.control
        positions: dict[tuple[str, int], int] = {}
        last_slot: tuple[str, int] | None = None
        taken = 0
        for record in records:
            slot = (record.topic, record.partition)
            if slot in waiting:
                continue  # behind a record that is not due yet: fetched again on resume
            if slot != last_slot and control is not None:
                last_slot = slot
                position = control.position(TopicPartition(*slot))
                if position is None or position <= record.offset:
                    # Fetched before a rebalance reset the position to the committed
                    # offset, at or below these records: they are fetched again.
                    waiting.add(slot)
                    continue
                positions[slot] = position
            level = levels.get(record.topic, 0)
            if level and self._wait_until_due(record, level):
                waiting.add(slot)
                continue
            partition = partitions.get(slot)
            if partition is None:
                partition = self._open_partition(record.topic, record.partition)
                if partition is None:
                    continue
            if not partition.offsets.track(record.offset):
                continue
            taken += 1
            lane = (record.partition, record.key)
            if not level and self._holds and self._is_on_ladder(lane, record):
                self._skip(record, partition)  # redelivered after a crash: already climbing
                continue
            if level and lane in self._holds:
                # The record the lane waits for, back from the ladder: it goes first.
                if self._process(record, partition):
                    self._continue_lane(record, partition)
            elif lanes.admit(lane, record):
                self._run_lane(lane, record, partition)
        for slot, position in positions.items():
            # The safe offset may pass the transaction markers behind the batch's last
            # record: the consumer's position skips them, the records' offsets do not.
            partition = partitions.get(slot)
            if partition is not None and slot not in waiting:
                partition.offsets.seen_up_to(position)
        self._in_flight += taken
        self._observer.taken(taken, self._in_flight)
        while self._in_flight >= self._max_in_flight and self.failure is None:
            if self._closing:
                return
            self._capacity.clear()
            await self._capacity.wait()

    def _is_on_ladder(self, lane: Lane, record: ConsumerRecord) -> bool:
        hold = self._holds.get(lane)
        return (
            hold is not None and hold.head == f"{record.topic}/{record.partition}/{record.offset}"
        )

    def _wait_until_due(self, record: ConsumerRecord, level: int) -> bool:
        """Pause a retry partition whose next record is not due yet; ``True`` if paused.

        The partition is rewound to the record and resumed at its due time, so the
        consumer neither sleeps past its poll interval nor spins.
        """
        due_at_ms = rung_of(record, level).due_at_ms
        delay_s = due_at_ms / 1000 - time.time()
        if delay_s <= 0 or self.control is None:
            return False
        tp = TopicPartition(record.topic, record.partition)
        self.control.pause(tp)
        self.control.seek(tp, record.offset)
        previous = self._resume_timers.pop(tp, None)
        if previous is not None:
            previous.cancel()
        loop = asyncio.get_running_loop()
        self._resume_timers[tp] = loop.call_later(delay_s, self._resume, tp)
        return True

    def _resume(self, tp: TopicPartition) -> None:
        self._resume_timers.pop(tp, None)
        if self.control is not None and (self._assigned is None or tp in self._assigned):
            self.control.resume(tp)

    def _open_partition(self, topic: str, number: int) -> _Partition | None:
        tp = TopicPartition(topic, number)
        if self._assigned is not None and tp not in self._assigned:
            return None  # fetched before a revoke: no longer ours
        partition = _Partition(tp)
        self._partitions[(topic, number)] = partition
        return partition

    # -- the per-record path ---------------------------------------------------------

    def _run_lane(self, lane: Lane, record: ConsumerRecord | None, partition: _Partition) -> None:
        """Process the lane's records while each one completes without waiting.

        A lane mixes records of the input and of the retry topics (same partition
        number), so each record is matched with its own partition's state.
        """
        lanes = self._lanes
        partitions = self._partitions
        while record is not None:
            if not self._process(record, partition):
                return  # continues from a callback when the record is done
            if partitions.get(partition.key) is not partition:
                return  # revoked meanwhile
            record = lanes.release(lane)
            if record is not None and (record.topic, record.partition) != partition.key:
                found = partitions.get((record.topic, record.partition))
                if found is None:
                    return  # its partition was revoked: the next owner has it
                partition = found

    def _process(self, record: ConsumerRecord, partition: _Partition) -> bool:
        """Start one record; ``True`` when its output is already issued."""
        started = time.perf_counter()
        if self.tracing is not None:
            self._spans[id(record)] = self.tracing.start(record)
        recent = self._recent
        try:
            event = self._decode(record.value or b"")
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            if recent is not None and record_identity(record) in recent and not _replayed(record):
                return self._skip(record, partition)  # redelivered: dead-lettered already
            return self._dead_letter(record, partition, UndecodableRecord(str(exc)), 1, None)
        if recent is not None and self._identify(event) in recent and not _replayed(record):
            return self._skip(record, partition)  # redelivered: its output exists already
        try:
            result = step(self._handler(event, self.services))
        except Exception as exc:
            return self._on_error(record, partition, event, exc, started)
        if isinstance(result, Pending):
            result.task.add_done_callback(
                partial(self._on_handler_done, record, partition, event, started)
            )
            return False
        return self._handled(record, partition, event, started, result)

    def _traced(self, record: ConsumerRecord, headers: Headers) -> Headers:
        """``headers`` carrying the record's span as the parent of what comes next."""
        if self.tracing is None:
            return headers
        span = self._spans.get(id(record))
        return self.tracing.inject(span, headers) if span is not None else headers

    def _end_span(
        self, record: ConsumerRecord, outcome: str, error: BaseException | None = None
    ) -> None:
        if self.tracing is not None:
            span = self._spans.pop(id(record), None)
            if span is not None:
                self.tracing.end(span, outcome, error)

    def _handled(
        self,
        record: ConsumerRecord,
        partition: _Partition,
        event: Any,
        started: float,
        result: Any,
    ) -> bool:
        """The handler succeeded: count it, remember the event, queue its output."""
        self._observer.handled(time.perf_counter() - started, event)
        if self._recent is not None:
            self._recent.add(self._identify(event))
        return self._succeeded(record, partition, encode(result))

    def _skip(self, record: ConsumerRecord, partition: _Partition) -> bool:
        """Finish a record without output (a duplicate of one already handled)."""
        self._end_span(record, "duplicate")
        partition.offsets.finish(record.offset)
        self._in_flight -= 1
        self._observer.deduplicated()
        return True

    def _on_handler_done(
        self,
        record: ConsumerRecord,
        partition: _Partition,
        event: Any,
        started: float,
        task: asyncio.Task[Any],
    ) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is not None:
            issued = self._on_error(record, partition, event, exc, started)
        else:
            issued = self._handled(record, partition, event, started, task.result())
        if issued:
            self._continue_lane(record, partition)

    def _continue_lane(self, record: ConsumerRecord, partition: _Partition) -> None:
        if self._partitions.get(partition.key) is not partition:
            return  # the partition was revoked while this record was away
        lane = (record.partition, record.key)
        following = self._lanes.release(lane)
        if following is None:
            return
        own = self._partitions.get((following.topic, following.partition))
        if own is not None:
            self._run_lane(lane, following, own)

    def _on_error(
        self,
        record: ConsumerRecord,
        partition: _Partition,
        event: Any,
        exc: BaseException,
        started: float,
    ) -> bool:
        """Decide a failed record's fate; ``True`` when it is finished synchronously."""
        verdict = self.spec.error_policy(exc)
        self._observer.failed(exc, verdict)
        if verdict is Verdict.FAIL_STAGE:
            self.fail(exc)
            return False
        first_try_here = record.topic == self.source_topic
        if verdict is Verdict.RETRY and first_try_here and self._settings.in_process_attempts > 1:
            task = asyncio.ensure_future(self._retry_in_process(event, now()))
            task.add_done_callback(partial(self._on_retried, record, partition, event, started))
            return False
        if verdict is Verdict.RETRY:
            return self._climb(record, partition, exc, 1)
        return self._dead_letter(record, partition, exc, 1, None)

    async def _retry_in_process(self, event: Any, first_failure_at: Any) -> Any:
        """Further attempts with jittered exponential backoff, well inside the poll
        interval; the key's lane stays held, other keys go on."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self._settings.in_process_attempts - 1),
            wait=wait_exponential_jitter(multiplier=0.02, max=0.5, jitter=0.05),
            retry=retry_if_exception(lambda e: self.spec.error_policy(e) is Verdict.RETRY),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                self._observer.retried()
                return await self._handler(event, self.services)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _on_retried(
        self,
        record: ConsumerRecord,
        partition: _Partition,
        event: Any,
        started: float,
        task: asyncio.Task[Any],
    ) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        if exc is None:
            issued = self._handled(record, partition, event, started, task.result())
        elif self.spec.error_policy(exc) is Verdict.FAIL_STAGE:
            self.fail(exc)
            return
        else:
            issued = self._climb(record, partition, exc, self._settings.in_process_attempts)
        if issued:
            self._continue_lane(record, partition)

    def _dead_letter(
        self,
        record: ConsumerRecord,
        partition: _Partition,
        exc: BaseException,
        attempt: int,
        first_failure_at: Any,
    ) -> bool:
        failed_at = now()
        first = first_failure_at or _first_failure(record) or failed_at
        failure = Failure(exc, attempt, first, failed_at)
        headers = self._traced(record, failure_headers(record, self.spec.name, failure))
        self._end_span(record, "dead_lettered", exc)
        self._observer.dead_lettered(exc)
        if self._recent is not None:
            self._recent.add(record_identity(record))
        lane = (record.partition, record.key)
        if lane in self._holds:
            # policy "release": the key's later events go on once this one is parked
            del self._holds[lane]
            return self._emit_journaled(
                record, partition, self._dead_letter_topic, record.value or b"", headers, None
            )
        return self._emit(record, partition, self._dead_letter_topic, record.value or b"", headers)

    def _climb(
        self, record: ConsumerRecord, partition: _Partition, exc: BaseException, attempts: int
    ) -> bool:
        """Send a record that keeps failing to the next rung of the ladder (or the
        dead-letter topic after the last). With ``ordering="key"`` its key is held: later
        events of the key wait until it succeeds or is dead-lettered."""
        rung = rung_of(record, self._levels.get(record.topic, 0))
        total_attempts = rung.attempts + attempts
        level = self._ladder.next_level(rung.level)
        if level is None:
            return self._dead_letter(record, partition, exc, total_attempts, None)
        failed_at = now()
        first = _first_failure(record) or failed_at
        headers = failure_headers(
            record, self.spec.name, Failure(exc, total_attempts, first, failed_at)
        ) + rung_headers(level, self._ladder.due_at_ms(level))
        headers = self._traced(record, headers)
        self._end_span(record, "retried", exc)
        self._observer.retried()
        topic = self.retry_topics[level - 1]
        value = record.value or b""
        if not self._ordered:
            return self._emit(record, partition, topic, value, headers)
        lane = (record.partition, record.key)
        origin = dict(headers)
        hold = Hold(
            level=str(level),
            head="/".join(
                origin[name].decode()
                for name in (
                    "pipeline.origin.topic",
                    "pipeline.origin.partition",
                    "pipeline.origin.offset",
                )
            ),
        )
        self._holds[lane] = hold
        self._emit_journaled(record, partition, topic, value, headers, hold)
        return False  # the lane stays held until the record comes back and succeeds

    def _succeeded(self, record: ConsumerRecord, partition: _Partition, value: bytes) -> bool:
        """Queue a handler's output; a record back from the ladder releases its key."""
        headers = _forwarded(record)
        if self.tracing is not None:
            headers = self._traced(record, headers)
            self._end_span(record, "processed")
        if self._holds:
            lane = (record.partition, record.key)
            if lane in self._holds and self._levels.get(record.topic, 0):
                del self._holds[lane]
                return self._emit_journaled(
                    record, partition, self._sink_topic, value, headers, None
                )
        return self._emit(record, partition, self._sink_topic, value, headers)

    def _emit_journaled(
        self,
        record: ConsumerRecord,
        partition: _Partition,
        topic: str,
        value: bytes,
        headers: Headers,
        hold: Hold | None,
    ) -> bool:
        """Queue an output together with the key's hold (``None``: its release); the
        input finishes only when both are acknowledged."""
        receipt = _Joint(partition, record.offset, 2)
        journal = encode_hold(hold) if hold is not None else None
        try:
            self._sink.append(self.holds_topic, record.key, journal, [], receipt)  # type: ignore[arg-type]
            self._sink.append(topic, record.key, value, headers, receipt)
        except Exception as exc:
            self.fail(exc)
            return False
        return True

    def _emit(
        self,
        record: ConsumerRecord,
        partition: _Partition,
        topic: str,
        value: bytes,
        headers: Headers,
    ) -> bool:
        """Queue the output in order (``True``); the input finishes when the broker
        acknowledges it. The sink keeps per-partition order, so the next record of the key
        may start right away."""
        try:
            self._sink.append(topic, record.key, value, headers, (partition, record.offset))
        except Exception as exc:
            self.fail(exc)
            return False
        return True

    def _delivered(self, receipts: list[Any], delivery: asyncio.Future[Any]) -> None:
        if delivery.cancelled() or delivery.exception() is not None:
            # The producer gave up after its own retries: stop without committing past it.
            self.fail(delivery.exception() or asyncio.CancelledError())
            return
        partitions = self._partitions
        finished = 0
        for receipt in receipts:
            if type(receipt) is _Joint:
                receipt.remaining -= 1
                if receipt.remaining:
                    continue
                partition, offset = receipt.partition, receipt.offset
            else:
                partition, offset = receipt
            if partitions.get(partition.key) is not partition:
                continue  # abandoned on revoke; already uncounted
            partition.offsets.finish(offset)
            finished += 1
        self._in_flight -= finished
        self._observer.finished(self._in_flight)
        if self._in_flight < self._max_in_flight:
            self._capacity.set()
        self._progress.set()

    def fail(self, exc: BaseException) -> None:
        """Stop the stage without committing past unfinished records."""
        if self.failure is None:
            self.failure = exc
            self._observer.ready(False)
            log.error("stage %s failed; stopping without committing", self.spec.name, exc_info=exc)
            if self.on_failure is not None:
                self.on_failure(exc)
        self._capacity.set()
        self._progress.set()
        self._settled.set()  # nothing waits for an assignment that will not come
        self._unsealed.set()

    # -- commits and rebalances ------------------------------------------------------

    async def commit(self, only: Sequence[TopicPartition] | None = None) -> None:
        """Commit every partition whose safe offset moved (or just ``only`` those)."""
        if self._committer is None or self.failure is not None:
            return
        if self.transactions is not None:
            await self._commit_transactions(self.transactions, only)
            return
        async with self._commit_lock:
            chosen = self._chosen(only)
            offsets = _candidates(chosen)
            if not offsets:
                return
            try:
                await self._committer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                # A rebalance is under way; the revoke path commits what it can.
                log.warning("commit of %s failed: %r", self.spec.name, exc)
                return
            self._committed(chosen, offsets)

    def _chosen(self, only: Sequence[TopicPartition] | None) -> list[_Partition]:
        if only is None:
            return list(self._partitions.values())
        wanted = set(only)
        return [p for p in self._partitions.values() if p.tp in wanted]

    def _committed(self, chosen: list[_Partition], offsets: dict[TopicPartition, int]) -> None:
        """Record a successful commit of ``offsets`` and report it."""
        if not offsets:
            return
        for partition in chosen:
            if partition.tp in offsets:
                partition.offsets.mark_committed(offsets[partition.tp])
        self._observer.committed(offsets)
        if self.highwater is not None:
            for tp, offset in offsets.items():
                end = self.highwater(tp)
                if end is not None:
                    self._observer.lag(tp, max(0, end - offset))

    async def _commit_transactions(
        self, transactions: Transactions, only: Sequence[TopicPartition] | None
    ) -> None:
        """``exactly_once``: a barrier, then one transaction commit per input partition.

        Intake stops and the in-flight records finish (except those queued behind a key on
        the ladder), so each transaction holds exactly the outputs of the input offsets it
        commits. A transaction that cannot commit (fenced by a newer owner, timed out)
        stops the stage: its outputs are aborted, and the engine's view of what is
        finished no longer matches Kafka's.
        """
        async with self._commit_lock:
            if self.failure is not None:
                return
            chosen = self._chosen(only)
            self._unsealed.clear()
            try:
                await self._drain(chosen, self._settings.transaction_drain_timeout_s)
                if self.failure is not None:
                    return
                offsets = _candidates(chosen)
                numbers = None if only is None else {tp.partition for tp in only}
                committing = await transactions.begin_commit(offsets, numbers)
            except Exception as exc:
                self.fail(exc)
                return
            finally:
                # Intake goes on while the commit travels: new outputs join the next
                # transactions and their offsets were not part of this one.
                self._unsealed.set()
            try:
                await committing
            except Exception as exc:
                self.fail(exc)
                return
            self._committed(chosen, offsets)

    async def _commit_periodically(self) -> None:
        interval = (
            self._settings.transaction_interval_ms
            if self.transactions is not None
            else self._settings.commit_interval_ms
        ) / 1000
        while True:
            await asyncio.sleep(interval)
            if self.transactions is None:
                await self.commit()
            else:
                # A stop cancels this loop, never a transaction halfway through its
                # commit; the stop's own commit waits for it on the lock.
                await asyncio.shield(self.commit())

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        """The consumer now owns ``partitions`` (called on every rebalance); keys held in
        the journal for them wait before anything of theirs is processed.

        With ``exactly_once`` the partitions' producers start first: that fences an
        earlier owner and settles its open transaction, so the journal and the dedupe
        tails below are read as committed.
        """
        self._settled.clear()
        try:
            await self._settle(partitions)
            self._assigned = set(partitions)
        except Exception as exc:  # nothing of theirs may run without its state
            self.fail(exc)
            return
        finally:
            self._settled.set()
        self._observer.ready(True)

    async def _settle(self, partitions: set[TopicPartition]) -> None:
        if self.transactions is not None:
            await self.transactions.assign({tp.partition for tp in partitions})
        numbers = sorted(tp.partition for tp in partitions if tp.topic == self.source_topic)
        if self._ordered and self.kafka_settings is not None:
            known = {lane[0] for lane in self._holds}
            fresh = [n for n in numbers if n not in known]
            for lane, hold in (
                await load_holds(self.kafka_settings, self.holds_topic, fresh)
            ).items():
                self._holds[lane] = hold
                if not self._lanes.busy(lane):
                    self._lanes.admit(lane, None)
        if self._recent is not None and self.kafka_settings is not None:
            tails = [
                TopicPartition(topic, n)
                for topic in (self._sink_topic, self._dead_letter_topic)
                for n in numbers
            ]
            per_partition = self._settings.dedupe_window // max(1, self.partition_count)
            for event_id in await recent_event_ids(self.kafka_settings, tails, per_partition):
                self._recent.add(event_id)

    async def revoked(self, partitions: set[TopicPartition], timeout_s: float) -> None:
        """Give ``partitions`` back: drain them within ``timeout_s``, commit, forget them."""
        self._settled.clear()
        if self._assigned is not None:
            self._assigned -= partitions
        for tp in partitions:
            timer = self._resume_timers.pop(tp, None)
            if timer is not None:
                timer.cancel()
        leaving = [p for p in self._partitions.values() if p.tp in partitions]
        await self._drain(leaving, timeout_s)
        await self.commit(only=[p.tp for p in leaving])
        if self.transactions is not None:
            try:
                await self.transactions.release({tp.partition for tp in partitions})
            except Exception as exc:
                self.fail(exc)
        numbers = {tp.partition for tp in partitions if tp.topic == self.source_topic}
        for lane in [lane for lane in self._holds if lane[0] in numbers]:
            del self._holds[lane]  # the next owner reads them from the journal
        for partition in leaving:
            self._abandon(partition)

    async def _drain(self, partitions: list[_Partition], timeout_s: float) -> None:
        """Wait until the partitions' records finished, except those waiting behind a
        key on the ladder (they cannot finish now and are redelivered to the next owner)."""
        deadline = time.monotonic() + timeout_s
        while self.failure is None and any(self._drainable(p) for p in partitions):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "%s: drain timed out; unfinished records will be redelivered",
                    self.spec.name,
                )
                return
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                continue

    def _drainable(self, partition: _Partition) -> int:
        in_flight = partition.offsets.in_flight
        if in_flight and self._holds and partition.tp.topic == self.source_topic:
            number = partition.tp.partition
            in_flight -= sum(self._lanes.waiting(lane) for lane in self._holds if lane[0] == number)
        return in_flight

    def _abandon(self, partition: _Partition) -> None:
        key = (partition.tp.topic, partition.tp.partition)
        if self._partitions.get(key) is not partition:
            return
        del self._partitions[key]
        self._in_flight -= partition.offsets.in_flight
        number = partition.tp.partition
        self._lanes.drop([lane for lane in self._lanes.busy_keys() if lane[0] == number])
        self._capacity.set()


def _candidates(partitions: list[_Partition]) -> dict[TopicPartition, int]:
    """The offsets to commit now: every partition whose safe offset moved."""
    offsets: dict[TopicPartition, int] = {}
    for partition in partitions:
        candidate = partition.offsets.commit_candidate()
        if candidate is not None:
            offsets[partition.tp] = candidate
    return offsets


def receipt_partition(receipt: Any) -> int:
    """The input partition number whose record a sink receipt stands for."""
    partition: _Partition = receipt.partition if type(receipt) is _Joint else receipt[0]
    return int(partition.tp.partition)


def _replayed(record: ConsumerRecord) -> bool:
    """Whether an operator sent this record back from a dead-letter topic (its id is
    known from the dead letter, yet it must be processed)."""
    return any(name == REPLAY_OF for name, _ in record.headers or ())


def _first_failure(record: ConsumerRecord) -> Any:
    """When the record first failed at this stage, if it failed before."""
    from datetime import datetime

    for name, value in record.headers or ():
        if name == "pipeline.failure.first_at":
            return datetime.fromisoformat(value.decode())
    return None


def _forwarded(record: ConsumerRecord) -> Headers:
    """The input's headers worth keeping on the output (trace context, not provenance)."""
    headers = record.headers
    if not headers:
        return []
    return [(k, v) for k, v in headers if not k.startswith(HEADER_PREFIX)]
