"""Key lanes: records of one key run one after another, different keys run side by side.

A lane is the queue of records waiting behind the one of the same key that is being
processed. The lane exists only while its key has work; an idle key costs nothing.
"""

from __future__ import annotations

from collections import deque
from collections.abc import Hashable, Iterable
from typing import Generic, TypeVar

Item = TypeVar("Item")
Key = TypeVar("Key", bound=Hashable)


class KeyLanes(Generic[Key, Item]):
    """Per-key FIFO queues where only the head of each key may be in progress."""

    __slots__ = ("_waiting",)

    def __init__(self) -> None:
        # key -> records waiting behind the key's record in progress; present while busy
        self._waiting: dict[Key, deque[Item]] = {}

    def admit(self, key: Key, item: Item) -> bool:
        """Queue ``item``; ``True`` when its key was idle and the caller must start it now."""
        waiting = self._waiting.get(key)
        if waiting is None:
            self._waiting[key] = deque()
            return True
        waiting.append(item)
        return False

    def release(self, key: Key) -> Item | None:
        """The key's head finished: the next item to start, or ``None`` (key becomes idle)."""
        waiting = self._waiting.get(key)
        if waiting is None:
            raise KeyError(f"lane {key!r} is not busy")
        if waiting:
            return waiting.popleft()
        del self._waiting[key]
        return None

    def take_waiting(self, key: Key) -> list[Item]:
        """Empty the key's queue (the key stays busy with its item in progress)."""
        waiting = self._waiting.get(key)
        if not waiting:
            return []
        items = list(waiting)
        waiting.clear()
        return items

    def busy(self, key: Key) -> bool:
        """Whether ``key`` has a record in progress."""
        return key in self._waiting

    def drop(self, keys: Iterable[Key]) -> list[Item]:
        """Forget the given lanes (their partition was revoked); returns the queued items."""
        dropped: list[Item] = []
        for key in list(keys):
            waiting = self._waiting.pop(key, None)
            if waiting:
                dropped.extend(waiting)
        return dropped

    def waiting(self, key: Key) -> int:
        """How many items wait behind the key's item in progress."""
        waiting = self._waiting.get(key)
        return len(waiting) if waiting else 0

    def busy_keys(self) -> list[Key]:
        """Keys that currently have a record in progress."""
        return list(self._waiting)

    def __len__(self) -> int:
        return len(self._waiting)
