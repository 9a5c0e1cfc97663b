"""What an output record carries back to the stage when the broker acknowledges it.

Every input record that produces outputs hands the sink one :class:`Receipt` per
output record; the same receipt object travels with all of them. The input finishes
when the last one is acknowledged — one output (the common case), or an output plus
the key's hold journal entry, which must both be durable before the commit may pass
the input.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from pipeline.runtime.core.ledger import PartitionState


class Receipt:
    """The input record (``partition`` and ``offset``) that an output stands for, and
    how many of that input's outputs are not acknowledged yet."""

    __slots__ = ("offset", "outstanding", "partition")

    def __init__(self, partition: PartitionState, offset: int, outstanding: int = 1) -> None:
        self.partition = partition
        self.offset = offset
        self.outstanding = outstanding

    @property
    def partition_number(self) -> int:
        """The input partition number (which transaction an exactly-once output joins)."""
        return self.partition.number

    def __repr__(self) -> str:
        topic, number = self.partition.tp
        return f"Receipt({topic}[{number}]@{self.offset}, outstanding={self.outstanding})"
