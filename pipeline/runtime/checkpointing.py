"""Commits and rebalances: the engine's asyncio side of the commit rule.

Part of :class:`~pipeline.runtime.engine.StageEngine`. *Which* offsets may be committed,
and when a transaction or a revoke may go ahead, is the pure core's answer
(:mod:`pipeline.runtime.core.checkpoint`); this module waits for it, performs the commit
through the consumer or the transactions, and loads a new assignment's state (held keys
from the journal, recent event ids for deduplication) before any of its records runs.
"""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Mapping, Sequence

from aiokafka.errors import CommitFailedError, KafkaError
from aiokafka.structs import TopicPartition

from pipeline.failures.holds import load_holds
from pipeline.runtime.core.checkpoint import barrier_clear, commit_plan, mark_committed
from pipeline.runtime.core.ledger import PartitionState
from pipeline.runtime.dedupe import recent_event_ids
from pipeline.runtime.ports import ConsumerPort, Transactions
from pipeline.runtime.state import EngineState

log = logging.getLogger(__name__)


class Checkpointing(EngineState):
    """The engine's commit and rebalance paths (part of the stage engine)."""

    # -- lifecycle -------------------------------------------------------------------

    def start(self, consumer: ConsumerPort | None) -> None:
        """Take records from ``consumer`` and commit periodically — through it, or
        through the transactions with exactly_once (``None``: a consumer without a
        group, as in contract tests: nothing to commit or settle)."""
        self._consumer = consumer
        if consumer is None:
            self._settled.set()
        elif self._commit_task is None:
            self._commit_task = asyncio.create_task(self._commit_periodically())
            self._lag_task = asyncio.create_task(self._measure_lag_periodically())

    async def stop(self, timeout_s: float) -> None:
        """Take no more records, let in-flight ones finish within ``timeout_s``, commit."""
        self._closing = True
        self._observer.ready(False)
        self._capacity.set()
        self._settled.set()
        await self._drain(list(self._ledger.partitions.values()), timeout_s)
        for task in (self._commit_task, self._lag_task):
            if task is not None:
                task.cancel()
                await asyncio.gather(task, return_exceptions=True)
        self._commit_task = self._lag_task = None
        await self.commit()

    # -- commits -----------------------------------------------------------------------

    async def commit(self, only: Sequence[TopicPartition] | None = None) -> None:
        """Commit every partition whose safe offset moved (or just ``only`` those)."""
        if self._consumer is None or self.failure is not None:
            return
        if self.transactions is not None:
            await self._commit_transactions(self.transactions, only)
            return
        async with self._commit_lock:
            chosen = self._chosen(only)
            offsets = _as_topic_partitions(commit_plan(chosen))
            if not offsets:
                return
            try:
                await self._consumer.commit(offsets)
            except (CommitFailedError, KafkaError) as exc:
                # A rebalance is under way; the revoke path commits what it can.
                log.warning("commit of %s failed: %r", self.spec.name, exc)
                return
            self._committed(chosen, offsets)

    def _chosen(self, only: Sequence[TopicPartition] | None) -> list[PartitionState]:
        partitions = self._ledger.partitions.values()
        if only is None:
            return list(partitions)
        wanted = set(only)
        return [p for p in partitions if p.tp in wanted]

    def _committed(self, chosen: list[PartitionState], offsets: dict[TopicPartition, int]) -> None:
        """Record a successful commit of ``offsets`` and report it."""
        if not offsets:
            return
        mark_committed(chosen, offsets)
        self._commits.set()  # a release waits for its trigger's commit
        self._observer.committed(offsets)
        if self._consumer is not None:
            for tp, offset in offsets.items():
                end = self._consumer.highwater(tp)
                if end is not None:
                    self._observer.lag(tp, max(0, end - offset))

    async def _commit_transactions(
        self, transactions: Transactions, only: Sequence[TopicPartition] | None
    ) -> None:
        """``exactly_once``: the barrier, then one transaction commit per input partition.

        Intake stops and the in-flight records finish (except those queued behind a key on
        the ladder), so each transaction holds exactly the outputs of the input offsets it
        commits. A transaction that cannot commit (fenced by a newer owner, timed out)
        stops the stage: its outputs are aborted, and the engine's view of what is
        finished no longer matches Kafka's.
        """
        if transactions.spans_partitions:
            only = None  # one transaction holds every partition's outputs
        async with self._commit_lock:
            if self.failure is not None:
                return
            chosen = self._chosen(only)
            self._unsealed.clear()
            try:
                await self._drain(chosen, self._settings.transaction_drain_timeout_s)
                if self.failure is not None:
                    return
                offsets = _as_topic_partitions(commit_plan(chosen))
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

    async def _measure_lag_periodically(self) -> None:
        """The lag of every owned partition, from the broker's end offsets, on a timer.

        Commits report lag too, but a stage that stalls (a handler that never returns,
        intake blocked at the in-flight bound) commits nothing and fetches nothing: only
        asking the broker shows its backlog growing, so the lag alert can fire.
        """
        interval = self._settings.lag_interval_s
        while True:
            await asyncio.sleep(interval)
            consumer = self._consumer
            if consumer is None or not self._ledger.assigned:
                continue
            tps = [TopicPartition(*slot) for slot in self._ledger.assigned]
            try:
                ends = await asyncio.wait_for(consumer.end_offsets(tps), interval)
                group = await asyncio.wait_for(consumer.committed(tps), interval)
            except (KafkaError, TimeoutError) as exc:
                log.debug("%s: lag not measured: %r", self.spec.name, exc)
                continue
            for tp in tps:
                partition = self._ledger.partitions.get(tp)
                mine = partition.offsets.committed_offset if partition is not None else None
                committed = mine if mine is not None else group.get(tp) or 0
                if tp in ends:
                    self._observer.lag(tp, max(0, ends[tp] - committed))

    async def assigned(self, partitions: set[TopicPartition]) -> None:
        """The consumer now owns ``partitions`` (called on every rebalance); keys held in
        the journal for them wait before anything of theirs is processed.

        With ``exactly_once`` the partitions' producers start first: that fences an
        earlier owner and settles its open transaction, so the journal and the dedupe
        tails below are read as committed.
        """
        self._settled.clear()
        try:
            floors = await self._settle(partitions)
            self._ledger.assign(partitions, floors)
            self._resume_releases()
        except Exception as exc:  # nothing of theirs may run without its state
            self.fail(exc)
            return
        finally:
            self._settled.set()
        self._observer.ready(True)

    async def _settle(self, partitions: set[TopicPartition]) -> Mapping[TopicPartition, int]:
        floors: Mapping[TopicPartition, int] = {}
        if self.transactions is not None:
            floors = await self.transactions.assign(partitions)
        numbers = sorted(tp.partition for tp in partitions if tp.topic == self.source_topic)
        ledger = self._ledger
        if self._ordered and self._kafka is not None:
            known = {lane[0] for lane in ledger.holds}
            fresh = [n for n in numbers if n not in known]
            for lane, hold in (await load_holds(self._kafka, self.holds_topic, fresh)).items():
                ledger.holds[lane] = hold
                if not hold.parked and not ledger.lanes.busy(lane):
                    ledger.lanes.admit(lane, None)  # parked keys park, the others wait
        if self._recent is not None and self._kafka is not None:
            tails = [
                TopicPartition(topic, n)
                for topic in (self._sink_topic, self._dead_letter_topic)
                for n in numbers
            ]
            per_partition = self._settings.dedupe_window // max(1, self._source_partitions)
            for event_id in await recent_event_ids(self._kafka, tails, per_partition):
                self._recent.add(event_id)
        return floors

    def _resume_releases(self) -> None:
        """Releases a previous owner left under way go on (parked events still to process,
        from the journal's progress). Part of the parking paths; nothing to resume here."""

    async def revoked(self, partitions: set[TopicPartition], timeout_s: float) -> None:
        """Give ``partitions`` back: drain them within ``timeout_s``, commit, forget them."""
        self._settled.clear()
        self._ledger.disown(partitions)
        numbers = {tp.partition for tp in partitions if tp.topic == self.source_topic}
        for lane in [lane for lane in self._releases if lane[0] in numbers]:
            self._releases.pop(lane).cancel()  # the next owner resumes it from the journal
        for tp in partitions:
            timer = self._resume_timers.pop(tp, None)
            if timer is not None:
                timer.cancel()
        leaving = [p for p in self._ledger.partitions.values() if p.tp in partitions]
        await self._drain(leaving, timeout_s)
        await self.commit(only=[TopicPartition(*p.tp) for p in leaving])
        if self.transactions is not None:
            try:
                await self.transactions.release({tp.partition for tp in partitions})
            except Exception as exc:
                self.fail(exc)
        self._ledger.revoke(partitions, self.source_topic)
        self._capacity.set()
        self._progress.set()

    async def _drain(self, partitions: list[PartitionState], timeout_s: float) -> None:
        """Wait at the barrier: until the partitions' records that can finish have."""
        deadline = time.monotonic() + timeout_s
        ledger, source = self._ledger, self.source_topic
        while self.failure is None and not barrier_clear(ledger, partitions, source):
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


def _as_topic_partitions(plan: dict[tuple[str, int], int]) -> dict[TopicPartition, int]:
    """The core's plan keyed by the consumer's ``TopicPartition`` (it already is one
    when the driver opened the partition; a plain tuple is converted)."""
    return {
        slot if isinstance(slot, TopicPartition) else TopicPartition(*slot): offset
        for slot, offset in plan.items()
    }
