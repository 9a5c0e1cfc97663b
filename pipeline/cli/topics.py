"""``pipeline topics apply``: create or check the pipeline's topics."""

from __future__ import annotations

import asyncio

import typer
from rich.console import Console

from pipeline.kafka.admin import apply_topics
from pipeline.kafka.topology import pipeline_topics
from pipeline.settings import load_settings

topics_app = typer.Typer(
    help="The pipeline's topics, from the topology in code.", no_args_is_help=True
)
console = Console()


@topics_app.command()
def apply() -> None:
    """Create missing topics; report (and exit 1 on) topics that differ from the code."""
    settings = load_settings()
    report = asyncio.run(apply_topics(settings.kafka, pipeline_topics(settings.topics)))
    for name in report.created:
        console.print(f"[green]created[/green] {name}")
    for name in report.unchanged:
        console.print(f"ok {name}")
    for name, differences in report.drift.items():
        console.print(f"[red]drift[/red] {name}: {'; '.join(differences)}")
    raise typer.Exit(0 if report.clean else 1)
