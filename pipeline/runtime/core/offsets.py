"""Which offset of a partition is safe to commit.

Records of one partition finish out of order (different keys run concurrently), so the
committed offset may only move up to the lowest record that is not finished yet. This
module holds that rule and nothing else: no Kafka, no clocks.
"""

from __future__ import annotations

from collections import deque


class OffsetWentBackwards(RuntimeError):
    """A commit would move a partition's committed offset backwards."""


class FinishedTwice(RuntimeError):
    """An offset was finished that is not tracked or was finished already."""


class PartitionOffsets:
    """The unfinished offsets of one partition and the offset that is safe to commit.

    Offsets must be :meth:`track`-ed in increasing order (Kafka delivers a partition in
    order); they may :meth:`finish` in any order.
    """

    __slots__ = ("_done", "_highest_tracked", "_pending", "_seen_to", "committed_offset")

    # _pending holds every tracked offset not yet passed by the safe offset, in order;
    # _done those of them that finished out of order (behind an unfinished one).

    def __init__(self, committed_offset: int | None = None) -> None:
        self._pending: deque[int] = deque()
        self._done: set[int] = set()
        self._highest_tracked: int | None = None
        self._seen_to: int | None = None
        self.committed_offset = committed_offset

    def track(self, offset: int) -> bool:
        """Record that ``offset`` has been taken for processing.

        Returns ``False`` (and tracks nothing) for an offset at or below one already
        tracked — a record fetched twice must not be processed twice by this instance —
        or below the committed offset: a fetch from an older position than a previous
        owner's last transaction committed.
        """
        if self._highest_tracked is not None and offset <= self._highest_tracked:
            return False
        if self.committed_offset is not None and offset < self.committed_offset:
            return False
        self._pending.append(offset)
        self._highest_tracked = offset
        return True

    def finish(self, offset: int) -> None:
        """Record that ``offset`` is done (its outputs are acknowledged by the broker).

        Raises :class:`FinishedTwice` for an offset that is not tracked or is finished
        already: counting a record twice would let the commit pass unfinished work.
        """
        pending = self._pending
        if pending and pending[0] == offset:
            pending.popleft()
            done = self._done
            while pending and pending[0] in done:
                done.discard(pending.popleft())
            return
        if not pending or offset < pending[0] or offset > pending[-1] or offset in self._done:
            raise FinishedTwice(f"offset {offset} is not tracked or already finished")
        self._done.add(offset)

    def seen_up_to(self, position: int) -> None:
        """Everything below ``position`` that was not tracked holds no record to process
        (transaction markers); the safe offset may pass it once the tracked ones finish."""
        if self._seen_to is None or position > self._seen_to:
            self._seen_to = position

    @property
    def unfinished(self) -> int:
        """How many tracked offsets have not finished (the work a drain waits for)."""
        return len(self._pending) - len(self._done)

    @property
    def uncommitted(self) -> int:
        """How many tracked offsets the safe offset has not passed yet, finished ones
        behind an unfinished record included."""
        return len(self._pending)

    @property
    def safe_offset(self) -> int | None:
        """The next offset to consume after a restart: one past everything finished below
        the first unfinished record (Kafka's committed-offset convention)."""
        if self._pending:
            return self._pending[0]
        if self._highest_tracked is not None:
            passed = self._highest_tracked + 1
            return passed if self._seen_to is None else max(passed, self._seen_to)
        return self.committed_offset

    def commit_candidate(self) -> int | None:
        """The offset to commit now, or ``None`` when it has not moved since last commit."""
        safe = self.safe_offset
        if safe is None or (self.committed_offset is not None and safe <= self.committed_offset):
            return None
        return safe

    def mark_committed(self, offset: int) -> None:
        """Record a successful commit of ``offset``; refuses to go backwards."""
        if self.committed_offset is not None and offset < self.committed_offset:
            raise OffsetWentBackwards(f"commit {offset} < committed {self.committed_offset}")
        self.committed_offset = offset
