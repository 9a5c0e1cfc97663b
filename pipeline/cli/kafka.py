"""``pipeline kafka up|down|status``: the single-node broker for development and tests."""

from __future__ import annotations

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.kafka.local import LocalKafka, LocalKafkaError
from pipeline.settings import load_settings

kafka_app = typer.Typer(
    help="Run a single-node Apache Kafka (KRaft) on 127.0.0.1 from Maven Central jars.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)


def _local_kafka() -> LocalKafka:
    return LocalKafka(load_settings().local_kafka)


def _print_error(headline: str, error: LocalKafkaError) -> None:
    # The message carries log lines like "[2025-01-01 ...] WARN": escape them, they are not markup.
    err_console.print(f"[red]{headline}:[/red] {escape(str(error))}", highlight=False)


@kafka_app.command()
def up() -> None:
    """Fetch the jars if needed, start the broker, and wait until it serves."""
    settings = load_settings()
    local_kafka = LocalKafka(settings.local_kafka)
    try:
        with console.status(f"Starting Kafka {settings.local_kafka.version}..."):
            bootstrap = local_kafka.up()
    except LocalKafkaError as error:
        _print_error("Kafka did not start", error)
        raise typer.Exit(code=1) from error
    console.print(f"[green]Kafka serves[/green] [bold]{bootstrap}[/bold]")
    console.print(f"log: {local_kafka.log_path}")
    if settings.kafka.bootstrap_servers != bootstrap:
        console.print(
            f"[yellow]PIPELINE_KAFKA_BOOTSTRAP_SERVERS is {settings.kafka.bootstrap_servers}; "
            f"set it to {bootstrap} to use this broker.[/yellow]"
        )


@kafka_app.command()
def down() -> None:
    """Stop the broker; its data stays for the next ``up``."""
    local_kafka = _local_kafka()
    pid = local_kafka.status().pid
    try:
        stopped = local_kafka.down()
    except LocalKafkaError as error:
        _print_error("Kafka did not stop", error)
        raise typer.Exit(code=1) from error
    console.print(f"Stopped Kafka (pid {pid})." if stopped else "Kafka was not running.")


@kafka_app.command()
def status() -> None:
    """Show whether the broker runs; exit 1 when it does not."""
    current = _local_kafka().status()
    state = (
        f"[green]running[/green] (pid {current.pid})" if current.running else "[red]stopped[/red]"
    )
    console.print(f"Kafka: {state}")
    console.print(f"bootstrap: {current.bootstrap}")
    console.print(f"home: {current.home}")
    console.print(f"log: {current.log_path}")
    if not current.running:
        raise typer.Exit(code=1)
