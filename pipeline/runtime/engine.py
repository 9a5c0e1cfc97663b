"""The stage engine's driver: the asyncio side of the path every record takes.

A batch from the consumer is *submitted*: each record is taken into the stage's
:class:`~pipeline.runtime.core.ledger.StageLedger` and queued in its key's lane. A
lane's head is decoded, handled and its output handed to the producer without waiting;
the next record of the same key may start as soon as the output is *issued*, because
the producer keeps per-partition order. A record is *finished* when the broker
acknowledges its output, and only then may the committed offset pass it. When too many
records are in flight, ``submit`` waits, so the consumer stops fetching and memory stays
flat under any backlog.

What a record's bookkeeping is, and which offsets may be committed, is decided by the
pure core (:mod:`pipeline.runtime.core`); what happens to a failed record lives in
:mod:`pipeline.runtime.outcomes`, commits and rebalances in
:mod:`pipeline.runtime.checkpointing`. This module takes records in and runs handlers.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Sequence
from functools import partial
from typing import Any

from aiokafka.structs import ConsumerRecord, TopicPartition
from pydantic import BaseModel
from tenacity import AsyncRetrying, retry_if_exception, stop_after_attempt, wait_exponential_jitter

from pipeline.errors import NoOutput, UndecodableRecord
from pipeline.failures.classify import Verdict
from pipeline.failures.ladder import rung_of
from pipeline.failures.provenance import RELEASE_DISCARD, REPLAY_OF
from pipeline.kafka.internals import InternalsChanged
from pipeline.runtime.checkpointing import Checkpointing
from pipeline.runtime.core.decisions import (
    Climb,
    DeadLetter,
    FailStage,
    RetryInProcess,
    after_failure,
)
from pipeline.runtime.core.ledger import Lane, PartitionState
from pipeline.runtime.dedupe import record_identity
from pipeline.runtime.eager import Pending, step
from pipeline.runtime.outputs import as_records
from pipeline.runtime.parking import Parking
from pipeline.runtime.ports import (
    StageFailed,
)
from pipeline.runtime.stage import encode

__all__ = ["StageEngine", "StageFailed"]

log = logging.getLogger(__name__)


class StageEngine(Parking, Checkpointing):
    """Runs one stage's records with key-ordered concurrency and a safe commit rule."""

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
        ledger = self._ledger
        partitions = ledger.partitions
        lanes = ledger.lanes
        holds = ledger.holds
        levels = self._levels
        waiting: set[tuple[str, int]] = set()
        control = self._consumer
        positions: dict[tuple[str, int], int] = {}
        last_slot: tuple[str, int] | None = None
        taken_before = ledger.in_flight
        for record in records:
            slot = (record.topic, record.partition)
            if slot in waiting:
                continue  # behind a record that is not due yet: fetched again on resume
            if slot != last_slot and control is not None:
                last_slot = slot
                try:
                    position = control.position(TopicPartition(*slot))
                except InternalsChanged as exc:
                    self.fail(exc)  # not ready, stopped: not an error on every batch
                    raise StageFailed(f"stage {self.spec.name} failed") from exc
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
                partition = ledger.open(TopicPartition(*slot))
                if partition is None:
                    continue
            if not ledger.take(partition, record.offset):
                continue
            lane = (record.partition, record.key)
            if not level and holds and self._is_on_ladder(lane, record):
                self._skip(record, partition)  # redelivered after a crash: already climbing
                continue
            if level and lane in holds:
                # The record the lane waits for, back from the ladder: it goes first.
                if self._process(record, partition):
                    self._continue_lane(record, partition)
            elif holds and (hold := holds.get(lane)) is not None and hold.parked:
                if lanes.busy(lane):
                    lanes.admit(lane, record)  # pragma: no cover - a parked lane is idle
                else:
                    self._take_for_parked_lane(lane, record, partition, hold)
            elif lanes.admit(lane, record):
                self._run_lane(lane, record, partition)
        for slot, position in positions.items():
            # The safe offset may pass the transaction markers behind the batch's last
            # record: the consumer's position skips them, the records' offsets do not.
            partition = partitions.get(slot)
            if partition is not None and slot not in waiting:
                partition.offsets.seen_up_to(position)
        self._observer.taken(max(0, ledger.in_flight - taken_before), ledger.in_flight)
        while ledger.in_flight >= self._max_in_flight and self.failure is None:
            if self._closing:
                return
            self._capacity.clear()
            await self._capacity.wait()

    # -- the per-record path ---------------------------------------------------------

    def _run_lane(
        self, lane: Lane, record: ConsumerRecord | None, partition: PartitionState
    ) -> None:
        """Process the lane's records while each one completes without waiting.

        A lane mixes records of the input and of the retry topics (same partition
        number), so each record is matched with its own partition's state.
        """
        ledger = self._ledger
        lanes = ledger.lanes
        partitions = ledger.partitions
        while record is not None:
            if not self._process(record, partition):
                return  # continues from a callback when the record is done
            if partitions.get(partition.tp) is not partition:
                return  # revoked meanwhile
            record = lanes.release(lane)
            if record is not None and (record.topic, record.partition) != partition.tp:
                found = partitions.get((record.topic, record.partition))
                if found is None:
                    return  # its partition was revoked: the next owner has it
                partition = found

    def _process(self, record: ConsumerRecord, partition: PartitionState) -> bool:
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
            if _is_release_marker(record):
                return self._skip(record, partition)  # its key was released already
            return self._dead_letter(record, partition, UndecodableRecord(str(exc)), 1, None)
        if recent is not None and self._identify(event) in recent and not _replayed(record):
            return self._skip(record, partition)  # redelivered: its output exists already
        batcher = self._batcher
        if batcher is not None:
            batcher.start(event, self._on_batched, (record, partition, event, started))
            return False
        try:
            result = step(self._call(event))
        except Exception as exc:
            return self._on_error(record, partition, event, exc, started)
        if isinstance(result, Pending):
            result.task.add_done_callback(
                partial(self._on_handler_done, record, partition, event, started)
            )
            return False
        return self._handled(record, partition, event, started, result)

    def _handled(
        self,
        record: ConsumerRecord,
        partition: PartitionState,
        event: Any,
        started: float,
        result: Any,
    ) -> bool:
        """The handler succeeded: count it, remember the event, queue its outputs.

        A result that is not an output (see :mod:`pipeline.runtime.outputs`) has its
        record dead-lettered with the reason: it must neither vanish nor stall the
        partition's commit.
        """
        recent = self._recent
        event_id = self._identify(event) if recent is not None else None
        if self._key_of is None and isinstance(result, BaseModel):
            value = encode(result)  # the common case, kept short: one event, same key
            self._observer.handled(time.perf_counter() - started, event)
            if event_id is not None:
                recent.add(event_id)  # type: ignore[union-attr]
            return self._succeeded(record, partition, value, event_id)
        try:
            records = as_records(
                result,
                input_key=record.key,
                sink=self._sink_topic,
                declared=self._declared,
                key_of=self._key_of,
            )
        except Exception as exc:
            problem = exc if isinstance(exc, NoOutput) else NoOutput(repr(exc))
            problem.args = (f"stage {self.spec.name}: {problem}",)
            return self._dead_letter(record, partition, problem, 1, None, event_id)
        self._observer.handled(time.perf_counter() - started, event)
        if event_id is not None:
            recent.add(event_id)  # type: ignore[union-attr]
        if not records:
            self._observer.dropped()
        return self._succeeded_with(record, partition, records, event_id)

    def _skip(self, record: ConsumerRecord, partition: PartitionState) -> bool:
        """Finish a record without output (a duplicate of one already handled)."""
        self._end_span(record, "duplicate")
        self._ledger.finish(partition, record.offset)
        self._observer.deduplicated()
        return True

    def _on_handler_done(
        self,
        record: ConsumerRecord,
        partition: PartitionState,
        event: Any,
        started: float,
        task: asyncio.Task[Any],
    ) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        result = task.result() if exc is None else None
        self._after_handler(record, partition, event, started, result, exc)

    def _on_batched(
        self, token: tuple[ConsumerRecord, PartitionState, Any, float], outcome: Any
    ) -> None:
        """A batched handler's call returned: this event's part of it (an exception
        instance is this event's failure)."""
        record, partition, event, started = token
        if isinstance(outcome, BaseException):
            self._after_handler(record, partition, event, started, None, outcome)
        else:
            self._after_handler(record, partition, event, started, outcome, None)

    def _after_handler(
        self,
        record: ConsumerRecord,
        partition: PartitionState,
        event: Any,
        started: float,
        result: Any,
        exc: BaseException | None,
        attempts_here: int = 1,
    ) -> None:
        """A handler that waited has its outcome: on along the record's path, and on
        with its lane when the output is issued."""
        try:
            if exc is not None:
                issued = self._on_error(record, partition, event, exc, started, attempts_here)
            else:
                issued = self._handled(record, partition, event, started, result)
            if issued:
                self._continue_lane(record, partition)
        except Exception as exc:  # a callback's error would reach no one: stop instead
            self.fail(exc)

    def _continue_lane(self, record: ConsumerRecord, partition: PartitionState) -> None:
        ledger = self._ledger
        if not ledger.current(partition):
            return  # the partition was revoked while this record was away
        lane = (record.partition, record.key)
        following = ledger.lanes.release(lane)
        if following is None:
            return
        own = ledger.partitions.get((following.topic, following.partition))
        if own is not None:
            self._run_lane(lane, following, own)

    def _on_error(
        self,
        record: ConsumerRecord,
        partition: PartitionState,
        event: Any,
        exc: BaseException,
        started: float,
        attempts_here: int = 1,
    ) -> bool:
        """Perform the failure path's decision for a record; ``True`` when its output
        (a retry record or a dead letter) is issued now."""
        verdict = self.spec.error_policy(exc)
        if attempts_here == 1:
            self._observer.failed(exc, verdict)  # in-process attempts count as retries
        level = self._levels.get(record.topic, 0)
        action = after_failure(
            verdict,
            level=level,
            attempts_before=rung_of(record, level).attempts,
            attempts_here=attempts_here,
            in_process_attempts=self._settings.in_process_attempts,
            ladder_levels=self._ladder.levels,
            ordered=self._ordered,
        )
        if isinstance(action, FailStage):
            self.fail(exc)
            return False
        if isinstance(action, Climb) and self._ledger.holds and self._releases_key(record):
            # the replay of a held key's dead letter does not climb: it parks the key again
            action = DeadLetter(action.attempts)
        if isinstance(action, RetryInProcess):
            task = asyncio.ensure_future(self._retry_in_process(event, action.attempts))
            task.add_done_callback(partial(self._on_retried, record, partition, event, started))
            return False
        if isinstance(action, Climb):
            return self._climb(record, partition, exc, action)
        event_id = self._identify(event) if self._recent is not None else None
        return self._dead_letter(record, partition, exc, action.attempts, None, event_id)

    async def _retry_in_process(self, event: Any, attempts: int) -> Any:
        """Up to ``attempts`` further attempts with jittered exponential backoff, well
        inside the poll interval; the key's lane stays held, other keys go on."""
        retrying = AsyncRetrying(
            stop=stop_after_attempt(attempts),
            wait=wait_exponential_jitter(multiplier=0.02, max=0.5, jitter=0.05),
            retry=retry_if_exception(lambda e: self.spec.error_policy(e) is Verdict.RETRY),
            reraise=True,
        )
        async for attempt in retrying:
            with attempt:
                self._observer.retried()
                return await self._call(event)
        raise AssertionError("unreachable: tenacity reraises")  # pragma: no cover

    def _on_retried(
        self,
        record: ConsumerRecord,
        partition: PartitionState,
        event: Any,
        started: float,
        task: asyncio.Task[Any],
    ) -> None:
        if task.cancelled():
            return
        exc = task.exception()
        result = task.result() if exc is None else None
        attempts = self._settings.in_process_attempts
        self._after_handler(record, partition, event, started, result, exc, attempts)


def _is_release_marker(record: ConsumerRecord) -> bool:
    """Whether this is an operator's discard marker (no event; it releases a held key)."""
    return any(name == RELEASE_DISCARD for name, _ in record.headers or ())


def _replayed(record: ConsumerRecord) -> bool:
    """Whether an operator sent this record back from a dead-letter topic (its id is
    known from the dead letter, yet it must be processed)."""
    return any(name == REPLAY_OF for name, _ in record.headers or ())
