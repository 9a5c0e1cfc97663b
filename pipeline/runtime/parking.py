"""Holding a key until an operator acts (``on_dead_letter="hold"``).

Part of :class:`~pipeline.runtime.engine.StageEngine`. When a key's event is
dead-lettered, the key is *parked*: its hold is journaled with the dead letter, the
dead letter carries the hold's id (``pipeline.hold``), and every later event of the key
— those queued behind it and those still to come — is written to ``<stage>.parked``
and finished, so the partition's commit moves on and other keys never wait.

The operator's replay of the dead letter carries ``pipeline.release.of``: processed
like any record, and when it succeeds its outputs go out with the hold turned
*releasing*. Once that is committed (so every event parked before it is readable), the
parked events are read back and processed in their original order, each with the
release's progress journaled beside its outputs, before anything newer of the key —
which queues in memory meanwhile. A discard marker (``pipeline release.discard``)
releases the parked events without the dead letter. If the replay fails again, the key
stays parked under the same hold; if a released event fails, the key is parked under a
new hold at that event and the events behind it are parked again.
"""

from __future__ import annotations

import asyncio
import time
from typing import TYPE_CHECKING, Any

from aiokafka.structs import ConsumerRecord

from pipeline.errors import UndecodableRecord
from pipeline.failures.classify import Verdict
from pipeline.failures.holds import PARKED, RELEASING, Hold, encode_hold
from pipeline.failures.parked import origin_of, read_parked
from pipeline.failures.provenance import (
    HOLD,
    ORIGIN_OFFSET,
    ORIGIN_PARTITION,
    ORIGIN_TIMESTAMP,
    ORIGIN_TOPIC,
    PARKED_AT,
    RELEASE_DISCARD,
    RELEASE_OF,
    Headers,
    now,
)
from pipeline.runtime.core.ledger import Lane, PartitionState
from pipeline.runtime.core.receipts import Receipt
from pipeline.runtime.outcomes import Outcomes, _forwarded

if TYPE_CHECKING:

    class _Engine:
        def _run_lane(
            self, lane: Lane, record: ConsumerRecord | None, partition: PartitionState
        ) -> None: ...

        def _handled(
            self,
            record: ConsumerRecord,
            partition: PartitionState,
            event: Any,
            started: float,
            result: Any,
        ) -> bool: ...

        async def _retry_in_process(self, event: Any, attempts: int) -> Any: ...

else:
    _Engine = object


def record_key(lane: Lane) -> bytes | None:
    """The record key of ``lane`` (lanes key by the record's key bytes)."""
    key = lane[1]
    if key is None or isinstance(key, bytes):
        return key
    raise TypeError(f"lane key {key!r} is not a record key")


def _header(record: ConsumerRecord, name: str) -> bytes | None:
    for key, value in record.headers or ():
        if key == name:
            return bytes(value)
    return None


class Parking(Outcomes, _Engine):
    """The engine's parking and release paths (part of the stage engine)."""

    # -- a parked key's records ------------------------------------------------------

    def _take_for_parked_lane(
        self, lane: Lane, record: ConsumerRecord, partition: PartitionState, hold: Hold
    ) -> None:
        """A record of a parked key: the replay or discard marker of its hold starts
        the release; anything else is parked behind it."""
        if _header(record, RELEASE_OF) != hold.head.encode():
            self._park(record, partition, hold.head)
            return
        releasing = Hold(RELEASING, hold.head, since_ms=hold.since_ms)
        self._ledger.holds[lane] = releasing
        lanes = self._ledger.lanes
        if not lanes.admit(lane, record):  # pragma: no cover - the lane was idle
            return
        if _header(record, RELEASE_DISCARD) is not None:
            # Nothing to process: the dead letter stays dealt with, the parked events go on.
            if self._emit_all(record, partition, [], [], journal=True, hold=releasing):
                self._start_release(lane, partition, after=record.offset)
            return
        self._run_lane(lane, record, partition)

    def _releases_key(self, record: ConsumerRecord) -> bool:
        """Whether ``record`` is the replay that releases its key's parked events."""
        hold = self._ledger.holds.get((record.partition, record.key))
        return (
            hold is not None
            and hold.level == RELEASING
            and self._in_release is None
            and _header(record, RELEASE_OF) == hold.head.encode()
        )

    def _park(self, record: ConsumerRecord, partition: PartitionState, head: str) -> bool:
        """Write ``record`` to the parked topic under hold ``head``; it finishes when the
        broker has it."""
        origin = dict(record.headers or ())
        headers: Headers = [
            *_forwarded(record),
            (ORIGIN_TOPIC, origin.get(ORIGIN_TOPIC, record.topic.encode())),
            (ORIGIN_PARTITION, origin.get(ORIGIN_PARTITION, str(record.partition).encode())),
            (ORIGIN_OFFSET, origin.get(ORIGIN_OFFSET, str(record.offset).encode())),
            (ORIGIN_TIMESTAMP, origin.get(ORIGIN_TIMESTAMP, str(record.timestamp).encode())),
            (HOLD, head.encode()),
            (PARKED_AT, now().isoformat().encode()),
        ]
        self._observer.parked()
        return self._emit(record, partition, self._parked_topic, record.value or b"", headers)

    def _park_waiting(self, lane: Lane, head: str) -> None:
        """Park the records queued in memory behind ``lane``'s head (it stays busy)."""
        lanes = self._ledger.lanes
        if not lanes.busy(lane):
            return
        for item in lanes.take_waiting(lane):
            partition = (
                None if item is None else self._ledger.partitions.get((item.topic, item.partition))
            )
            if item is not None and partition is not None:
                self._park(item, partition, head)

    # -- a dead letter parks its key -------------------------------------------------

    def _hold_on_dead_letter(
        self,
        record: ConsumerRecord,
        partition: PartitionState,
        value: bytes,
        headers: Headers,
    ) -> bool:
        """Dead-letter ``record`` and park its key (the hold journaled with it)."""
        lane = (record.partition, record.key)
        holds = self._ledger.holds
        current = holds.get(lane)
        in_release = self._in_release == lane
        if current is not None and current.level == RELEASING and not in_release:
            # the replay failed again: the same parked events keep waiting for it
            hold = Hold(PARKED, current.head, since_ms=current.since_ms)
        else:
            hold = Hold(PARKED, origin_of(record), since_ms=int(time.time() * 1000))
        holds[lane] = hold
        headers.append((HOLD, hold.head.encode()))
        issued = self._emit_journaled(
            record, partition, self._dead_letter_topic, value, headers, hold
        )
        if not in_release:  # a release parks what is behind it itself, in order
            self._park_waiting(lane, hold.head)
        self._report_holds()
        return issued

    def _report_holds(self) -> None:
        parked = [hold for hold in self._ledger.holds.values() if hold.since_ms]
        oldest = min((hold.since_ms for hold in parked), default=None)
        self._observer.holding(len(parked), oldest)

    # -- the replay succeeded: release ----------------------------------------------

    def _resume_releases(self) -> None:
        """After an assignment: releases journaled as under way go on."""
        for lane, hold in list(self._ledger.holds.items()):
            if hold.level != RELEASING or lane in self._releases:
                continue
            partition = self._ledger.open((self.source_topic, lane[0]))
            if partition is not None:
                self._start_release(lane, partition, after=None)
        self._report_holds()

    def _trigger_succeeded(
        self,
        record: ConsumerRecord,
        partition: PartitionState,
        records: list[tuple[str, bytes | None, bytes]],
        headers: Headers,
    ) -> bool:
        """The replay's outputs go out with the releasing hold; the parked events follow
        once they are committed. The lane stays busy until then (``False``)."""
        lane = (record.partition, record.key)
        if self._emit_all(
            record, partition, records, headers, journal=True, hold=self._ledger.holds[lane]
        ):
            self._start_release(lane, partition, after=record.offset)
        return False

    def _start_release(self, lane: Lane, partition: PartitionState, after: int | None) -> None:
        """Release ``lane``'s parked events once offset ``after`` of ``partition`` is
        committed (``None``: it is, as after a restart)."""
        task = asyncio.ensure_future(self._release(lane, partition, after))
        self._releases[lane] = task

        def done(task: asyncio.Task[None]) -> None:
            if self._releases.get(lane) is task:
                del self._releases[lane]
            if not task.cancelled() and task.exception() is not None:
                self.fail(task.exception())  # type: ignore[arg-type]

        task.add_done_callback(done)

    async def _release(self, lane: Lane, partition: PartitionState, after: int | None) -> None:
        if after is not None:
            while self.failure is None and (
                partition.offsets.committed_offset is None
                or partition.offsets.committed_offset <= after
            ):
                if not self._ledger.current(partition):
                    return  # revoked: the next owner resumes the release from the journal
                self._commits.clear()
                await self._commits.wait()
        hold = self._ledger.holds.get(lane)
        if hold is None or hold.level != RELEASING or self._kafka is None:
            return
        number, key = lane[0], record_key(lane)
        parked = await read_parked(self._kafka, self._parked_topic, number, key, hold.head)
        virtual = PartitionState((self._parked_topic, number))  # outputs' receipts only
        for index, record in enumerate(parked):
            if index < hold.released:
                continue  # released before a restart
            if not self._ledger.current(partition) or self._ledger.holds.get(lane) is not hold:
                return
            if not await self._release_one(lane, record, virtual):
                # dead-lettered again: the key is parked under a new hold at that event,
                # and the events behind it (then those queued in memory) wait under it
                head = self._ledger.holds[lane].head
                for rest in parked[index + 1 :]:
                    self._park(rest, virtual, head)
                self._park_waiting(lane, head)
                self._resume_lane(lane)
                return
            hold = Hold(RELEASING, hold.head, released=index + 1, since_ms=hold.since_ms)
            self._ledger.holds[lane] = hold
            self._journal(key, hold, virtual)
        del self._ledger.holds[lane]
        self._journal(key, None, virtual)
        self._report_holds()
        self._resume_lane(lane)

    async def _release_one(
        self, lane: Lane, record: ConsumerRecord, virtual: PartitionState
    ) -> bool:
        """Process one parked event; ``False`` when it was dead-lettered (key parked
        again)."""
        started = time.perf_counter()
        self._in_release = lane
        try:
            try:
                event = self._decode(record.value or b"")
            except ValueError as exc:
                self._dead_letter(record, virtual, UndecodableRecord(str(exc)), 1, None)
                return False
            event_id = self._identify(event) if self._recent is not None else None
            if event_id is not None and event_id in self._recent:  # type: ignore[operator]
                return True  # its outputs were written before a restart
            attempts = self._settings.in_process_attempts
            self._in_release = None
            try:
                result = await self._retry_in_process(event, attempts)
            except Exception as exc:
                self._in_release = lane
                if self.spec.error_policy(exc) is Verdict.FAIL_STAGE:
                    self.fail(exc)
                    return False
                self._observer.failed(exc, self.spec.error_policy(exc))
                self._dead_letter(record, virtual, exc, attempts, None, event_id)
                return False
            self._in_release = lane
            self._handled(record, virtual, event, started, result)
            hold = self._ledger.holds.get(lane)
            return hold is not None and hold.level == RELEASING
        finally:
            self._in_release = None

    def _journal(self, key: bytes | None, hold: Hold | None, virtual: PartitionState) -> None:
        """Journal ``hold`` (``None``: released) beside the outputs just queued; in
        exactly-once mode it joins their transaction."""
        entry = encode_hold(hold) if hold is not None else None
        self._sink.append(self.holds_topic, key, entry, [], Receipt(virtual, -1))  # type: ignore[arg-type]

    def _resume_lane(self, lane: Lane) -> None:
        """The release is over: the key's records queued in memory go on."""
        lanes = self._ledger.lanes
        if not lanes.busy(lane):
            return
        following = lanes.release(lane)
        if following is None:
            return
        own = self._ledger.partitions.get((following.topic, following.partition))
        if own is not None:
            self._run_lane(lane, following, own)
