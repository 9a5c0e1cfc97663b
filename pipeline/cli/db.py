"""``pipeline db``: the order API's database — migrate it, and a local PostgreSQL for
development (``pipeline db postgres up|down``)."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Annotated

import typer
from pydantic import SecretStr
from rich.console import Console
from sqlalchemy.engine import URL

from pipeline.errors import ConfigurationError, DatabaseUnavailable
from pipeline.ingress.database import (
    current_revision,
    database_url,
    head_revision,
    masked,
    open_engine,
    upgrade,
)
from pipeline.ingress.database.local_postgres import DEFAULT_PORT, LocalPostgres
from pipeline.settings import IngressSettings, load_settings

db_app = typer.Typer(
    help="The order API's database (PIPELINE_API_DATABASE_URL).", no_args_is_help=True
)
postgres_app = typer.Typer(
    help="A local PostgreSQL on 127.0.0.1 (development, tests).", no_args_is_help=True
)
db_app.add_typer(postgres_app, name="postgres")
console = Console()
err_console = Console(stderr=True)

Home = Annotated[Path, typer.Option(help="Where the server keeps its files.")]
Port = Annotated[int, typer.Option(help="The port it listens on, on 127.0.0.1.")]


def database_url_of(url: SecretStr) -> URL:
    """``url`` parsed, as the API would."""
    return database_url(IngressSettings(database_url=url))


@db_app.command("upgrade")
def upgrade_command() -> None:
    """Migrate the configured database to the newest schema (a release step when
    PIPELINE_API_DATABASE_MIGRATE=false)."""
    api = load_settings().api

    async def run() -> str | None:
        engine = open_engine(api)
        try:
            await upgrade(engine)
            return await current_revision(engine)
        finally:
            await engine.dispose()

    try:
        revision = asyncio.run(run())
    except (ConfigurationError, DatabaseUnavailable) as exc:
        err_console.print(f"[red]not migrated:[/red] {exc!r}", highlight=False)
        raise typer.Exit(1) from exc
    console.print(f"{masked(database_url(api))} is at revision {revision}", highlight=False)


@db_app.command("status")
def status_command() -> None:
    """The revision the configured database is at, and the newest one; exit 1 if behind."""
    api = load_settings().api

    async def run() -> str | None:
        engine = open_engine(api)
        try:
            return await current_revision(engine)
        finally:
            await engine.dispose()

    revision, head = asyncio.run(run()), head_revision()
    console.print(
        f"{masked(database_url(api))}: revision {revision}, newest {head}", highlight=False
    )
    if revision != head:
        raise typer.Exit(1)


@postgres_app.command("up")
def postgres_up(home: Home = Path(".cache/postgres"), port: Port = DEFAULT_PORT) -> None:
    """Create (once) and start the server; print PIPELINE_API_DATABASE_URL for it."""
    server = LocalPostgres(home.resolve(), port)
    url = server.up()
    console.print(f"PostgreSQL at {masked(database_url_of(url))}", highlight=False)
    console.print(
        'export PIPELINE_API_DATABASE_URL="postgresql+asyncpg://pipeline:'
        f'$(cat {server.home / "password"})@127.0.0.1:{port}/postgres"',
        highlight=False,
        soft_wrap=True,
    )


@postgres_app.command("down")
def postgres_down(home: Home = Path(".cache/postgres"), port: Port = DEFAULT_PORT) -> None:
    """Stop the server (its data stays in HOME)."""
    LocalPostgres(home.resolve(), port).down()
