"""``pipeline topics apply|render``: create, check or render the pipeline's topics."""

from __future__ import annotations

import asyncio
from enum import StrEnum
from pathlib import Path
from typing import Annotated

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.errors import PipelineError
from pipeline.kafka.admin import apply_topics
from pipeline.kafka.strimzi import DEFAULT_CLUSTER, render_kafka_topics
from pipeline.kafka.topology import pipeline_topics
from pipeline.loading import load_pipeline
from pipeline.settings import load_settings

topics_app = typer.Typer(
    help="The pipeline's topics, from the topology in code.", no_args_is_help=True
)
console = Console()
err_console = Console(stderr=True)


PRODUCTION_REPLICAS = 3
PRODUCTION_MIN_INSYNC_REPLICAS = 2
"""A broker may die (or be rolled) while every write still reaches two replicas."""


class RenderFormat(StrEnum):
    """What ``pipeline topics render`` can write."""

    STRIMZI = "strimzi"


@topics_app.command()
def apply(
    app_path: Annotated[
        str | None,
        typer.Argument(
            metavar="[MODULE:ATTRIBUTE]", help="Your Pipeline (default: the checkout flow)."
        ),
    ] = None,
) -> None:
    """Create missing topics; report (and exit 1 on) topics that differ from the code."""
    settings = load_settings()
    try:
        loaded = load_pipeline(app_path)
        wanted = pipeline_topics(settings.topics, loaded.flow, list(loaded.stages))
        report = asyncio.run(apply_topics(settings.kafka, wanted))
    except PipelineError as exc:
        # One line that says why (no broker, refused credentials), not a traceback.
        err_console.print(f"[red]topics not applied:[/red] {escape(str(exc))}", highlight=False)
        raise typer.Exit(2) from exc
    for name in report.created:
        console.print(f"[green]created[/green] {name}")
    for name in report.unchanged:
        console.print(f"ok {name}")
    for name, differences in report.drift.items():
        console.print(f"[red]drift[/red] {name}: {'; '.join(differences)}")
    raise typer.Exit(0 if report.clean else 1)


@topics_app.command()
def render(
    app_path: Annotated[
        str | None,
        typer.Argument(
            metavar="[MODULE:ATTRIBUTE]", help="Your Pipeline (default: the checkout flow)."
        ),
    ] = None,
    output_format: Annotated[
        RenderFormat, typer.Option("--format", help="The kind of resources to write.")
    ] = RenderFormat.STRIMZI,
    output: Annotated[
        Path | None, typer.Option("--output", "-o", help="Write here instead of stdout.")
    ] = None,
    cluster: Annotated[
        str, typer.Option(help="The Strimzi Kafka cluster (label strimzi.io/cluster).")
    ] = DEFAULT_CLUSTER,
    namespace: Annotated[
        str | None, typer.Option(help="metadata.namespace (the Topic Operator's namespace).")
    ] = None,
    replicas: Annotated[
        int, typer.Option(min=1, help="Replication factor (production: 3).")
    ] = PRODUCTION_REPLICAS,
    min_insync_replicas: Annotated[
        int, typer.Option(min=1, help="min.insync.replicas (production: 2).")
    ] = PRODUCTION_MIN_INSYNC_REPLICAS,
) -> None:
    """Write the topics as Kubernetes resources (Strimzi ``KafkaTopic``), from the code and
    PIPELINE_TOPICS_*, with production durability (3 replicas, 2 in sync) unless told
    otherwise; no broker needed."""
    settings = load_settings()
    production = settings.topics.model_copy(
        update={"replication_factor": replicas, "min_insync_replicas": min_insync_replicas}
    )
    try:
        loaded = load_pipeline(app_path)
        topics = pipeline_topics(production, loaded.flow, list(loaded.stages))
        rendered = render_kafka_topics(topics, cluster, namespace=namespace)
    except PipelineError as exc:
        raise typer.BadParameter(str(exc)) from exc
    if output is None:
        typer.echo(rendered, nl=False)
        return
    output.write_text(rendered)
    err_console.print(f"wrote {len(topics)} KafkaTopic resources to {output}")
