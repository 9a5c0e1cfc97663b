"""The ingress's database schema and URL handling, on a real SQLite file."""

from __future__ import annotations

from pathlib import Path

import pytest
from alembic.autogenerate import compare_metadata
from alembic.runtime.migration import MigrationContext
from sqlalchemy import Connection

from pipeline.errors import ConfigurationError
from pipeline.ingress import create_ingress
from pipeline.ingress.database import (
    current_revision,
    database_url,
    head_revision,
    masked,
    open_engine,
    upgrade,
)
from pipeline.ingress.database.schema import VERSION_TABLE, metadata
from pipeline.settings import IngressSettings, Settings

SECRET = "s3cr3t-pa55"


def _differences(connection: Connection) -> list[object]:
    context = MigrationContext.configure(connection, opts={"version_table": VERSION_TABLE})
    return list(compare_metadata(context, metadata))


async def test_the_migrations_create_exactly_the_declared_schema(tmp_path: Path) -> None:
    engine = open_engine(IngressSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/db"))
    try:
        assert await current_revision(engine) is None
        await upgrade(engine)
        await upgrade(engine)  # a second start finds nothing to do
        assert await current_revision(engine) == head_revision() is not None
        async with engine.connect() as connection:
            assert await connection.run_sync(_differences) == []
    finally:
        await engine.dispose()


def test_the_default_database_is_an_embedded_sqlite_file(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("PIPELINE_API_DATABASE_URL", raising=False)
    url = database_url(IngressSettings())
    assert url.drivername == "sqlite+aiosqlite"
    assert url.database == ".cache/ingress.db"


@pytest.mark.parametrize(
    "url",
    [
        f"postgresql+psycopg://app:{SECRET}@db/orders",
        f"mysql+aiomysql://app:{SECRET}@db/orders",
        f"not a url {SECRET}",
    ],
)
def test_unsupported_urls_are_refused_without_showing_them(url: str) -> None:
    with pytest.raises(ConfigurationError) as refused:
        database_url(IngressSettings(database_url=url))
    assert SECRET not in str(refused.value)


def test_the_password_is_masked_in_what_is_shown() -> None:
    api = IngressSettings(database_url=f"postgresql+asyncpg://app:{SECRET}@db:5432/orders")
    assert masked(database_url(api)) == "postgresql+asyncpg://app:***@db:5432/orders"
    assert SECRET not in repr(api)
    assert SECRET not in str(open_engine(api).url)


def test_a_key_lease_shorter_than_a_publish_is_refused_when_the_app_is_built(
    tmp_path: Path,
) -> None:
    api = IngressSettings(
        auth_disabled=True,
        database_url=f"sqlite+aiosqlite:///{tmp_path}/db",
        publish_timeout_s=30,
        idempotency_lease_s=20,
    )
    with pytest.raises(ConfigurationError, match="LEASE"):
        create_ingress(Settings(), api)
