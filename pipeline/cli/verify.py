"""``pipeline verify [MODULE:ATTR]``: every event accounted for exactly once, in order.

The checkout flow (the default) has its own verifier, which follows an order's sequence
numbers; any other pipeline gets the one derived from its declared stages
(:mod:`pipeline.accounting`).
"""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape
from rich.table import Table

from pipeline.accounting import FlowReport, verify_pipeline
from pipeline.errors import PipelineError
from pipeline.kafka.lag import wait_until_settled
from pipeline.kafka.topology import Naming, pipeline_topics
from pipeline.loading import LoadedPipeline, load_pipeline
from pipeline.settings import Settings, load_settings
from pipeline.verify import VerifyReport
from pipeline.verify import verify as verify_checkout

console = Console()
err_console = Console(stderr=True)


def verify(
    app_path: Annotated[
        str | None,
        typer.Argument(
            metavar="[MODULE:ATTR]",
            help="Your Pipeline (default: the checkout, with its own order checks).",
        ),
    ] = None,
    drain: Annotated[
        float | None,
        typer.Option(
            metavar="SECONDS",
            help="First wait (at most this long) until every stage has committed its input "
            "and no transaction is open.",
        ),
    ] = None,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Check that every input event is delivered, dead-lettered or dropped exactly once,
    with no duplicate, each key in order; exit 1 when not."""
    try:
        loaded = load_pipeline(app_path)
    except PipelineError as exc:
        raise typer.BadParameter(str(exc)) from exc
    settings = load_settings()
    if drain is not None:
        try:
            asyncio.run(_drained(settings, loaded, drain))
        except TimeoutError as exc:
            err_console.print(f"[red]{escape(str(exc))}[/red]")
            raise typer.Exit(2) from exc
    if app_path is None:
        report = asyncio.run(verify_checkout(settings.kafka, Naming.of(settings.topics)))
        clean = report.clean
        if json_output:
            typer.echo(json.dumps(report.as_dict()))
        else:
            print_report(report)
    else:
        flow = asyncio.run(verify_pipeline(settings, loaded.name, loaded.stages))
        clean = flow.clean
        if json_output:
            typer.echo(json.dumps(flow.as_dict()))
        else:
            print_flow_report(flow)
    raise typer.Exit(0 if clean else 1)


async def _drained(settings: Settings, loaded: LoadedPipeline, timeout_s: float) -> None:
    # and no transaction open: records behind one are invisible, not lost
    topics = pipeline_topics(settings.topics, loaded.flow, list(loaded.stages))
    await wait_until_settled(
        settings.kafka,
        loaded.sources,
        [topic.name for topic in topics],
        naming=Naming.of(settings.topics),
        retry_levels=settings.topics.retry_levels,
        timeout_s=timeout_s,
    )


def print_report(report: VerifyReport) -> None:
    """The checkout verifier's summary as a table."""
    table = Table(title="verify")
    table.add_column("check")
    table.add_column("value", justify="right")
    for name in (
        "events",
        "fulfilled",
        "dead_lettered",
        "replayed",
        "lost",
        "duplicated",
        "out_of_order",
        "unknown",
    ):
        value = getattr(report, name)
        bad = name in ("lost", "duplicated", "out_of_order", "unknown") and value
        table.add_row(name, f"[red]{value}[/red]" if bad else str(value))
    for status, count in sorted(report.statuses.items()):
        table.add_row(f"  status {status}", str(count))
    for reason, count in sorted(report.dead_letter_reasons.items()):
        table.add_row(f"  dead letter {reason}", str(count))
    console.print(table)
    for kind, examples in report.examples.items():
        console.print(f"[red]{kind}[/red] e.g. {', '.join(examples)}")


_FLOW_COLUMNS = (
    "consumed",
    "passed",
    "outputs",
    "dead_lettered",
    "replayed",
    "parked",
    "dropped",
    "lost",
    "duplicated",
    "out_of_order",
    "unknown",
)
_BAD = {"lost", "duplicated", "out_of_order", "unknown"}


def print_flow_report(report: FlowReport) -> None:
    """A pipeline's accounting: one row per stage, then what could not be checked."""
    table = Table(
        title=f"verify {report.pipeline}: {report.events} events in, {report.delivered} records out"
    )
    table.add_column("stage")
    for column in _FLOW_COLUMNS:
        table.add_column(column.replace("_", " "), justify="right")
    for stage in report.stages:
        cells = []
        for column in _FLOW_COLUMNS:
            value = getattr(stage, column)
            text = "n/a" if value is None else f"{value:,}"
            cells.append(f"[red]{text}[/red]" if column in _BAD and value else text)
        table.add_row(stage.stage, *cells)
    console.print(table)
    for stage in report.stages:
        for kind, examples in stage.examples.items():
            console.print(f"[red]{stage.stage} {kind}[/red] e.g. {escape(', '.join(examples))}")
    for note in report.notes:
        console.print(f"[yellow]note[/yellow] {escape(note)}")
    verdict = "[green]clean[/green]" if report.clean else "[red]not clean[/red]"
    scope = "" if report.loss_verified else " (loss not verified: see the notes)"
    console.print(f"{verdict}{scope}")
