"""The commit rule and the drain barrier, for both processing guarantees.

``at_least_once`` commits each partition's safe offset (one past everything finished
below its first unfinished record) whenever it moved. ``exactly_once`` commits the same
offsets inside the transaction that holds the outputs of the records below them, so a
transaction may only close once every record it covers has finished: that is the
barrier. A revoke waits at the same barrier before it commits and gives partitions
back. Records queued behind a held key cannot finish until the ladder returns their
key's record, so the barrier leaves them out: they stay uncommitted and are redelivered.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any

from pipeline.runtime.core.ledger import PartitionState, Slot, StageLedger


def commit_plan(partitions: Iterable[PartitionState]) -> dict[Slot, int]:
    """The offsets to commit now: each partition whose safe offset moved since its
    last commit, by the slot the driver gave it."""
    plan: dict[Slot, int] = {}
    for partition in partitions:
        candidate = partition.offsets.commit_candidate()
        if candidate is not None:
            plan[partition.tp] = candidate
    return plan


def mark_committed(partitions: Iterable[PartitionState], offsets: Mapping[Slot, int]) -> None:
    """Record a commit of ``offsets``; refuses one that would move backwards."""
    for partition in partitions:
        offset = offsets.get(partition.tp)
        if offset is not None:
            partition.offsets.mark_committed(offset)


def barrier_clear(
    ledger: StageLedger[Any, Any], partitions: Iterable[PartitionState], source_topic: str
) -> bool:
    """Whether every record of ``partitions`` that can finish has finished: a
    transaction covering them may close, a revoke may commit and let them go."""
    return not any(ledger.drainable(partition, source_topic) for partition in partitions)
