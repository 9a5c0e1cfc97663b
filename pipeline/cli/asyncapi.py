"""``pipeline asyncapi [MODULE:ATTR]``: the whole pipeline's AsyncAPI 3 document."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.errors import PipelineError
from pipeline.loading import load_pipeline
from pipeline.settings import load_settings


def asyncapi(
    app_path: Annotated[
        str | None,
        typer.Argument(metavar="[MODULE:ATTR]", help="Your Pipeline (default: the checkout)."),
    ] = None,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    yaml: Annotated[bool, typer.Option("--yaml", help="YAML instead of JSON.")] = False,
    reference: Annotated[
        bool,
        typer.Option(
            "--reference",
            help="Every default, ignoring PIPELINE_* (how docs/asyncapi.json is made).",
        ),
    ] = False,
) -> None:
    """Write the AsyncAPI document of every stage, retry and dead-letter channel."""
    from pipeline.asyncapi import pipeline_asyncapi, reference_settings

    try:
        flow = load_pipeline(app_path) if app_path is not None else None
    except PipelineError as exc:
        raise typer.BadParameter(str(exc)) from exc
    settings = reference_settings() if reference else load_settings()
    document = pipeline_asyncapi(settings, flow=flow)
    text = document.to_yaml() if yaml else document.to_json()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output} ({len(document.document['channels'])} channels)")
