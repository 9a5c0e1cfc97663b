"""The database's part of the API's lifespan: migrate, purge expired keys, close.

It wraps the Kafka router's lifespan, so the schema is current before the projection's
consumer asks the store where to resume, and the pool closes after the consumer stopped.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Callable
from contextlib import AbstractAsyncContextManager, asynccontextmanager
from typing import Any

from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.errors import DatabaseUnavailable
from pipeline.ingress.database.engine import masked
from pipeline.ingress.database.idempotency import SqlIdempotencyStore
from pipeline.ingress.database.migrate import upgrade

log = logging.getLogger(__name__)

PURGE_INTERVAL_S = 600.0
"""How often keys past their TTL are deleted."""


def database_lifespan(
    engine: AsyncEngine, keys: SqlIdempotencyStore, *, migrate: bool
) -> Callable[[Any], AbstractAsyncContextManager[None]]:
    """A FastAPI lifespan that readies ``engine``'s database and closes it after."""

    @asynccontextmanager
    async def lifespan(_app: Any) -> AsyncIterator[None]:
        log.info("order API database: %s", masked(engine.url))
        if migrate:
            await upgrade(engine)
        purging = asyncio.create_task(_purge_expired(keys), name="idempotency-purge")
        try:
            yield
        finally:
            purging.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await purging
            await engine.dispose()

    return lifespan


async def _purge_expired(keys: SqlIdempotencyStore) -> None:
    while True:
        await asyncio.sleep(PURGE_INTERVAL_S)
        try:
            purged = await keys.purge_expired()
        except DatabaseUnavailable as exc:
            log.warning("expired Idempotency-Keys not purged: %s", exc)  # next round
            continue
        if purged:
            log.info("%d expired Idempotency-Keys purged", purged)
