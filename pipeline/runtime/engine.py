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
from collections.abc import Callable, Sequence
from functools import partial
from typing import Any, Protocol

from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import ConsumerRecord, TopicPartition
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from pipeline.errors import PipelineError, UndecodableRecord
from pipeline.failures.classify import Verdict
from pipeline.failures.provenance import HEADER_PREFIX, Failure, Headers, failure_headers, now
from pipeline.kafka.topology import Naming
from pipeline.runtime.eager import Pending, step
from pipeline.runtime.key_lanes import KeyLanes
from pipeline.runtime.observer import StageObserver
from pipeline.runtime.offsets import PartitionOffsets
from pipeline.runtime.stage import StageSpec, encode
from pipeline.services import Services
from pipeline.settings import StageSettings

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
        self.services = services
        self._settings = settings
        self._sink = sink
        sink.bind(self._delivered)
        self._observer = observer
        self._decode = spec.decoder()
        self._handler = spec.handler
        self._lanes: KeyLanes[Lane, ConsumerRecord] = KeyLanes()
        self._partitions: dict[tuple[str, int], _Partition] = {}
        self._assigned: set[TopicPartition] | None = None
        self._max_in_flight = settings.max_in_flight
        self._in_flight = 0
        self._capacity = asyncio.Event()
        self._progress = asyncio.Event()
        self._committer: OffsetCommitter | None = None
        self._commit_lock = asyncio.Lock()
        self._commit_task: asyncio.Task[None] | None = None
        self._closing = False
        self.failure: BaseException | None = None
        self.on_failure: Callable[[BaseException], None] | None = None
        self.highwater: Callable[[TopicPartition], int | None] | None = None

    # -- lifecycle -------------------------------------------------------------------

    def start(self, committer: OffsetCommitter | None) -> None:
        """Begin periodic commits through ``committer`` (``None``: nothing to commit)."""
        self._committer = committer
        if committer is not None and self._commit_task is None:
            self._commit_task = asyncio.create_task(self._commit_periodically())

    async def stop(self, timeout_s: float) -> None:
        """Take no more records, let in-flight ones finish within ``timeout_s``, commit."""
        self._closing = True
        self._capacity.set()
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
        if self.failure is not None:
            raise StageFailed(f"stage {self.spec.name} failed") from self.failure
        if self._closing:
            return  # never tracked, never committed: the next owner gets them
        partitions = self._partitions
        lanes = self._lanes
        taken = 0
        for record in records:
            partition = partitions.get((record.topic, record.partition))
            if partition is None:
                partition = self._open_partition(record.topic, record.partition)
                if partition is None:
                    continue
            if not partition.offsets.track(record.offset):
                continue
            taken += 1
            lane = (record.partition, record.key)
            if lanes.admit(lane, record):
                self._run_lane(lane, record, partition)
        self._in_flight += taken
        self._observer.taken(taken, self._in_flight)
        while self._in_flight >= self._max_in_flight and self.failure is None:
            if self._closing:
                return
            self._capacity.clear()
            await self._capacity.wait()

    def _open_partition(self, topic: str, number: int) -> _Partition | None:
        tp = TopicPartition(topic, number)
        if self._assigned is not None and tp not in self._assigned:
            return None  # fetched before a revoke: no longer ours
        partition = _Partition(tp)
        self._partitions[(topic, number)] = partition
        return partition

    # -- the per-record path ---------------------------------------------------------

    def _run_lane(self, lane: Lane, record: ConsumerRecord | None, partition: _Partition) -> None:
        """Process the lane's records while each one completes without waiting."""
        lanes = self._lanes
        while record is not None:
            if not self._process(record, partition):
                return  # continues from a callback when the record is done
            if self._partitions.get((record.topic, record.partition)) is not partition:
                return  # revoked meanwhile
            record = lanes.release(lane)

    def _process(self, record: ConsumerRecord, partition: _Partition) -> bool:
        """Start one record; ``True`` when its output is already issued."""
        started = time.perf_counter()
        try:
            event = self._decode(record.value or b"")
        except ValueError as exc:  # pydantic's ValidationError is a ValueError
            return self._dead_letter(record, partition, UndecodableRecord(str(exc)), 1, None)
        try:
            result = step(self._handler(event, self.services))
        except Exception as exc:
            return self._on_error(record, partition, event, exc, started)
        if isinstance(result, Pending):
            result.task.add_done_callback(
                partial(self._on_handler_done, record, partition, event, started)
            )
            return False
        self._observer.handled(time.perf_counter() - started, event)
        return self._emit(record, partition, self._sink_topic, encode(result), _forwarded(record))

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
            self._observer.handled(time.perf_counter() - started, event)
            issued = self._emit(
                record, partition, self._sink_topic, encode(task.result()), _forwarded(record)
            )
        if issued:
            self._continue_lane(record, partition)

    def _continue_lane(self, record: ConsumerRecord, partition: _Partition) -> None:
        if self._partitions.get((record.topic, record.partition)) is not partition:
            return  # the partition was revoked while this record was away
        lane = (record.partition, record.key)
        self._run_lane(lane, self._lanes.release(lane), partition)

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
        if verdict is Verdict.RETRY and self.spec.in_process_attempts > 1:
            task = asyncio.ensure_future(self._retry_in_process(event, now()))
            task.add_done_callback(partial(self._on_retried, record, partition, event, started))
            return False
        return self._dead_letter(record, partition, exc, 1, None)

    async def _retry_in_process(self, event: Any, first_failure_at: Any) -> Any:
        """Further attempts with jittered exponential backoff, well inside the poll
        interval; the key's lane stays held, other keys go on."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(self.spec.in_process_attempts - 1),
            wait=wait_exponential_jitter(initial=0.02, max=0.5, jitter=0.05),
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
            self._observer.handled(time.perf_counter() - started, event)
            issued = self._emit(
                record, partition, self._sink_topic, encode(task.result()), _forwarded(record)
            )
        elif self.spec.error_policy(exc) is Verdict.FAIL_STAGE:
            self.fail(exc)
            return
        else:
            issued = self._dead_letter(record, partition, exc, self.spec.in_process_attempts, None)
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
        failure = Failure(exc, attempt, first_failure_at or failed_at, failed_at)
        headers = failure_headers(record, self.spec.name, failure)
        self._observer.dead_lettered(exc)
        return self._emit(record, partition, self._dead_letter_topic, record.value or b"", headers)

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

    def _delivered(
        self, receipts: list[tuple[_Partition, int]], delivery: asyncio.Future[Any]
    ) -> None:
        if delivery.cancelled() or delivery.exception() is not None:
            # The producer gave up after its own retries: stop without committing past it.
            self.fail(delivery.exception() or asyncio.CancelledError())
            return
        partitions = self._partitions
        finished = 0
        for partition, offset in receipts:
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
            log.error("stage %s failed; stopping without committing", self.spec.name, exc_info=exc)
            if self.on_failure is not None:
                self.on_failure(exc)
        self._capacity.set()
        self._progress.set()

    # -- commits and rebalances ------------------------------------------------------

    async def commit(self, only: Sequence[TopicPartition] | None = None) -> None:
        """Commit every partition whose safe offset moved (or just ``only`` those)."""
        if self._committer is None or self.failure is not None:
            return
        async with self._commit_lock:
            chosen = (
                self._partitions.values()
                if only is None
                else [p for p in self._partitions.values() if p.tp in set(only)]
            )
            offsets: dict[TopicPartition, int] = {}
            for partition in chosen:
                candidate = partition.offsets.commit_candidate()
                if candidate is not None:
                    offsets[partition.tp] = candidate
            if not offsets:
                return
            try:
                await self._committer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                # A rebalance is under way; the revoke path commits what it can.
                log.warning("commit of %s failed: %r", self.spec.name, exc)
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

    async def _commit_periodically(self) -> None:
        interval = self._settings.commit_interval_ms / 1000
        while True:
            await asyncio.sleep(interval)
            await self.commit()

    def assigned(self, partitions: set[TopicPartition]) -> None:
        """The consumer now owns ``partitions`` (called on every rebalance)."""
        self._assigned = set(partitions)
        self._observer.ready(True)

    async def revoked(self, partitions: set[TopicPartition], timeout_s: float) -> None:
        """Give ``partitions`` back: drain them within ``timeout_s``, commit, forget them."""
        if self._assigned is not None:
            self._assigned -= partitions
        leaving = [p for p in self._partitions.values() if p.tp in partitions]
        await self._drain(leaving, timeout_s)
        await self.commit(only=[p.tp for p in leaving])
        for partition in leaving:
            self._abandon(partition)

    async def _drain(self, partitions: list[_Partition], timeout_s: float) -> None:
        deadline = time.monotonic() + timeout_s
        while self.failure is None and any(p.offsets.in_flight for p in partitions):
            remaining = deadline - time.monotonic()
            if remaining <= 0:
                log.warning(
                    "%s: drain timed out; unfinished records will be redelivered", self.spec.name
                )
                return
            self._progress.clear()
            try:
                await asyncio.wait_for(self._progress.wait(), remaining)
            except TimeoutError:
                continue

    def _abandon(self, partition: _Partition) -> None:
        key = (partition.tp.topic, partition.tp.partition)
        if self._partitions.get(key) is not partition:
            return
        del self._partitions[key]
        self._in_flight -= partition.offsets.in_flight
        number = partition.tp.partition
        self._lanes.drop([lane for lane in self._lanes.busy_keys() if lane[0] == number])
        self._capacity.set()


def _forwarded(record: ConsumerRecord) -> Headers:
    """The input's headers worth keeping on the output (trace context, not provenance)."""
    headers = record.headers
    if not headers:
        return []
    return [(k, v) for k, v in headers if not k.startswith(HEADER_PREFIX)]
