"""The benchmark scenarios (cpu, io, burst) and their report."""

from __future__ import annotations

import platform
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.bench.checkout import run_checkout
from pipeline.bench.runner import RunResult, run_chain
from pipeline.settings import Guarantee, Settings, TransactionScheme


@dataclass(frozen=True, slots=True)
class BenchSizes:
    """How many events each implementation moves per scenario."""

    cpu_events: int = 200_000
    faststream_cpu_events: int = 10_000
    io_events: int = 100_000
    faststream_io_events: int = 3_000
    keys: int = 1_000
    io_delay_ms: float = 5.0
    burst_factor: int = 10
    checkout_events: int = 100_000


def _summary(
    pipeline: RunResult,
    raw: RunResult | None,
    faststream: RunResult | None,
    exactly_once: RunResult | None = None,
) -> dict[str, Any]:
    summary: dict[str, Any] = {
        "pipeline_eps": round(pipeline.eps, 1),
        "p50_ms": round(pipeline.p50_ms, 1),
        "p99_ms": round(pipeline.p99_ms, 1),
        "rss_mb": round(max(pipeline.rss_mb_per_hop), 1),
        "cpu_s_per_1k_events_per_hop": round(
            1000 * sum(pipeline.cpu_s_per_hop) / len(pipeline.cpu_s_per_hop) / pipeline.events, 3
        ),
        "order_violations": pipeline.order_violations,
        "runs": [
            run.as_dict() for run in (pipeline, exactly_once, raw, faststream) if run is not None
        ],
    }
    if exactly_once is not None:
        summary["eos_eps"] = round(exactly_once.eps, 1)
        summary["eos_vs_pipeline"] = round(exactly_once.eps / pipeline.eps, 3)
        summary["order_violations"] += exactly_once.order_violations
    if raw is not None:
        summary["raw_eps"] = round(raw.eps, 1)
        summary["vs_raw"] = round(pipeline.eps / raw.eps, 3)
    if faststream is not None:
        summary["faststream_eps"] = round(faststream.eps, 1)
        summary["vs_faststream"] = round(pipeline.eps / faststream.eps, 1)
        summary["order_violations"] += faststream.order_violations
    return summary


async def run_scenarios(
    settings: Settings,
    names: list[str],
    sizes: BenchSizes,
    say: Callable[[str], None],
) -> dict[str, Any]:
    """Run the named scenarios one after another on the same broker."""
    results: dict[str, Any] = {}
    cpu_eps: float | None = None

    async def chain(
        scenario: str,
        implementation: str,
        events: int,
        delay_ms: float = 0.0,
        guarantee: Guarantee = "at_least_once",
        transactions: TransactionScheme = "auto",
    ) -> RunResult:
        waits = f", {delay_ms} ms per handler" if delay_ms else ""
        mode = f", exactly-once ({transactions})" if guarantee == "exactly_once" else ""
        say(f"{scenario}: {implementation}{mode}{waits}")
        return await run_chain(
            settings,
            implementation,
            events=events,
            keys=sizes.keys,
            delay_ms=delay_ms,
            guarantee=guarantee,
            transactions=transactions,
        )

    for name in names:
        if name == "cpu":
            raw = await chain(name, "raw", sizes.cpu_events)
            pipe = await chain(name, "pipeline", sizes.cpu_events)
            fast = await chain(name, "faststream", sizes.faststream_cpu_events)
            eos = await chain(name, "pipeline", sizes.cpu_events, guarantee="exactly_once")
            results["cpu"] = _summary(pipe, raw, fast, eos)
            cpu_eps = pipe.eps
        elif name == "io":
            delay = sizes.io_delay_ms
            pipe = await chain(name, "pipeline", sizes.io_events, delay)
            fast = await chain(name, "faststream", sizes.faststream_io_events, delay)
            eos = await chain(name, "pipeline", sizes.io_events, delay, "exactly_once")
            batched = await chain(name, "pipeline-batched", sizes.io_events, delay)
            results["io"] = _summary(pipe, None, fast, eos)
            results["io"]["runs"].append(batched.as_dict())
            results["io"]["batched_eps"] = round(batched.eps, 1)
            results["io"]["order_violations"] += batched.order_violations
            if cpu_eps:
                results["io"]["vs_own_cpu"] = round(pipe.eps / cpu_eps, 3)
                results["io"]["batched_vs_own_cpu"] = round(batched.eps / cpu_eps, 3)
        elif name == "eos":
            # Exactly-once's cost and footprint: one transactional producer per process
            # against one per input partition, beside at-least-once, at this run's
            # partition count.
            events = sizes.cpu_events
            pipe = await chain(name, "pipeline", events)
            per_process = await chain(name, "pipeline", events, 0.0, "exactly_once", "per_process")
            per_partition = await chain(
                name, "pipeline", events, 0.0, "exactly_once", "per_partition"
            )
            results["eos"] = _summary(pipe, None, None, per_process)
            results["eos"]["runs"].append(per_partition.as_dict())
            results["eos"]["partitions"] = settings.topics.partitions
            results["eos"]["per_partition_eps"] = round(per_partition.eps, 1)
            results["eos"]["per_partition_vs_pipeline"] = round(per_partition.eps / pipe.eps, 3)
        elif name == "checkout":
            # the real stages against the framework-free loop, on the same handlers
            runs = []
            for implementation in ("framework-free", "pipeline"):
                say(f"checkout: {implementation}, {sizes.checkout_events} events backlog")
                runs.append(await run_checkout(settings, implementation, sizes.checkout_events))
            free, real = runs
            results["checkout"] = {
                "runs": [run.as_dict() for run in runs],
                "drain_vs_framework_free": round(real.drain_eps / free.drain_eps, 3),
                "steady_vs_framework_free": round(real.steady_eps / free.steady_eps, 3),
                "cpu_s_per_1k_events": round(real.cpu_s_per_1k, 4),
                "clean": real.clean and free.clean,
            }
        elif name == "burst":
            backlog = sizes.burst_factor * settings.stage.max_in_flight
            say(f"burst: pipeline drains a backlog of {backlog} events")
            pipe = await run_chain(
                settings, "pipeline", events=backlog, keys=sizes.keys, backlog=True
            )
            results["burst"] = _summary(pipe, None, None)
            results["burst"]["backlog_events"] = backlog
        else:
            raise ValueError(f"unknown scenario {name!r}")
    results["machine"] = {
        "python": platform.python_version(),
        "cpus": _cpu_count(),
        "platform": platform.platform(),
    }
    return results


def _cpu_count() -> int:
    import os

    return len(os.sched_getaffinity(0))


def markdown_table(results: dict[str, Any]) -> str:
    """The results as a Markdown table."""
    lines = [
        "| scenario | implementation | events | events/s | p50 ms | p99 ms | "
        "CPU s per hop | peak RSS MB per hop | connections per hop | order violations |",
        "|---|---|---:|---:|---:|---:|---|---|---|---:|",
    ]
    for scenario, summary in results.items():
        if scenario in ("machine", "checkout"):
            continue
        for run in summary["runs"]:
            lines.append(
                f"| {scenario} | {run['implementation']} | {run['events']:,} | "
                f"{run['eps']:,.0f} | {run['p50_ms']:,.0f} | {run['p99_ms']:,.0f} | "
                f"{', '.join(f'{c:.1f}' for c in run['cpu_s_per_hop'])} | "
                f"{', '.join(f'{r:.0f}' for r in run['rss_mb_per_hop'])} | "
                f"{', '.join(str(c) for c in run['connections_per_hop'])} | "
                f"{run['order_violations']} |"
            )
    if "checkout" in results:
        lines += [
            "",
            "| checkout | events | drain s | drain events/s | steady events/s | "
            "CPU s per 1k events | peak RSS MB per stage | verified |",
            "|---|---:|---:|---:|---:|---:|---|---|",
        ]
        for run in results["checkout"]["runs"]:
            lines.append(
                f"| {run['implementation']} | {run['events']:,} | {run['drain_s']:.1f} | "
                f"{run['drain_eps']:,.0f} | {run['steady_eps']:,.0f} | "
                f"{run['cpu_s_per_1k_events']:.3f} | "
                f"{', '.join(f'{r:.0f}' for r in run['rss_mb_per_stage'])} | "
                f"{'clean' if run['clean'] else 'NOT CLEAN'} |"
            )
    return "\n".join(lines)
