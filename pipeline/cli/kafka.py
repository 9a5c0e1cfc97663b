"""``pipeline kafka up|down|status``: a local Kafka for development and tests — one node,
or a cluster of several (``--brokers 3``)."""

from __future__ import annotations

from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.kafka.local import LocalKafka, LocalKafkaError, LocalKafkaStatus
from pipeline.kafka.local_cluster import LocalCluster
from pipeline.settings import load_settings

kafka_app = typer.Typer(
    help="Run Apache Kafka (KRaft) on 127.0.0.1 from Maven Central jars: one node or a cluster.",
    no_args_is_help=True,
)
console = Console()
err_console = Console(stderr=True)

Brokers = Annotated[
    int | None,
    typer.Option(
        "--brokers",
        min=1,
        help="Nodes: 1, or a cluster (3: replication 3, min.insync.replicas 2). "
        "Default: PIPELINE_LOCAL_KAFKA_BROKERS.",
    ),
]


def _local(brokers: int | None) -> LocalKafka | LocalCluster:
    settings = load_settings().local_kafka
    count = brokers or settings.brokers
    return LocalKafka(settings) if count == 1 else LocalCluster(settings, count)


def _print_error(headline: str, error: LocalKafkaError) -> None:
    # The message carries log lines like "[2025-01-01 ...] WARN": escape them, they are not markup.
    err_console.print(f"[red]{headline}:[/red] {escape(str(error))}", highlight=False)


@kafka_app.command()
def up(brokers: Brokers = None) -> None:
    """Fetch the jars if needed, start the node(s), and wait until they serve."""
    settings = load_settings()
    local = _local(brokers)
    try:
        with console.status(f"Starting Kafka {settings.local_kafka.version}..."):
            bootstrap = local.up()
    except LocalKafkaError as error:
        _print_error("Kafka did not start", error)
        raise typer.Exit(code=1) from error
    console.print(f"[green]Kafka serves[/green] [bold]{bootstrap}[/bold]")
    if settings.kafka.bootstrap_servers != bootstrap:
        console.print(
            f"[yellow]PIPELINE_KAFKA_BOOTSTRAP_SERVERS is {settings.kafka.bootstrap_servers}; "
            f"set it to {bootstrap} to use this Kafka.[/yellow]"
        )


@kafka_app.command()
def down(brokers: Brokers = None) -> None:
    """Stop the node(s); the data stays for the next ``up``."""
    local = _local(brokers)
    try:
        stopped = local.down()
    except LocalKafkaError as error:
        _print_error("Kafka did not stop", error)
        raise typer.Exit(code=1) from error
    console.print("Stopped Kafka." if stopped else "Kafka was not running.")


@kafka_app.command()
def status(brokers: Brokers = None) -> None:
    """Show whether the node(s) run; exit 1 unless all do."""
    local = _local(brokers)
    nodes: list[LocalKafkaStatus] = (
        local.status() if isinstance(local, LocalCluster) else [local.status()]
    )
    for number, current in enumerate(nodes, start=1):
        state = (
            f"[green]running[/green] (pid {current.pid})"
            if current.running
            else "[red]stopped[/red]"
        )
        name = "Kafka" if len(nodes) == 1 else f"node {number}"
        console.print(f"{name}: {state}  bootstrap: {current.bootstrap}  log: {current.log_path}")
    if not all(node.running for node in nodes):
        raise typer.Exit(code=1)
