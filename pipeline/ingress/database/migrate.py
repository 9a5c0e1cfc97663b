"""Bring the ingress's database to the newest schema with Alembic.

Run at API start-up (``PIPELINE_API_DATABASE_MIGRATE``, on by default) and by ``pipeline
db upgrade``. On PostgreSQL the upgrade holds a transaction-scoped advisory lock, so
replicas starting together migrate one after another and the later ones find nothing
to do.
"""

from __future__ import annotations

from pathlib import Path

from alembic import command
from alembic.config import Config
from alembic.runtime.migration import MigrationContext
from alembic.script import ScriptDirectory
from sqlalchemy import Connection, text
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.ingress.database.engine import database_errors
from pipeline.ingress.database.schema import VERSION_TABLE

MIGRATIONS = Path(__file__).with_name("migrations")
ADVISORY_LOCK = 7_240_117
"""The PostgreSQL advisory lock id that serialises concurrent upgrades."""


async def upgrade(engine: AsyncEngine) -> None:
    """Apply every migration the database has not had yet."""
    with database_errors():
        async with engine.begin() as connection:
            await connection.run_sync(_upgrade)


async def current_revision(engine: AsyncEngine) -> str | None:
    """The revision the database is at (``None``: never migrated)."""
    with database_errors():
        async with engine.connect() as connection:
            return await connection.run_sync(_revision_of)


def head_revision() -> str | None:
    """The newest revision the code knows."""
    return ScriptDirectory.from_config(_config()).get_current_head()


def _upgrade(connection: Connection) -> None:
    if connection.dialect.name == "postgresql":
        connection.execute(text("SELECT pg_advisory_xact_lock(:id)"), {"id": ADVISORY_LOCK})
    config = _config()
    config.attributes["connection"] = connection
    command.upgrade(config, "head")


def _revision_of(connection: Connection) -> str | None:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return context.get_current_revision()


def _config() -> Config:
    config = Config()
    config.set_main_option("script_location", str(MIGRATIONS))
    return config
