"""The ingress's database connection: one SQLAlchemy asyncio engine, built from
``PIPELINE_API_DATABASE_URL``, and the translation of its failures.

Two databases are supported, through one code path: SQLite (``sqlite+aiosqlite``, the
embedded default, a file for one replica) and PostgreSQL (``postgresql+asyncpg``, shared
by every replica). Anything else is refused when the engine is built. The URL may carry
a password: it is only ever logged through :func:`masked`.
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import event
from sqlalchemy.engine import URL, make_url
from sqlalchemy.exc import ArgumentError, DBAPIError, InterfaceError, OperationalError
from sqlalchemy.exc import TimeoutError as PoolTimeout
from sqlalchemy.ext.asyncio import AsyncEngine, create_async_engine

from pipeline.errors import ConfigurationError, DatabaseUnavailable
from pipeline.settings import IngressSettings

log = logging.getLogger(__name__)

DRIVERS = {"sqlite": "aiosqlite", "postgresql": "asyncpg"}
"""Dialect -> the asyncio driver it is used with."""


def database_url(api: IngressSettings) -> URL:
    """The configured URL, parsed; a :class:`ConfigurationError` when it is unusable."""
    try:
        url = make_url(api.database_url.get_secret_value())
    except ArgumentError as exc:
        # The message must not quote the URL: it may hold a password.
        raise ConfigurationError("PIPELINE_API_DATABASE_URL is not a database URL") from exc
    if url.get_backend_name() not in DRIVERS or url.get_driver_name() != DRIVERS.get(
        url.get_backend_name()
    ):
        supported = ", ".join(f"{name}+{driver}" for name, driver in DRIVERS.items())
        raise ConfigurationError(
            f"PIPELINE_API_DATABASE_URL uses {url.drivername}; supported: {supported}"
        )
    return url


def masked(url: URL) -> str:
    """The URL as it may be logged: the password replaced by ``***``."""
    return url.render_as_string(hide_password=True)


def open_engine(api: IngressSettings) -> AsyncEngine:
    """An engine for the configured database; nothing connects until first use."""
    url = database_url(api)
    timeout = api.database_timeout_s
    if url.get_backend_name() == "sqlite":
        return _sqlite_engine(url, timeout)
    return create_async_engine(
        url,
        pool_size=api.database_pool_size,
        max_overflow=api.database_pool_size,
        pool_timeout=timeout,
        # A connection that died with the server (a restart, a failover) is noticed
        # and replaced before a request uses it, not reported to the client.
        pool_pre_ping=True,
        connect_args={"timeout": timeout, "command_timeout": timeout},
    )


def _sqlite_engine(url: URL, timeout: float) -> AsyncEngine:
    # aiosqlite logs every statement with its parameters at DEBUG, and those hold
    # customer ids (owners, Idempotency-Keys): quiet it, as SQLAlchemy quiets its own
    # loggers, unless a level was set for it on purpose.
    driver_log = logging.getLogger("aiosqlite")
    if driver_log.level == logging.NOTSET:
        driver_log.setLevel(logging.WARNING)
    if url.database and url.database != ":memory:":
        Path(url.database).parent.mkdir(parents=True, exist_ok=True)
    engine = create_async_engine(url, connect_args={"timeout": timeout})

    @event.listens_for(engine.sync_engine, "connect")
    def _configure(connection: Any, _record: Any) -> None:
        cursor = connection.cursor()
        # WAL: readers (GET /orders) never wait for the projection's writes. NORMAL
        # sync may lose the last commits on a power cut, never consistency: views and
        # their offsets roll back together and the records are read again.
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=NORMAL")
        cursor.execute(f"PRAGMA busy_timeout={int(timeout * 1000)}")
        cursor.close()

    return engine


@contextmanager
def database_errors() -> Iterator[None]:
    """Turn the driver's "cannot reach the database" failures into
    :class:`DatabaseUnavailable`; anything else (a bug) propagates unchanged."""
    try:
        yield
    except (OperationalError, InterfaceError, PoolTimeout, OSError, TimeoutError) as exc:
        raise DatabaseUnavailable(type(exc).__name__) from exc
    except DBAPIError as exc:
        if exc.connection_invalidated or isinstance(exc.orig, OSError):
            raise DatabaseUnavailable(type(exc).__name__) from exc
        raise
