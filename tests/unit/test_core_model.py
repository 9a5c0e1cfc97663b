"""The engine's pure core, model-checked: random fetches, out-of-order completions,
retries that hold a key, dead letters, acknowledgements in any order, commits, revokes
and reassignments — with the invariants checked after every step.

The machine drives the core the way the driver (:mod:`pipeline.runtime.engine`) does:
a record is taken into the ledger and admitted to its key's lane; only a lane's head
runs; a finished handler issues its output with a receipt and releases the lane's next
record; a record that climbs the ladder holds its key until it comes back.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, invariant, precondition, rule

from pipeline.runtime.core.checkpoint import barrier_clear, commit_plan, mark_committed
from pipeline.runtime.core.ledger import PartitionState, StageLedger
from pipeline.runtime.core.receipts import Receipt

pytestmark = pytest.mark.unit

SOURCE = "in"
RETRY = "in.retry.1"
NUMBERS = (0, 1)
KEYS = ("a", "b", "c")


@dataclass(eq=False)
class Rec:
    """A record as the model knows it."""

    topic: str
    number: int
    offset: int
    key: str
    partition: PartitionState
    origin: int  # the input offset it stands for (a retry record: its original's)


@dataclass
class Log:
    """One partition of the input topic: its records' keys and the group's commit."""

    keys: list[str] = field(default_factory=list)
    committed: int = 0
    position: int = 0


class CoreMachine(RuleBasedStateMachine):
    def __init__(self) -> None:
        super().__init__()
        self.ledger: StageLedger[Rec, str] = StageLedger()
        self.logs = {n: Log() for n in NUMBERS}
        self.retry_log: list[Rec] = []  # records on the ladder, in the retry topic
        self.retry_position = dict.fromkeys(NUMBERS, 0)
        self.running: list[Rec] = []  # handlers started, not completed
        self.unacked: list[tuple[Receipt, Rec]] = []
        self.unfinished: dict[PartitionState, set[int]] = {}  # by identity
        # per (partition number, key): the input offsets whose output left, first time only
        self.outputs: dict[tuple[int, str], list[int]] = {}
        self.output_seen: set[tuple[int, int]] = set()
        self.ledger.assign([(SOURCE, n) for n in NUMBERS] + [(RETRY, n) for n in NUMBERS])

    # -- the driver's rules, performed on the core ---------------------------------------

    def _take(self, rec: Rec) -> bool:
        if not self.ledger.take(rec.partition, rec.offset):
            return False
        self.unfinished.setdefault(rec.partition, set()).add(rec.offset)
        return True

    def _finished(self, rec: Rec) -> None:
        self.unfinished[rec.partition].discard(rec.offset)

    def _issue(self, rec: Rec, outputs: int = 1) -> None:
        receipt = Receipt(rec.partition, rec.offset, outputs)
        for _ in range(outputs):
            self.unacked.append((receipt, rec))

    def _continue_lane(self, rec: Rec) -> None:
        if not self.ledger.current(rec.partition):
            return  # revoked while the record ran: its lane is gone with it
        following = self.ledger.lanes.release((rec.number, rec.key))
        if following is not None:
            self.running.append(following)

    @rule(number=st.sampled_from(NUMBERS), keys=st.lists(st.sampled_from(KEYS), max_size=5))
    def fetch(self, number: int, keys: list[str]) -> None:
        log = self.logs[number]
        if not self.ledger.owns((SOURCE, number)):
            return
        log.keys.extend(keys)
        partition = self.ledger.open((SOURCE, number))
        assert partition is not None
        while log.position < len(log.keys):
            offset = log.position
            log.position += 1
            rec = Rec(SOURCE, number, offset, log.keys[offset], partition, offset)
            if self._take(rec) and self.ledger.lanes.admit((number, rec.key), rec):
                self.running.append(rec)

    @precondition(lambda self: self.running)
    @rule(pick=st.integers(min_value=0), outcome=st.sampled_from(["ok", "ok", "retry", "dlq"]))
    def complete(self, pick: int, outcome: str) -> None:
        rec = self.running.pop(pick % len(self.running))
        lane = (rec.number, rec.key)
        current = self.ledger.current(rec.partition)
        if outcome == "retry" and rec.topic == SOURCE and current:
            self.ledger.holds[lane] = f"{rec.topic}/{rec.number}/{rec.offset}"
            self._issue(rec, outputs=2)  # the retry record and the hold's journal entry
            self.retry_log.append(rec)
            return  # the lane stays busy: later records of the key wait
        if current and (rec.number, rec.origin) not in self.output_seen:
            # Its output or dead letter. A redelivered record's output again is a
            # duplicate (deduplicated by event id in the engine), not a reorder: the
            # first outcome of each input counts. A revoked partition's late outputs
            # are dropped with exactly_once; with at_least_once the revoke's drain
            # exists to keep them from arriving late.
            self.output_seen.add((rec.number, rec.origin))
            self.outputs.setdefault((rec.number, rec.key), []).append(rec.origin)
        if rec.topic == RETRY and lane in self.ledger.holds and current:
            del self.ledger.holds[lane]  # back from the ladder: the key is released
            self._issue(rec, outputs=2)
        else:
            self._issue(rec)
        self._continue_lane(rec)

    @precondition(lambda self: self.retry_log)
    @rule(pick=st.integers(min_value=0))
    def ladder_returns(self, pick: int) -> None:
        """A record on the ladder is fetched from the retry topic and runs first."""
        index = pick % len(self.retry_log)
        slot = (RETRY, self.retry_log[index].number)
        if not self.ledger.owns(slot):
            return  # the retry record stays in Kafka for whoever owns the partition
        original = self.retry_log.pop(index)
        partition = self.ledger.open(slot)
        assert partition is not None
        offset = self.retry_position[original.number]
        self.retry_position[original.number] += 1
        rec = Rec(RETRY, original.number, offset, original.key, partition, original.origin)
        if self._take(rec):
            self.running.append(rec)

    @precondition(lambda self: self.unacked)
    @rule(data=st.data())
    def acknowledge(self, data: st.DataObject) -> None:
        count = data.draw(st.integers(min_value=1, max_value=len(self.unacked)))
        chosen = data.draw(st.permutations(range(len(self.unacked))))[:count]
        acked = [self.unacked[i] for i in chosen]
        self.unacked = [u for i, u in enumerate(self.unacked) if i not in set(chosen)]
        self._acknowledged(acked)

    def _acknowledged(self, acked: list[tuple[Receipt, Rec]]) -> None:
        self.ledger.acknowledged(receipt for receipt, _ in acked)
        for receipt, rec in acked:
            if receipt.outstanding == 0 and self.ledger.current(rec.partition):
                self._finished(rec)

    @rule()
    def commit(self) -> None:
        partitions = list(self.ledger.partitions.values())
        plan = commit_plan(partitions)
        for slot, offset in plan.items():
            partition = self.ledger.partitions[slot]
            pending = self.unfinished.get(partition, set())
            assert all(offset <= o for o in pending), (slot, offset, pending)
            if slot[0] == SOURCE:
                self.logs[slot[1]].committed = offset
        mark_committed(partitions, plan)

    @rule(number=st.sampled_from(NUMBERS), drained=st.booleans())
    def revoke(self, number: int, drained: bool) -> None:
        """Give partition ``number`` back; a drain that did not clear the barrier in
        time (``drained`` false) commits only what finished."""
        slots = [(SOURCE, number), (RETRY, number)]
        if not self.ledger.owns(slots[0]):
            return
        self.ledger.disown(slots)
        leaving = [p for s, p in self.ledger.partitions.items() if s in slots]
        if drained:
            self.acknowledge_everything_of(leaving)
            assert barrier_clear(self.ledger, leaving, SOURCE)
        self.commit()
        self.ledger.revoke(slots, SOURCE)
        log = self.logs[number]
        log.position = log.committed  # the next owner starts at the commit

    def acknowledge_everything_of(self, partitions: list[PartitionState]) -> None:
        """Run the partitions' handlers and acknowledge outputs until nothing of theirs
        can move (what a drain waits for)."""
        ids = set(partitions)
        while True:
            mine = [r for r in self.running if r.partition in ids]
            if mine:
                self.running.remove(mine[0])
                self.running.append(mine[0])
                self.complete(len(self.running) - 1, "ok")
                continue
            acked = [(r, rec) for r, rec in self.unacked if r.partition in ids]
            if not acked:
                return
            self.unacked = [u for u in self.unacked if u[0].partition not in ids]
            self._acknowledged(acked)

    @rule(number=st.sampled_from(NUMBERS))
    def reassign(self, number: int) -> None:
        slots = [(SOURCE, number), (RETRY, number)]
        owned = self.ledger.assigned or set()
        if slots[0] in owned:
            return
        self.ledger.assign(owned | set(slots))
        # keys held on the ladder for this partition are known from the journal
        for rec in self.retry_log:
            if rec.number == number:
                lane = (number, rec.key)
                self.ledger.holds[lane] = "journal"
                if not self.ledger.lanes.busy(lane):
                    self.ledger.lanes.admit(lane, None)

    # -- invariants ----------------------------------------------------------------------

    @invariant()
    def in_flight_is_taken_and_not_finished(self) -> None:
        live = set(self.ledger.partitions.values())
        expected = sum(len(offsets) for pid, offsets in self.unfinished.items() if pid in live)
        assert self.ledger.in_flight == expected

    @invariant()
    def committed_offset_never_passes_unfinished_work(self) -> None:
        for partition in self.ledger.partitions.values():
            committed = partition.offsets.committed_offset
            pending = self.unfinished.get(partition, set())
            if committed is not None and pending:
                assert committed <= min(pending), (partition, committed, pending)

    @invariant()
    def drain_waits_only_for_work_that_can_finish(self) -> None:
        for partition in self.ledger.partitions.values():
            pending = self.unfinished.get(partition, set())
            parked = 0
            if partition.tp[0] == SOURCE:
                parked = sum(
                    self.ledger.lanes.waiting(lane)
                    for lane in self.ledger.holds
                    if lane[0] == partition.number
                )
            assert self.ledger.drainable(partition, SOURCE) == len(pending) - parked

    @invariant()
    def each_keys_outputs_leave_in_input_order(self) -> None:
        for origins in self.outputs.values():
            assert origins == sorted(origins), origins


CoreMachine.TestCase.settings = settings(
    max_examples=500,
    stateful_step_count=60,
    deadline=None,
    suppress_health_check=[HealthCheck.too_slow],
)
test_core_model = CoreMachine.TestCase


def _checked(machine: CoreMachine) -> None:
    machine.in_flight_is_taken_and_not_finished()
    machine.committed_offset_never_passes_unfinished_work()
    machine.drain_waits_only_for_work_that_can_finish()
    machine.each_keys_outputs_leave_in_input_order()


def test_a_drain_does_not_wait_for_a_record_parked_behind_a_held_key() -> None:
    """Shrunk by the machine when ``unfinished`` counted finished records: offset 0
    climbs the ladder, offset 1 (same key) is parked behind it, offset 2 finishes."""
    machine = CoreMachine()
    machine.fetch(number=0, keys=["a", "a"])
    machine.complete(pick=0, outcome="retry")
    machine.fetch(number=0, keys=["b"])
    _checked(machine)
    machine.revoke(number=0, drained=True)  # asserts the barrier is clear
    _checked(machine)
    assert machine.ledger.in_flight == 0


def test_a_revoke_forgets_each_unfinished_record_once() -> None:
    """Shrunk by the machine when a revoke subtracted finished records again."""
    machine = CoreMachine()
    machine.fetch(number=0, keys=["a", "b"])
    machine.complete(pick=1, outcome="ok")
    machine._acknowledged(list(machine.unacked))
    machine.unacked.clear()
    machine.revoke(number=0, drained=False)
    _checked(machine)
    assert machine.ledger.in_flight == 0


def test_a_key_held_from_the_journal_is_not_left_busy_when_its_partition_goes() -> None:
    """Shrunk by the machine: a partition assigned (its held key loaded from the
    journal) and revoked before any record of it was fetched kept the key's lane busy
    without a hold; when it came back, the key's records queued behind nothing."""
    machine = CoreMachine()
    machine.fetch(number=0, keys=["a"])
    machine.complete(pick=0, outcome="retry")
    machine.revoke(number=0, drained=False)
    machine.reassign(number=0)  # the hold comes back from the journal
    machine.revoke(number=0, drained=False)  # gone again before any fetch
    machine.ladder_returns(pick=0)  # another owner's business now
    machine.retry_log.clear()  # ... which released the key meanwhile
    machine.reassign(number=0)
    machine.fetch(number=0, keys=[])
    _checked(machine)
    assert machine.running, "the key's record must run, not wait behind a stale lane"
    machine.revoke(number=0, drained=True)
