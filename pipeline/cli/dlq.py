"""``pipeline dlq list|show|replay|discard|held [MODULE:ATTR]``: working with dead letters
of your pipeline's stages (default: the checkout flow's)."""

from __future__ import annotations

import asyncio
import json
from typing import Annotated

import typer
from rich.console import Console
from rich.table import Table

from pipeline.errors import PipelineError
from pipeline.failures.dead_letters import (
    DeadLetter,
    DeadLetterFilter,
    HeldKey,
    discard,
    held_keys,
    list_dead_letters,
    parse_when,
    replay,
)
from pipeline.kafka.topology import Naming
from pipeline.loading import LoadedPipeline, load_pipeline, split_pipeline_path
from pipeline.settings import load_settings

dlq_app = typer.Typer(
    help="Dead letters: list, show, replay, discard, held keys.", no_args_is_help=True
)
console = Console()

PipelineArgument = Annotated[
    str | None,
    typer.Argument(metavar="[MODULE:ATTR]", help="Your Pipeline (default: the checkout)."),
]
StageOption = Annotated[list[str] | None, typer.Option("--stage", help="Repeatable.")]
ExceptionOption = Annotated[str | None, typer.Option("--exception", help="Type contains.")]
KeyOption = Annotated[str | None, typer.Option("--key", help="Record key.")]
SinceOption = Annotated[str | None, typer.Option(help="ISO time or 15m / 2h / 1d ago.")]
UntilOption = Annotated[str | None, typer.Option(help="ISO time or 15m / 2h / 1d ago.")]
IdsArgument = Annotated[
    list[str] | None,
    typer.Argument(
        metavar="[MODULE:ATTR] [ID]...",
        help="Your Pipeline (default: the checkout), then dead letters as stage:partition:offset.",
    ),
]


def _load(app_path: str | None) -> LoadedPipeline:
    try:
        return load_pipeline(app_path)
    except PipelineError as exc:
        raise typer.BadParameter(str(exc)) from exc


def _stages(loaded: LoadedPipeline, stage: list[str] | None) -> tuple[str, ...]:
    """The named stages, checked against the pipeline's (none named: all of them)."""
    unknown = [name for name in stage or () if name not in loaded.stages]
    if unknown:
        raise typer.BadParameter(
            f"unknown stage(s) {unknown} of {loaded.name}; known: {list(loaded.stages)}"
        )
    return tuple(stage or loaded.stages)


def _selection(
    loaded: LoadedPipeline,
    stage: list[str] | None,
    exception: str | None,
    key: str | None,
    since: str | None,
    until: str | None,
    ids: tuple[str, ...] = (),
    include_handled: bool = False,
) -> DeadLetterFilter:
    return DeadLetterFilter(
        stages=_stages(loaded, stage),
        exception=exception,
        key=key,
        since=parse_when(since),
        until=parse_when(until),
        ids=ids,
        include_handled=include_handled,
    )


def _select(selection: DeadLetterFilter) -> tuple[list[DeadLetter], Naming]:
    settings = load_settings()
    naming = Naming.of(settings.topics)
    return asyncio.run(list_dead_letters(settings.kafka, naming, selection)), naming


@dlq_app.command("list")
def list_command(
    app_path: PipelineArgument = None,
    stage: StageOption = None,
    exception: ExceptionOption = None,
    key: KeyOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
    include_handled: Annotated[
        bool, typer.Option("--all", help="Also replayed/discarded.")
    ] = False,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Dead letters waiting for an operator (with --all: handled ones too)."""
    loaded = _load(app_path)
    selection = _selection(loaded, stage, exception, key, since, until, (), include_handled)
    letters, _ = _select(selection)
    if json_output:
        typer.echo(json.dumps([letter.as_dict() for letter in letters]))
        return
    table = Table(title=f"{len(letters)} dead letters of {loaded.name}")
    for column in ("id", "key", "error", "attempts", "first failure", "message", "action"):
        table.add_column(column)
    for letter in letters:
        headers = letter.headers
        table.add_row(
            letter.id,
            (letter.key or b"").decode(errors="replace"),
            letter.error_type,
            headers.get("pipeline.attempt", ""),
            headers.get("pipeline.failure.first_at", ""),
            headers.get("pipeline.error.message", "")[:60],
            letter.action or "",
        )
    console.print(table)
    held = asyncio.run(_held(selection.stages))
    if held:
        console.print(_held_table(held))


async def _held(stages: tuple[str, ...]) -> list[HeldKey]:
    settings = load_settings()
    return await held_keys(settings.kafka, Naming.of(settings.topics), stages)


def _held_table(held: list[HeldKey]) -> Table:
    table = Table(title=f"{len(held)} held keys (their later events parked)")
    for column in ("stage", "key", "state", "parked", "since", "hold"):
        table.add_column(column)
    for key in held:
        since = key.since.isoformat() if key.since else ""
        table.add_row(key.stage, key.key, key.state, str(key.parked), since, key.hold)
    return table


@dlq_app.command("held")
def held_command(
    app_path: PipelineArgument = None,
    stage: StageOption = None,
    json_output: Annotated[bool, typer.Option("--json")] = False,
) -> None:
    """Keys held behind a dead letter (on_dead_letter=hold) and how many events each has
    parked; replay or discard the dead letter to release them."""
    held = asyncio.run(_held(_stages(_load(app_path), stage)))
    if json_output:
        typer.echo(json.dumps([key.as_dict() for key in held]))
        return
    console.print(_held_table(held))


@dlq_app.command()
def show(
    arguments: Annotated[
        list[str],
        typer.Argument(
            metavar="[MODULE:ATTR] ID",
            help="Your Pipeline (default: the checkout), then the dead letter as "
            "stage:partition:offset.",
        ),
    ],
) -> None:
    """Everything about one dead letter, as JSON."""
    app_path, ids = split_pipeline_path(arguments)
    if len(ids) != 1:
        raise typer.BadParameter("name one dead letter: [MODULE:ATTR] stage:partition:offset")
    [dead_letter_id] = ids
    loaded = _load(app_path)
    stage = dead_letter_id.split(":", 1)[0]
    letters, _ = _select(
        _selection(loaded, [stage], None, None, None, None, (dead_letter_id,), True)
    )
    if not letters:
        console.print(f"[red]no dead letter {dead_letter_id}[/red]")
        raise typer.Exit(1)
    typer.echo(json.dumps(letters[0].as_dict(), indent=2))


def _act(
    action: str,
    arguments: list[str] | None,
    selection: tuple[list[str] | None, str | None, str | None, str | None, str | None],
) -> None:
    app_path, ids = split_pipeline_path(arguments or ())
    loaded = _load(app_path)
    letters, naming = _select(_selection(loaded, *selection, tuple(ids)))
    settings = load_settings()
    operation = replay if action == "replayed" else discard
    done = asyncio.run(operation(settings.kafka, naming, letters, loaded.sources))
    console.print(f"{action} {len(done)} dead letters")


@dlq_app.command("replay")
def replay_command(
    ids: IdsArgument = None,
    stage: StageOption = None,
    exception: ExceptionOption = None,
    key: KeyOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
) -> None:
    """Send the selected dead letters back to their stage's input, once each."""
    _act("replayed", ids, (stage, exception, key, since, until))


@dlq_app.command("discard")
def discard_command(
    ids: IdsArgument = None,
    stage: StageOption = None,
    exception: ExceptionOption = None,
    key: KeyOption = None,
    since: SinceOption = None,
    until: UntilOption = None,
) -> None:
    """Mark the selected dead letters as dealt with, without replaying them."""
    _act("discarded", ids, (stage, exception, key, since, until))
