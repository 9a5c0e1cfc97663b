"""A stage's bookkeeping: its partitions, key lanes, held keys and in-flight total.

Glossary
  slot        a (topic, partition) pair; the driver passes aiokafka's ``TopicPartition``,
              which is one
  lane        the records of one key in one partition number (the input topic and the
              stage's retry topics share it); only the lane's head is in progress
  hold        a key whose record is on the retry ladder: its later records wait
  in flight   records taken and not finished (outputs not yet acknowledged)
  finished    a record whose outputs the broker acknowledged, or that needed none

The ledger answers questions and applies events; it never decides a record's fate. Its
invariants — the total equals the records taken and not finished, nothing finishes
twice, a revoke forgets exactly what it gives back — are model-checked in
``tests/unit/test_core_model.py``.
"""

from __future__ import annotations

from collections.abc import Hashable, Iterable, Iterator, Mapping
from typing import Generic, TypeVar

from pipeline.runtime.core.lanes import KeyLanes
from pipeline.runtime.core.offsets import PartitionOffsets
from pipeline.runtime.core.receipts import Receipt

Slot = tuple[str, int]
Lane = tuple[int, Hashable]
Item = TypeVar("Item")
HoldT = TypeVar("HoldT")


class PartitionState:
    """One assigned partition's offsets; a new one each time the partition is
    assigned, so late news about an earlier assignment is recognised by identity."""

    __slots__ = ("number", "offsets", "tp")

    def __init__(self, tp: Slot, committed_offset: int | None = None) -> None:
        self.tp = tp
        self.number = tp[1]
        self.offsets = PartitionOffsets(committed_offset)

    def __repr__(self) -> str:
        return f"PartitionState({self.tp[0]}[{self.number}])"


class StageLedger(Generic[Item, HoldT]):
    """Partitions, lanes, holds and the in-flight total of one stage."""

    __slots__ = ("_assigned", "_floors", "holds", "in_flight", "lanes", "partitions")

    def __init__(self) -> None:
        self.partitions: dict[Slot, PartitionState] = {}
        # lanes queue records of a busy key; ``None`` marks a lane held since start-up
        # (its record is on the ladder, known from the journal, not from a fetch)
        self.lanes: KeyLanes[Lane, Item | None] = KeyLanes()
        self.holds: dict[Lane, HoldT] = {}
        self.in_flight = 0
        self._assigned: set[Slot] | None = None
        self._floors: dict[Slot, int] = {}

    # -- assignment ------------------------------------------------------------------

    @property
    def assigned(self) -> set[Slot] | None:
        """The slots the consumer owns; ``None`` before the first assignment (every
        slot is accepted then: a consumer without a group)."""
        return self._assigned

    def assign(self, slots: Iterable[Slot], committed: Mapping[Slot, int] | None = None) -> None:
        """The consumer now owns ``slots`` (a rebalance's full assignment); ``committed``
        offsets, where known, are floors: no record below one is taken."""
        self._assigned = set(slots)
        self._floors = dict(committed or {})

    def disown(self, slots: Iterable[Slot]) -> None:
        """Take no more records of ``slots`` (a revoke has begun)."""
        if self._assigned is not None:
            self._assigned -= set(slots)

    def owns(self, slot: Slot) -> bool:
        """Whether records of ``slot`` may be taken."""
        return self._assigned is None or slot in self._assigned

    def open(self, slot: Slot) -> PartitionState | None:
        """The slot's state, created on its first record; ``None`` when not owned."""
        partition = self.partitions.get(slot)
        if partition is None:
            if not self.owns(slot):
                return None  # fetched before a revoke: no longer ours
            partition = self.partitions[slot] = PartitionState(slot, self._floors.get(slot))
        return partition

    def current(self, partition: PartitionState) -> bool:
        """Whether ``partition`` is still the live state of its slot (not revoked)."""
        return self.partitions.get(partition.tp) is partition

    # -- records ---------------------------------------------------------------------

    def take(self, partition: PartitionState, offset: int) -> bool:
        """Track a fetched record; ``False`` (nothing tracked) for one seen already."""
        if not partition.offsets.track(offset):
            return False
        self.in_flight += 1
        return True

    def finish(self, partition: PartitionState, offset: int) -> bool:
        """A record finished; ``False`` when its partition was revoked meanwhile (it
        was uncounted then)."""
        if self.partitions.get(partition.tp) is not partition:
            return False
        partition.offsets.finish(offset)
        self.in_flight -= 1
        return True

    def acknowledged(self, receipts: Iterable[Receipt]) -> int:
        """Outputs the broker acknowledged; returns how many inputs finished."""
        partitions = self.partitions
        finished = 0
        for receipt in receipts:
            receipt.outstanding -= 1
            if receipt.outstanding:
                continue
            partition = receipt.partition
            if partitions.get(partition.tp) is not partition:
                continue  # revoked meanwhile: uncounted then
            partition.offsets.finish(receipt.offset)
            finished += 1
        self.in_flight -= finished
        return finished

    # -- holds and drains ------------------------------------------------------------

    def held_in(self, number: int) -> Iterator[Lane]:
        """The held lanes of partition number ``number``."""
        return (lane for lane in self.holds if lane[0] == number)

    def drainable(self, partition: PartitionState, source_topic: str) -> int:
        """Unfinished records of ``partition`` that can finish now: all but those
        queued behind a held key of the input topic (they wait for the ladder and are
        redelivered to the next owner)."""
        unfinished = partition.offsets.unfinished
        if unfinished and self.holds and partition.tp[0] == source_topic:
            lanes = self.lanes
            unfinished -= sum(lanes.waiting(lane) for lane in self.held_in(partition.number))
        return unfinished

    # -- revokes ---------------------------------------------------------------------

    def revoke(self, slots: Iterable[Slot], source_topic: str) -> list[Item]:
        """Give ``slots`` back: forget their state, their lanes and the holds of their
        input partitions (the next owner reads those from the journal). Unfinished
        records leave the in-flight total; the queued records are returned."""
        gone = set(slots)
        if self._assigned is not None:
            self._assigned -= gone
        numbers = {number for topic, number in gone if topic == source_topic}
        for lane in [lane for lane in self.holds if lane[0] in numbers]:
            del self.holds[lane]
        for slot in gone:
            partition = self.partitions.pop(slot, None)
            if partition is not None:
                self.in_flight -= partition.offsets.unfinished
        # Every lane of the numbers given back goes, also those of a partition that never
        # had a record fetched: a lane held from the journal at assignment would stay
        # busy without its hold, and the key's records would queue behind it for good
        # when the partition came back.
        given_back = {number for _, number in gone}
        lanes = [lane for lane in self.lanes.busy_keys() if lane[0] in given_back]
        return [item for item in self.lanes.drop(lanes) if item is not None]
