"""``pipeline`` commands: run, produce, verify, demo, topics, kafka."""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import time
from dataclasses import asdict
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.progress import Progress
from rich.table import Table

from pipeline import loop
from pipeline.cli.api import api_token, serve_api
from pipeline.cli.asyncapi import asyncapi
from pipeline.cli.bench import bench, bench_api
from pipeline.cli.db import db_app
from pipeline.cli.dlq import dlq_app
from pipeline.cli.kafka import kafka_app
from pipeline.cli.schedule import schedule
from pipeline.cli.topics import topics_app
from pipeline.cli.verify import print_report, verify
from pipeline.errors import PipelineError
from pipeline.kafka.produce import produce_records
from pipeline.kafka.topology import ORDERS_EVENTS, STAGE_NAMES, Naming
from pipeline.loading import is_pipeline_path, load_pipeline
from pipeline.settings import Guarantee, load_settings
from pipeline.telemetry.tracing import TraceContextFilter
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
console = Console()
err_console = Console(stderr=True)


def _configure_logging(verbose: bool) -> None:
    handler = logging.StreamHandler()
    handler.addFilter(TraceContextFilter())
    handler.setFormatter(
        logging.Formatter(
            "%(asctime)s %(levelname)s %(name)s trace_id=%(trace_id)s span_id=%(span_id)s "
            "%(message)s"
        )
    )
    logging.basicConfig(level=logging.DEBUG if verbose else logging.INFO, handlers=[handler])
    logging.getLogger("aiokafka").setLevel(logging.WARNING)


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
    _configure_logging(verbose)
    settings = load_settings()
    raise typer.Exit(loop.run(serve(settings, None if all_stages else names, loaded.stages)))


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
    orders: Annotated[int, typer.Option(help="How many orders to produce.")] = 1_000,
    seed: int = 7,
    invalid_every: Annotated[
        int, typer.Option(help="A pair of invalid records every N orders (0: none).")
    ] = 500,
) -> None:
    """Produce realistic order lifecycles to orders.events."""
    settings = load_settings()
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

    _configure_logging(False)
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


@app.command()
def chaos(
    orders: Annotated[int, typer.Option(help="Orders to produce during the run.")] = 20_000,
    kills: Annotated[int, typer.Option(help="Stage processes to kill -9.")] = 20,
    restart_broker: Annotated[bool, typer.Option(help="Restart the local broker once.")] = True,
    fail_rate: Annotated[float, typer.Option(help="Transient service failures.")] = 0.05,
    json_output: Annotated[bool, typer.Option("--json")] = False,
    seed: int | None = None,
    guarantee: Annotated[
        Guarantee | None,
        typer.Option(help="Processing guarantee of every stage (default: from settings)."),
    ] = None,
    brokers: Annotated[
        int,
        typer.Option(
            help="1: kill stages on the local broker. 3: kill brokers of a local "
            "three-node cluster instead (the failover cases), each case in turn."
        ),
    ] = 1,
    case: Annotated[
        list[str] | None,
        typer.Option(help="With --brokers 3: leader, controller, bounce (default: all)."),
    ] = None,
    rolling_restart: Annotated[
        str | None,
        typer.Option(
            metavar="STAGE",
            help="Instead: roll STAGE's three replicas, without and with static "
            "membership, and report how long its output stood still.",
        ),
    ] = None,
) -> None:
    """Kill stages, restart the broker, rebalance, SIGTERM; then verify. Exit 0 only
    when nothing was lost or reordered (and, exactly-once, nothing duplicated).

    With ``--brokers 3``: a local three-node cluster loses a broker while the pipeline
    runs (the partition leader, the active controller, or one that comes back); each
    case reports its longest pause in output."""
    from pipeline.broker import ensure_broker
    from pipeline.chaos import run_chaos

    if brokers > 1:
        _failover_cases(brokers, case, orders, guarantee, json_output)
        return
    if rolling_restart is not None:
        _rolling_restarts(rolling_restart, json_output)
        return

    _configure_logging(False)
    for noisy in ("faststream", "faststream.access.kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    settings = load_settings()
    services = settings.services.model_copy(
        update={"transient_failure_rate": fail_rate, "latency_ms": 1.0}
    )
    stage = settings.stage.model_copy(update={"retry_delays_s": [0.5, 1.0, 2.0]})
    if guarantee is not None:
        stage = stage.model_copy(
            update={"processing_guarantee": guarantee, "processing_guarantees": {}}
        )
    settings = settings.model_copy(update={"services": services, "stage": stage})

    async def run() -> Any:
        await ensure_broker(settings)
        return await run_chaos(
            settings, orders=orders, kills=kills, restart_broker=restart_broker, seed=seed
        )

    result = loop.run(run())
    if json_output:
        typer.echo(json.dumps(result.as_dict()))
    else:
        print_report(result.report)
        console.print(result.as_dict()["actions"])
    raise typer.Exit(0 if result.clean else 1)


def _rolling_restarts(stage: str, json_output: bool) -> None:
    from pipeline.broker import ensure_broker
    from pipeline.rolling import run_rolling_restart

    if stage not in STAGE_NAMES:
        raise typer.BadParameter(f"unknown stage {stage}; known: {list(STAGE_NAMES)}")
    _configure_logging(False)
    for noisy in ("faststream", "faststream.access.kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    settings = load_settings()
    loop.run(ensure_broker(settings))
    clean = True
    for static in (False, True):
        result = loop.run(run_rolling_restart(settings, stage=stage, static=static))
        clean = clean and result.clean
        if json_output:
            typer.echo(json.dumps(result.as_dict()))
        else:
            console.print(result.as_dict())
    raise typer.Exit(0 if clean else 1)


def _failover_cases(
    brokers: int,
    cases: list[str] | None,
    orders: int,
    guarantee: Guarantee | None,
    json_output: bool,
) -> None:
    from pipeline.failover import CASES, run_failover
    from pipeline.kafka.local_cluster import LocalCluster

    unknown = [c for c in cases or () if c not in CASES]
    if unknown:
        raise typer.BadParameter(f"unknown case(s) {unknown}; known: {list(CASES)}")
    _configure_logging(False)
    for noisy in ("faststream", "faststream.access.kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    settings = load_settings()
    cluster = LocalCluster(settings.local_kafka, brokers)
    cluster.up()
    clean = True
    logs = Path(".cache") / "chaos-logs" / time.strftime("%Y%m%d-%H%M%S")
    for name in cases or CASES:
        result = loop.run(
            run_failover(
                settings,
                cluster,
                name,  # type: ignore[arg-type]
                orders=orders,
                guarantee=guarantee or settings.stage.processing_guarantee,
                log_dir=logs / name,
            )
        )
        clean = clean and result.clean
        if json_output:
            typer.echo(json.dumps(result.as_dict()))
        else:
            print_report(result.report)
            console.print({k: v for k, v in result.as_dict().items() if k != "report"})
    err_console.print(f"stage logs: {logs}")
    raise typer.Exit(0 if clean else 1)
