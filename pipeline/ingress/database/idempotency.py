"""Idempotency-Keys in the ingress's database, shared by its replicas.

``claim`` is one insert-if-absent: ``INSERT ... ON CONFLICT (key) DO UPDATE`` that takes
the row over only when it is stale (its answer past the TTL, or its holder's lease run
out), then reads the row back in the same transaction. Two replicas claiming one key at
once both write the same statement; the database orders them, the second finds the
first's live row, and both read who holds it. Times are milliseconds of the replicas'
wall clocks: keep the lease well above the publish timeout plus their skew.
"""

from __future__ import annotations

import time
from collections.abc import Callable

from sqlalchemy import and_, delete, or_, select, update
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.ingress.database.engine import database_errors
from pipeline.ingress.database.schema import idempotency_keys
from pipeline.ingress.database.upsert import insert_into
from pipeline.ingress.idempotency import KeyRecord

KEYS = idempotency_keys.c


class SqlIdempotencyStore:
    """Keys in ``idempotency_keys``, remembered ``ttl_s``, held ``lease_s`` at most."""

    def __init__(
        self,
        engine: AsyncEngine,
        ttl_s: float,
        lease_s: float,
        clock: Callable[[], float] = time.time,
    ) -> None:
        self._engine = engine
        self._ttl_ms = round(ttl_s * 1000)
        self._lease_ms = round(lease_s * 1000)
        self._clock = clock

    async def claim(self, key: str, fingerprint: str, holder: str) -> KeyRecord:
        """Take the key unless it is answered and remembered, or held under a live lease."""
        now = self._now_ms()
        insert = insert_into(self._engine, idempotency_keys)
        new = insert.excluded
        stale = or_(
            KEYS.expires_at_ms < now,
            and_(KEYS.event_id.is_(None), KEYS.lease_until_ms < now),
        )
        take = insert.on_conflict_do_update(
            index_elements=[KEYS.idempotency_key],
            set_={
                "fingerprint": new.fingerprint,
                "holder": new.holder,
                "event_id": None,
                "lease_until_ms": new.lease_until_ms,
                "expires_at_ms": new.expires_at_ms,
            },
            where=stale,
        )
        row = {
            "idempotency_key": key,
            "fingerprint": fingerprint,
            "holder": holder,
            "event_id": None,
            "lease_until_ms": now + self._lease_ms,
            "expires_at_ms": now + self._ttl_ms,
        }
        read = select(KEYS.fingerprint, KEYS.holder, KEYS.event_id).where(
            KEYS.idempotency_key == key
        )
        with database_errors():
            async with self._engine.begin() as connection:
                await connection.execute(take, row)
                found = (await connection.execute(read)).one()
        return KeyRecord(found.fingerprint, found.holder, found.event_id)

    async def accept(self, key: str, holder: str, event_id: str) -> None:
        """Record the answer; remembered for the TTL from now."""
        answered = (
            update(idempotency_keys)
            .where(KEYS.idempotency_key == key, KEYS.holder == holder, KEYS.event_id.is_(None))
            .values(event_id=event_id, expires_at_ms=self._now_ms() + self._ttl_ms)
        )
        with database_errors():
            async with self._engine.begin() as connection:
                await connection.execute(answered)

    async def release(self, key: str, holder: str) -> None:
        """Delete ``holder``'s unanswered claim."""
        released = delete(idempotency_keys).where(
            KEYS.idempotency_key == key, KEYS.holder == holder, KEYS.event_id.is_(None)
        )
        with database_errors():
            async with self._engine.begin() as connection:
                await connection.execute(released)

    async def purge_expired(self) -> int:
        """Delete keys past their TTL; how many. (Run now and then: rows are small, but
        every accepted request with a key leaves one.)"""
        expired = delete(idempotency_keys).where(KEYS.expires_at_ms < self._now_ms())
        with database_errors():
            async with self._engine.begin() as connection:
                result = await connection.execute(expired)
        return int(result.rowcount)

    def _now_ms(self) -> int:
        return round(self._clock() * 1000)
