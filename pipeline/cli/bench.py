"""``pipeline bench``: the stage engine against raw aiokafka and plain FastStream;
``pipeline bench-api``: the order API's memory as the orders it knows grow."""

from __future__ import annotations

import asyncio
import json
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.markup import escape

from pipeline.bench.scenarios import BenchSizes, markdown_table, run_scenarios
from pipeline.broker import ensure_broker
from pipeline.cli.inputs import InputFile, PipelinePath, pipeline_inputs
from pipeline.errors import PipelineError
from pipeline.settings import Settings, load_settings

console = Console()
err_console = Console(stderr=True)


def bench(
    app_path: PipelinePath = None,
    input_file: InputFile = None,
    json_path: Annotated[Path | None, typer.Option("--json", help="Write results here.")] = None,
    scenario: Annotated[
        list[str] | None,
        typer.Option(help="cpu, io, burst, eos, checkout (repeatable; default cpu, io, burst)."),
    ] = None,
    events: Annotated[int, typer.Option(help="Events for cpu and eos (io: half).")] = 200_000,
    partitions: Annotated[
        int | None, typer.Option(help="Partitions per topic (default: PIPELINE_TOPICS_*).")
    ] = None,
) -> None:
    """Run the benchmark scenarios on the configured (or local) broker — or your
    pipeline, one process per stage, over the backlog of an input file."""
    settings = load_settings()
    if partitions is not None:
        topics = settings.topics.model_copy(update={"partitions": partitions})
        settings = settings.model_copy(update={"topics": topics})
    if app_path is not None or input_file is not None:
        _bench_pipeline(settings, app_path, input_file, json_path)
        return
    sizes = BenchSizes(
        cpu_events=events, io_events=events // 2, checkout_events=max(100_000, events // 2)
    )
    names = scenario or ["cpu", "io", "burst"]

    async def run() -> dict[str, Any]:
        await ensure_broker(settings)
        return await run_scenarios(settings, names, sizes, console.print)

    results = asyncio.run(run())
    console.print(markdown_table(results))
    for name, summary in results.items():
        if name != "machine":
            keys = (
                "pipeline_eps",
                "raw_eps",
                "faststream_eps",
                "vs_raw",
                "vs_faststream",
                "vs_own_cpu",
                "batched_vs_own_cpu",
                "eos_eps",
                "eos_vs_pipeline",
                "per_partition_vs_pipeline",
                "drain_vs_framework_free",
                "steady_vs_framework_free",
                "cpu_s_per_1k_events",
                "p99_ms",
                "rss_mb",
                "order_violations",
            )
            console.print(name, {k: summary[k] for k in keys if k in summary})
    if json_path is not None:
        json_path.write_text(json.dumps(results, indent=2))
        console.print(f"results written to {json_path}")


def _bench_pipeline(
    settings: Settings, app_path: str | None, input_file: Path | None, json_path: Path | None
) -> None:
    from pipeline.bench.any_pipeline import run_pipeline_bench

    inputs = pipeline_inputs(app_path, input_file)
    if app_path is None or inputs is None:  # pipeline_inputs has refused an --input alone
        raise typer.BadParameter("--input goes with MODULE:ATTR")

    async def run() -> dict[str, Any]:
        await ensure_broker(settings)
        return (await run_pipeline_bench(settings, app_path, inputs)).as_dict()

    try:
        result = asyncio.run(run())
    except PipelineError as exc:  # a stage that could not run, with the end of its log
        err_console.print(f"[red]bench failed:[/red] {escape(str(exc))}", soft_wrap=True)
        raise typer.Exit(2) from exc
    console.print(result)
    if json_path is not None:
        json_path.write_text(json.dumps(result, indent=2))
        console.print(f"results written to {json_path}")
    raise typer.Exit(0 if result["clean"] else 1)


def bench_api(
    orders: Annotated[
        list[int] | None,
        typer.Option(help="Orders known at each measurement (repeatable, ascending)."),
    ] = None,
    database_url: Annotated[
        str | None,
        typer.Option(help="The API's database (default: a fresh SQLite file)."),
    ] = None,
) -> None:
    """Measure the order API process's resident memory at 10k, 100k and 300k orders."""
    from pipeline.ingress.memory_bench import MemoryPoint, measure_api_memory

    settings = load_settings()
    steps = sorted(orders or [10_000, 100_000, 300_000])
    console.print("| orders | RSS MB | peak RSS MB | caught up in s |\n|---:|---:|---:|---:|")

    def show(point: MemoryPoint) -> None:
        console.print(
            f"| {point.orders:,} | {point.rss_mb:.0f} | {point.peak_rss_mb:.0f} "
            f"| {point.catch_up_s} |"
        )

    async def run() -> None:
        await ensure_broker(settings)
        await measure_api_memory(settings, steps, database_url=database_url, on_point=show)

    asyncio.run(run())
