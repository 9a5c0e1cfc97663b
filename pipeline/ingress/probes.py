"""``/health`` and ``/ready`` of the order API, and its answer when the database is down.

``/health`` says the event loop answers (liveness). ``/ready`` says the database answers
within ``PIPELINE_API_DATABASE_TIMEOUT_S``: without it the API can neither look an order
up nor hold an Idempotency-Key, so a load balancer should send requests elsewhere. Any
request that needs the database while it is down gets 503 with a body that says so and
``Retry-After``; nothing is half-done (a key is not taken, a view not changed).
"""

from __future__ import annotations

import asyncio

from fastapi import FastAPI, Request, status
from fastapi.responses import JSONResponse
from sqlalchemy import text
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.errors import DatabaseUnavailable
from pipeline.ingress.database import database_errors

DATABASE_DOWN = "the order database is unavailable; retry later"
RETRY_AFTER_S = 1


def serve_probes(app: FastAPI, engine: AsyncEngine, timeout_s: float) -> None:
    """Add ``/health``, ``/ready`` and the 503 answer for :class:`DatabaseUnavailable`."""

    @app.get("/health", include_in_schema=False)
    async def health() -> dict[str, str]:
        return {"status": "ok"}

    @app.get("/ready", include_in_schema=False)
    async def ready() -> JSONResponse:
        try:
            await database_answers(engine, timeout_s)
        except DatabaseUnavailable:
            return JSONResponse(
                {"status": "unavailable", "database": "unavailable"},
                status.HTTP_503_SERVICE_UNAVAILABLE,
            )
        return JSONResponse({"status": "ready", "database": "ok"})

    async def database_down(_request: Request, _exc: Exception) -> JSONResponse:
        return JSONResponse(
            {"detail": DATABASE_DOWN},
            status.HTTP_503_SERVICE_UNAVAILABLE,
            headers={"Retry-After": str(RETRY_AFTER_S)},
        )

    app.add_exception_handler(DatabaseUnavailable, database_down)


async def database_answers(engine: AsyncEngine, timeout_s: float) -> None:
    """Return once ``SELECT 1`` answered; :class:`DatabaseUnavailable` otherwise."""
    with database_errors():
        async with asyncio.timeout(timeout_s), engine.connect() as connection:
            await connection.execute(text("SELECT 1"))
