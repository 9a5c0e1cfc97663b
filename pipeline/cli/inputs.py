"""What ``produce``, ``chaos`` and ``bench`` take to run a user's pipeline instead of
the checkout: ``MODULE:ATTR`` and ``--input FILE`` (:mod:`pipeline.input_file`)."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.errors import PipelineError
from pipeline.input_file import read_input_records
from pipeline.loading import load_pipeline
from pipeline.workload import WorkloadRecord

err_console = Console(stderr=True)

PipelinePath = Annotated[
    str | None,
    typer.Argument(
        metavar="[MODULE:ATTR]", help="Your Pipeline, with --input (default: the checkout)."
    ),
]
InputFile = Annotated[
    Path | None,
    typer.Option(
        "--input",
        metavar="FILE",
        help='With MODULE:ATTR: its input records, JSON lines {"key": ..., "value": ...}.',
    ),
]


def pipeline_inputs(
    app_path: str | None, input_file: Path | None
) -> dict[str, list[WorkloadRecord]] | None:
    """The input records of the pipeline at ``app_path`` by entry topic; ``None`` for
    the checkout (it makes its own orders). A refused file ends the command (exit 2)
    with the file and line in one line."""
    if app_path is None:
        if input_file is not None:
            raise typer.BadParameter("--input goes with MODULE:ATTR (the checkout makes orders)")
        return None
    if input_file is None:
        raise typer.BadParameter("your pipeline needs --input FILE: the events to produce")
    try:
        return read_input_records(input_file, load_pipeline(app_path).entry_topics())
    except PipelineError as exc:
        err_console.print(f"[red]input refused:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
