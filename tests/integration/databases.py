"""The ingress's databases in tests: a fresh SQLite file, a fresh PostgreSQL database."""

from __future__ import annotations

import tempfile
import uuid
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path

from pydantic import SecretStr
from sqlalchemy import text
from sqlalchemy.engine import make_url
from sqlalchemy.ext.asyncio import create_async_engine

ROOT = Path(__file__).resolve().parents[2]
POSTGRES_HOME = ROOT / ".cache" / "postgres"
"""The session's local PostgreSQL server (kept between sessions; delete it to start afresh)."""


def sqlite_url(directory: Path) -> str:
    """The URL of an SQLite database file in ``directory``."""
    return f"sqlite+aiosqlite:///{directory / 'ingress.db'}"


def fresh_sqlite_url() -> str:
    """The URL of an SQLite file in a new temporary directory."""
    return sqlite_url(Path(tempfile.mkdtemp(prefix="ingress-db-")))


@asynccontextmanager
async def fresh_postgres_database(server_url: SecretStr) -> AsyncIterator[SecretStr]:
    """A new, empty database on the server of ``server_url``; dropped afterwards."""
    name = f"t{uuid.uuid4().hex[:12]}"
    admin = create_async_engine(server_url.get_secret_value(), isolation_level="AUTOCOMMIT")
    try:
        async with admin.connect() as connection:
            await connection.execute(text(f'CREATE DATABASE "{name}"'))
        url = make_url(server_url.get_secret_value()).set(database=name)
        yield SecretStr(url.render_as_string(hide_password=False))
        async with admin.connect() as connection:
            await connection.execute(text(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)'))
    finally:
        await admin.dispose()
