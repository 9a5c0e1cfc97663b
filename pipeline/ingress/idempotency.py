"""``Idempotency-Key`` support for ``POST /orders``.

A client that retries a request with the same key gets the first answer again and
publishes nothing new; a key reused with a different body is refused (409).

A key is taken with an insert-if-absent that carries a lease: the row names the request
holding it (``holder``) and how long it may (``lease_until``). :func:`publish_once`
claims the key, publishes only if its own claim won, then records the event id
(``accept``) — or gives the key up (``release``) when the publish failed, so a retry can
take it at once. A request that finds the key held by another one, on this replica or
another, polls until the holder answered (and answers the same, ``Idempotent-Replayed``)
for at most the publish timeout: the holder has either answered or failed by then.
Still held after that, the request gets 409 "in progress" and may retry. A holder that
died leaves its lease to expire (``PIPELINE_API_IDEMPOTENCY_LEASE_S``); then the next
request takes the key over. Answers are remembered for ``idempotency_ttl_s``.

Behind all of this the pipeline also deduplicates records by ``event_id``, so an event
published twice (a holder that published, then lost its database before recording the
answer) is still processed once.

:class:`~pipeline.ingress.database.SqlIdempotencyStore` keeps keys in the ingress's
database, shared by its replicas; :class:`InMemoryIdempotencyStore` keeps them in this
process (tests).
"""

from __future__ import annotations

import asyncio
import hashlib
import logging
import time
import uuid
from collections import OrderedDict
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, replace
from typing import Protocol

from pydantic import BaseModel

from pipeline.errors import PipelineError

log = logging.getLogger(__name__)

POLL_INTERVAL_S = 0.05
"""How often a request waiting for another holder's answer looks again."""


@dataclass(frozen=True, slots=True)
class KeyRecord:
    """One key as stored: the body it was taken for, by whom, and the answer once given."""

    fingerprint: str
    holder: str
    event_id: str | None = None


@dataclass(frozen=True, slots=True)
class Answer:
    """What ``POST /orders`` answers for a key: the event id, and whether it is a replay."""

    event_id: str
    replayed: bool


class KeyConflict(Exception):
    """The key cannot be used for this request (HTTP 409)."""


class KeyReused(KeyConflict):
    """The key was taken for another body."""


class KeyInUse(KeyConflict):
    """Another request still holds the key after this one waited for its answer."""


def fingerprint(event: BaseModel) -> str:
    """A digest of the event as published: equal bodies, equal fingerprints."""
    return hashlib.sha256(event.model_dump_json().encode()).hexdigest()


class IdempotencyStore(Protocol):
    """Which keys are held or answered, shared by every request that may use them."""

    async def claim(self, key: str, fingerprint: str, holder: str) -> KeyRecord:
        """Take ``key`` for ``holder`` unless it was answered within the TTL or another
        holder's lease is live; the key's record after the attempt, either way."""
        ...

    async def accept(self, key: str, holder: str, event_id: str) -> None:
        """Record the answer of ``holder``'s request (a no-op if it lost the key)."""
        ...

    async def release(self, key: str, holder: str) -> None:
        """Give up ``holder``'s unanswered claim, so that a retry may take the key."""
        ...


async def publish_once(
    store: IdempotencyStore,
    key: str,
    digest: str,
    event_id: str,
    publish: Callable[[], Awaitable[None]],
    *,
    wait_s: float,
) -> Answer:
    """Publish at most once per key: ``publish`` runs only for the request that wins the
    key; others get the winner's answer, or :class:`KeyReused` / :class:`KeyInUse`."""
    holder = uuid.uuid4().hex
    deadline = time.monotonic() + wait_s
    while True:
        record = await store.claim(key, digest, holder)
        if record.fingerprint != digest:
            raise KeyReused(key)
        if record.event_id is not None:
            return Answer(record.event_id, replayed=True)
        if record.holder == holder:
            try:
                await publish()
            except BaseException:
                await asyncio.shield(_release(store, key, holder))
                raise
            await store.accept(key, holder, event_id)
            return Answer(event_id, replayed=False)
        if time.monotonic() >= deadline:
            raise KeyInUse(key)
        await asyncio.sleep(POLL_INTERVAL_S)  # another request holds it: poll its answer


async def _release(store: IdempotencyStore, key: str, holder: str) -> None:
    """Free the key for the client's retry: nothing was answered. (A write that did
    land is deduplicated downstream by its event id.)"""
    try:
        await store.release(key, holder)
    except PipelineError as exc:
        # The request already fails with its own error; this one only delays a retry.
        log.warning("Idempotency-Key stays held until its lease ends: %r", exc)


@dataclass(slots=True)
class _Entry:
    record: KeyRecord
    lease_until: float
    expires_at: float


class InMemoryIdempotencyStore:
    """Keys held in this process, the oldest forgotten first beyond ``max_keys``."""

    def __init__(
        self,
        ttl_s: float,
        max_keys: int,
        lease_s: float = 60.0,
        clock: Callable[[], float] = time.monotonic,
    ) -> None:
        self._ttl_s = ttl_s
        self._max_keys = max_keys
        self._lease_s = lease_s
        self._clock = clock
        self._entries: OrderedDict[str, _Entry] = OrderedDict()

    async def claim(self, key: str, fingerprint: str, holder: str) -> KeyRecord:
        """Take the key unless it is answered and remembered, or held under a live lease."""
        now = self._clock()
        entry = self._entries.get(key)
        if entry is None or entry.expires_at < now or _lapsed(entry, now):
            entry = _Entry(KeyRecord(fingerprint, holder), now + self._lease_s, now + self._ttl_s)
            self._entries[key] = entry
            self._entries.move_to_end(key)
            while len(self._entries) > self._max_keys:
                self._entries.popitem(last=False)
        return entry.record

    async def accept(self, key: str, holder: str, event_id: str) -> None:
        """Record the answer if ``holder`` still holds the key."""
        entry = self._entries.get(key)
        if entry is not None and entry.record.holder == holder:
            entry.record = replace(entry.record, event_id=event_id)

    async def release(self, key: str, holder: str) -> None:
        """Forget ``holder``'s unanswered claim."""
        entry = self._entries.get(key)
        if entry is not None and entry.record.holder == holder and entry.record.event_id is None:
            del self._entries[key]


def _lapsed(entry: _Entry, now: float) -> bool:
    """An unanswered claim whose holder ran out of time (it died or hangs)."""
    return entry.record.event_id is None and entry.lease_until < now
