"""``pipeline asyncapi``: the whole pipeline's AsyncAPI 3 document."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from pipeline.settings import load_settings


def asyncapi(
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

    settings = reference_settings() if reference else load_settings()
    document = pipeline_asyncapi(settings)
    text = document.to_yaml() if yaml else document.to_json()
    if output is None:
        typer.echo(text, nl=False)
    else:
        output.write_text(text)
        typer.echo(f"wrote {output} ({len(document.document['channels'])} channels)")
