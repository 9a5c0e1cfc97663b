"""``Idempotency-Key`` support for ``POST /orders``.

A client that retries a request with the same key gets the first answer again and
publishes nothing new. The key is held while its request publishes, so two concurrent
requests with one key publish once. A key reused with a different body is refused.

:class:`InMemoryIdempotencyStore` remembers keys in this process only (bounded, with a
time to live); with several replicas, back :class:`IdempotencyStore` with a shared
store — a table with the key as primary key, or Redis ``SET key value NX PX ttl`` —
and hold the key with a row lock or a short lease. Behind all of this the pipeline
also deduplicates records by ``event_id``, so a retried event with the same id is not
processed twice even without a key.
"""

from __future__ import annotations

import asyncio
import hashlib
import time
from collections import OrderedDict
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from dataclasses import dataclass
from typing import Protocol

from pydantic import BaseModel


@dataclass(frozen=True, slots=True)
class Accepted:
    """What the first request with a key was answered, and which body it carried."""

    event_id: str
    fingerprint: str


def fingerprint(event: BaseModel) -> str:
    """A digest of the event as published: equal bodies, equal fingerprints."""
    return hashlib.sha256(event.model_dump_json().encode()).hexdigest()


class IdempotencyStore(Protocol):
    """Remembers which keys were answered, and with what."""

    def hold(self, key: str) -> AbstractAsyncContextManager[None]:
        """Exclusive use of ``key`` while one request with it runs."""
        ...

    async def get(self, key: str) -> Accepted | None:
        """The answer given to ``key``, if it is still remembered."""
        ...

    async def put(self, key: str, accepted: Accepted) -> None:
        """Remember the answer given to ``key``."""
        ...


class InMemoryIdempotencyStore:
    """Keys remembered in this process, the oldest forgotten first."""

    def __init__(
        self,
        ttl_s: float,
        max_keys: int,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_keys = max_keys
        self._clock = clock
        self._answers: OrderedDict[str, tuple[float, Accepted]] = OrderedDict()
        self._locks: dict[str, asyncio.Lock] = {}
        self._waiting: dict[str, int] = {}

    @asynccontextmanager
    async def hold(self, key: str) -> AsyncIterator[None]:
        """Exclusive use of ``key`` in this process."""
        lock = self._locks.setdefault(key, asyncio.Lock())
        self._waiting[key] = self._waiting.get(key, 0) + 1
        try:
            async with lock:
                yield
        finally:
            self._waiting[key] -= 1
            if not self._waiting[key]:  # nobody else queued: forget the lock
                del self._waiting[key], self._locks[key]

    async def get(self, key: str) -> Accepted | None:
        """The remembered answer, unless it expired."""
        found = self._answers.get(key)
        if found is None:
            return None
        stored_at, accepted = found
        if self._clock() - stored_at > self._ttl_s:
            del self._answers[key]
            return None
        return accepted

    async def put(self, key: str, accepted: Accepted) -> None:
        """Remember the answer; beyond ``max_keys`` the oldest key is forgotten."""
        self._answers[key] = (self._clock(), accepted)
        self._answers.move_to_end(key)
        while len(self._answers) > self._max_keys:
            self._answers.popitem(last=False)
