"""What becomes of a handled record: its output, a retry rung, or a dead letter.

Part of :class:`~pipeline.runtime.engine.StageEngine`, kept apart so the intake path
reads on its own. Every outcome hands the sink the record's output(s) with one
:class:`~pipeline.runtime.core.receipts.Receipt`; the record finishes when the broker
has acknowledged all of them. A record's failure goes through the stage's error policy:
retried in process, sent up the retry ladder (its key held, with ``ordering="key"``,
until it comes back), dead-lettered, or the stage stops.
"""

from __future__ import annotations

import asyncio
import time
from datetime import datetime

from aiokafka.structs import ConsumerRecord, TopicPartition

from pipeline.failures.holds import Hold, encode_hold
from pipeline.failures.ladder import rung_headers, rung_of
from pipeline.failures.provenance import (
    EVENT_ID,
    HEADER_PREFIX,
    Failure,
    Headers,
    failure_headers,
    now,
)
from pipeline.runtime.core.decisions import Climb
from pipeline.runtime.core.ledger import Lane, PartitionState
from pipeline.runtime.core.receipts import Receipt
from pipeline.runtime.dedupe import record_identity
from pipeline.runtime.outputs import Record
from pipeline.runtime.state import EngineState


class Outcomes(EngineState):
    """The engine's outcome paths (part of the stage engine)."""

    # -- retry topics: a record is taken only when due -------------------------------

    def _is_on_ladder(self, lane: Lane, record: ConsumerRecord) -> bool:
        hold = self._ledger.holds.get(lane)
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
        if delay_s <= 0 or self._consumer is None:
            return False
        tp = TopicPartition(record.topic, record.partition)
        self._consumer.pause(tp)
        self._consumer.seek(tp, record.offset)
        previous = self._resume_timers.pop(tp, None)
        if previous is not None:
            previous.cancel()
        loop = asyncio.get_running_loop()
        self._resume_timers[tp] = loop.call_later(delay_s, self._resume, tp)
        return True

    def _resume(self, tp: TopicPartition) -> None:
        self._resume_timers.pop(tp, None)
        if self._consumer is not None and self._ledger.owns(tp):
            self._consumer.resume(tp)

    # -- tracing ---------------------------------------------------------------------

    def _traced(self, record: ConsumerRecord, headers: Headers) -> Headers:
        """``headers`` carrying the record's span as the parent of what comes next."""
        if self.tracing is None:
            return headers
        span = self._spans.get(id(record))
        return self.tracing.inject(span, headers) if span is not None else headers

    def _end_span(
        self,
        record: ConsumerRecord,
        outcome: str,
        error: BaseException | None = None,
    ) -> None:
        if self.tracing is not None:
            span = self._spans.pop(id(record), None)
            if span is not None:
                self.tracing.end(span, outcome, error)

    # -- failures --------------------------------------------------------------------

    def _dead_letter(
        self,
        record: ConsumerRecord,
        partition: PartitionState,
        exc: BaseException,
        attempt: int,
        first_failure_at: datetime | None,
        event_id: str | None = None,
    ) -> bool:
        """Send ``record`` to the dead-letter topic with its provenance; ``event_id``:
        the input's identity, when it decoded and the stage identifies its events."""
        failed_at = now()
        first = first_failure_at or _first_failure(record) or failed_at
        failure = Failure(exc, attempt, first, failed_at)
        headers = self._traced(record, failure_headers(record, self.spec.name, failure))
        self._end_span(record, "dead_lettered", exc)
        self._observer.dead_lettered(exc)
        if self._recent is not None:
            if event_id is None:
                self._recent.add(record_identity(record))
            else:
                headers.append((EVENT_ID, event_id.encode()))
                self._recent.add(event_id)
        value = record.value or b""
        if self._parks and record.key is not None:  # policy "hold": the key stops here
            return self._hold_on_dead_letter(record, partition, value, headers)
        # policy "release": the key's later events go on once this one is parked
        if self._ledger.holds and self._release_hold(record, back_from_ladder=False):
            return self._emit_journaled(
                record, partition, self._dead_letter_topic, value, headers, None
            )
        return self._emit(record, partition, self._dead_letter_topic, value, headers)

    def _climb(
        self,
        record: ConsumerRecord,
        partition: PartitionState,
        exc: BaseException,
        climb: Climb,
    ) -> bool:
        """Send a record that keeps failing to the ladder's rung ``climb.level``. With
        ``climb.hold`` its key is held: later events of the key wait until it succeeds
        or is dead-lettered."""
        level, total_attempts = climb.level, climb.attempts
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
        if not climb.hold:
            return self._emit(record, partition, topic, value, headers)
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
        self._ledger.holds[(record.partition, record.key)] = hold
        self._emit_journaled(record, partition, topic, value, headers, hold)
        return False  # the lane stays held until the record comes back and succeeds

    # -- outputs ---------------------------------------------------------------------

    def _succeeded(
        self,
        record: ConsumerRecord,
        partition: PartitionState,
        value: bytes,
        event_id: str | None,
    ) -> bool:
        """Queue a handler's output, stamped with the input's ``event_id`` when the stage
        identifies its events; a record back from the ladder releases its key."""
        headers = self._output_headers(record, event_id, "processed")
        if self._ledger.holds:
            if self._releases_key(record):
                output = [(self._sink_topic, record.key, value)]
                return self._trigger_succeeded(record, partition, output, headers)
            if self._release_hold(record, back_from_ladder=True):
                return self._emit_journaled(
                    record, partition, self._sink_topic, value, headers, None
                )
        return self._emit(record, partition, self._sink_topic, value, headers)

    def _succeeded_with(
        self,
        record: ConsumerRecord,
        partition: PartitionState,
        records: list[Record],
        event_id: str | None,
    ) -> bool:
        """Queue a handler's output records (none: dropped), as :meth:`_succeeded`."""
        headers = self._output_headers(record, event_id, "processed" if records else "dropped")
        if self._ledger.holds and self._releases_key(record):
            return self._trigger_succeeded(record, partition, records, headers)
        release = bool(self._ledger.holds) and self._release_hold(record, back_from_ladder=True)
        if not records and not release:
            self._ledger.finish(partition, record.offset)
            return True
        return self._emit_all(record, partition, records, headers, journal=release, hold=None)

    # -- parking (pipeline.runtime.parking provides these) -----------------------------

    def _hold_on_dead_letter(
        self, record: ConsumerRecord, partition: PartitionState, value: bytes, headers: Headers
    ) -> bool:
        """Dead-letter ``record`` and park its key."""
        raise NotImplementedError

    def _releases_key(self, record: ConsumerRecord) -> bool:
        """Whether ``record`` is the replay that releases its key's parked events."""
        raise NotImplementedError

    def _trigger_succeeded(
        self,
        record: ConsumerRecord,
        partition: PartitionState,
        records: list[Record],
        headers: Headers,
    ) -> bool:
        """The releasing replay succeeded: its outputs, then the parked events."""
        raise NotImplementedError

    def _output_headers(
        self, record: ConsumerRecord, event_id: str | None, outcome: str
    ) -> Headers:
        """The headers of a record's outputs: the input's own (trace context, not
        provenance), the input's identity when the stage identifies its events, and the
        record's span as their parent (ending it with ``outcome``)."""
        headers = _forwarded(record)
        if event_id is not None:
            headers.append((EVENT_ID, event_id.encode()))
        if self.tracing is not None:
            headers = self._traced(record, headers)
            self._end_span(record, outcome)
        return headers

    def _release_hold(self, record: ConsumerRecord, *, back_from_ladder: bool) -> bool:
        """Release the key of ``record`` if it is held — only when the record came back
        from the ladder, with ``back_from_ladder`` (an output), or in any case (a dead
        letter: policy "release"); whether it was. The release must be journaled with
        the record's output."""
        lane = (record.partition, record.key)
        holds = self._ledger.holds
        if lane not in holds or (back_from_ladder and not self._levels.get(record.topic, 0)):
            return False
        del holds[lane]
        return True

    def _emit_journaled(
        self,
        record: ConsumerRecord,
        partition: PartitionState,
        topic: str,
        value: bytes,
        headers: Headers,
        hold: Hold | None,
    ) -> bool:
        """Queue an output together with the key's hold (``None``: its release); the
        input finishes only when both are acknowledged."""
        records = [(topic, record.key, value)]
        return self._emit_all(record, partition, records, headers, journal=True, hold=hold)

    def _emit_all(
        self,
        record: ConsumerRecord,
        partition: PartitionState,
        records: list[Record],
        headers: Headers,
        *,
        journal: bool,
        hold: Hold | None,
    ) -> bool:
        """Queue ``records`` in order, after the key's journal entry when ``journal``
        (``hold``, or ``None`` for its release); the input finishes when the broker has
        acknowledged every one of them."""
        receipt = Receipt(partition, record.offset, len(records) + journal)
        try:
            if journal:
                entry = encode_hold(hold) if hold is not None else None
                self._sink.append(self.holds_topic, record.key, entry, [], receipt)  # type: ignore[arg-type]
            for topic, key, value in records:
                self._sink.append(topic, key, value, headers, receipt)
        except Exception as exc:
            self.fail(exc)
            return False
        return True

    def _emit(
        self,
        record: ConsumerRecord,
        partition: PartitionState,
        topic: str,
        value: bytes,
        headers: Headers,
    ) -> bool:
        """Queue the output in order (``True``); the input finishes when the broker
        acknowledges it. The sink keeps per-partition order, so the next record of the key
        may start right away."""
        try:
            self._sink.append(topic, record.key, value, headers, Receipt(partition, record.offset))
        except Exception as exc:
            self.fail(exc)
            return False
        return True


def _first_failure(record: ConsumerRecord) -> datetime | None:
    """When the record first failed at this stage, if it failed before."""
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
