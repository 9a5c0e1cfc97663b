"""``pipeline`` commands: run, produce, verify, demo, topics, kafka."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import asdict
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.progress import Progress
from rich.table import Table

from pipeline import loop
from pipeline.cli.api import api_token, serve_api
from pipeline.cli.asyncapi import asyncapi
from pipeline.cli.bench import bench, bench_api
from pipeline.cli.chaos import chaos
from pipeline.cli.db import db_app
from pipeline.cli.dlq import dlq_app
from pipeline.cli.inputs import InputFile, PipelinePath, pipeline_inputs
from pipeline.cli.kafka import kafka_app
from pipeline.cli.logs import configure_logging
from pipeline.cli.schedule import schedule
from pipeline.cli.topics import topics_app
from pipeline.cli.verify import print_report, verify
from pipeline.errors import PipelineError
from pipeline.kafka.produce import produce_by_topic, produce_records
from pipeline.kafka.topology import ORDERS_EVENTS, Naming
from pipeline.loading import is_pipeline_path, load_pipeline
from pipeline.settings import load_settings
from pipeline.workload import generate

app = typer.Typer(help="A key-ordered Kafka checkout pipeline on FastStream.", no_args_is_help=True)
app.add_typer(kafka_app, name="kafka")
app.add_typer(topics_app, name="topics")
app.add_typer(dlq_app, name="dlq")
app.add_typer(db_app, name="db")
app.command()(bench)
app.command("bench-api")(bench_api)
app.command("serve-api")(serve_api)
app.command("api-token")(api_token)
app.command()(asyncapi)
app.command()(schedule)
app.command()(verify)
app.command()(chaos)
console = Console()
err_console = Console(stderr=True)


@app.command()
def run(
    stages: Annotated[
        list[str] | None,
        typer.Argument(
            help="Stages to run, after an optional module:attribute naming your Pipeline "
            "(default: the bundled checkout flow)."
        ),
    ] = None,
    all_stages: Annotated[bool, typer.Option("--all", help="Run every stage.")] = False,
    verbose: bool = False,
) -> None:
    """Run stages in this process until SIGTERM (graceful drain) or a failure."""
    from pipeline.runner import serve

    names = list(stages or ())
    app_path = names.pop(0) if names and is_pipeline_path(names[0]) else None
    try:
        loaded = load_pipeline(app_path)
    except PipelineError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if not names and not all_stages:
        raise typer.BadParameter(f"name stages ({', '.join(loaded.stages)}) or pass --all")
    configure_logging(verbose)
    settings = load_settings()
    try:
        code = loop.run(serve(settings, None if all_stages else names, loaded.stages))
    except PipelineError as exc:  # it cannot start here (topics, broker, credentials)
        err_console.print(f"[red]cannot run:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    raise typer.Exit(code)


@app.command()
def status(
    app_path: Annotated[
        str | None,
        typer.Argument(metavar="[MODULE:ATTR]", help="Your Pipeline (default: the checkout)."),
    ] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Refresh until Ctrl-C.")] = False,
    interval: Annotated[float, typer.Option(help="Seconds between refreshes.")] = 2.0,
    json_output: Annotated[bool, typer.Option("--json", help="One sample as JSON.")] = False,
) -> None:
    """Each stage from Kafka: group members, lag, events/s, retrying, dead letters."""
    from pipeline.status import Sampler, StageStatus

    try:
        loaded = load_pipeline(app_path)
    except PipelineError as exc:
        raise typer.BadParameter(str(exc)) from exc
    settings = load_settings()
    sampler = Sampler(
        settings.kafka,
        {name: spec.source for name, spec in loaded.stages.items()},
        Naming.of(settings.topics),
        settings.topics.retry_levels,
    )

    def table(rows: list[StageStatus]) -> Table:
        view = Table(title=f"{loaded.name} stages")
        for column in ("stage", "members", "lag", "events/s", "retrying", "dead letters"):
            view.add_column(column, justify="left" if column == "stage" else "right")
        for row in rows:
            rate = "-" if row.events_per_s is None else f"{row.events_per_s:,.1f}"
            view.add_row(
                row.stage,
                str(row.members),
                f"{row.lag:,}",
                rate,
                f"{row.retrying:,}",
                f"{row.dead_letters:,}",
            )
        return view

    async def watch_forever() -> None:
        from rich.live import Live

        with Live(table(await sampler.next()), console=console, auto_refresh=False) as live:
            while True:
                await asyncio.sleep(interval)
                live.update(table(await sampler.next()), refresh=True)

    if json_output:
        rows = asyncio.run(sampler.next())
        typer.echo(json.dumps([asdict(row) for row in rows]))
    elif watch:
        with contextlib.suppress(KeyboardInterrupt):
            asyncio.run(watch_forever())
    else:
        console.print(table(asyncio.run(sampler.next())))


@app.command()
def produce(
    app_path: PipelinePath = None,
    input_file: InputFile = None,
    orders: Annotated[int, typer.Option(help="How many orders to produce.")] = 1_000,
    seed: int = 7,
    invalid_every: Annotated[
        int, typer.Option(help="A pair of invalid records every N orders (0: none).")
    ] = 500,
) -> None:
    """Produce realistic order lifecycles to orders.events — or, for your pipeline, the
    records of an input file to its entry topics."""
    settings = load_settings()
    if app_path is not None or input_file is not None:
        inputs = pipeline_inputs(app_path, input_file)
        naming = Naming.of(settings.topics)
        produced = asyncio.run(produce_by_topic(settings.kafka, naming, inputs or {}))
        for topic, sent in produced.items():
            console.print(f"produced {sent} records to {topic}")
        return
    with Progress(console=console) as progress:
        task = progress.add_task("producing", total=None)
        sent = asyncio.run(
            produce_records(
                settings.kafka,
                Naming.of(settings.topics).topic(ORDERS_EVENTS),
                generate(orders, seed=seed, invalid_every=invalid_every),
                on_progress=lambda n: progress.advance(task, n),
            )
        )
    console.print(f"produced {sent} events for {orders} orders to {ORDERS_EVENTS}")


@app.command()
def demo(
    orders: Annotated[int, typer.Option(help="How many orders to push through.")] = 10_000,
    fail_rate: Annotated[
        float | None,
        typer.Option(help="Share of inventory and payment calls that fail transiently."),
    ] = None,
) -> None:
    """Broker, topics, all stages, N orders, drain, verify: exit 0 only when clean."""
    from pipeline.demo import run_demo

    configure_logging(False)
    logging.getLogger().setLevel(logging.WARNING)
    for noisy in ("faststream", "faststream.access.kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    settings = load_settings()
    if fail_rate is not None:
        services = settings.services.model_copy(update={"transient_failure_rate": fail_rate})
        settings = settings.model_copy(update={"services": services})
    try:
        with Progress(console=console) as progress:
            task = progress.add_task("producing", total=None)
            result = loop.run(
                run_demo(
                    settings,
                    orders,
                    on_produced=lambda n: progress.advance(task, n),
                    # Unwrapped: the token it prints must copy as one line.
                    on_status=lambda line: progress.console.print(line, soft_wrap=True),
                )
            )
    except PipelineError as exc:
        console.print(f"[red]{exc}[/red]")
        raise typer.Exit(2) from exc
    console.print(
        f"{result.produced} events through 4 stages in {result.seconds:.1f}s "
        f"({result.produced / result.seconds:,.0f} events/s)"
    )
    print_report(result.report)
    raise typer.Exit(0 if result.report.clean else 1)
