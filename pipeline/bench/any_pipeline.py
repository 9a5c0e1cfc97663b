"""``pipeline bench MODULE:ATTR --input FILE``: your pipeline over a backlog.

The input file's records (:mod:`pipeline.input_file`) are produced to fresh topics
first; then every stage starts as its own ``pipeline run MODULE:ATTR STAGE`` process, as
it is deployed, and drains the backlog. Reported: events in, the drain time from the
processes' start (start-up and assignment settling included) until every stage has
committed its whole input, events per second over it, CPU seconds per 1,000 input
events for all stages together and per stage, peak RSS per stage; then the verifier
derived from the stages says whether the run was clean.

There is no framework-free twin here (a handler's dependencies are the user's); the
checkout scenario measures what the runtime costs beside one.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from pipeline.accounting import verify_pipeline
from pipeline.bench.runner import _proc_cpu_seconds, _proc_peak_rss_mb
from pipeline.chaos import PIPELINE_BIN
from pipeline.errors import PipelineError
from pipeline.kafka.admin import apply_topics, delete_topics
from pipeline.kafka.lag import wait_until_drained
from pipeline.kafka.produce import produce_by_topic
from pipeline.kafka.topology import Naming, pipeline_topics
from pipeline.loading import load_pipeline
from pipeline.settings import Settings
from pipeline.workload import WorkloadRecord


class StageExited(PipelineError):
    """A stage process ended while the benchmark waited for the backlog to drain."""


@dataclass(slots=True)
class PipelineBench:
    """One run of a user's pipeline over its input backlog."""

    pipeline: str
    events: int
    drain_s: float
    cpu_s_per_stage: dict[str, float] = field(default_factory=dict)
    rss_mb_per_stage: dict[str, float] = field(default_factory=dict)
    clean: bool = False
    """The derived verifier found nothing lost, duplicated or reordered, and could check
    loss at every stage (each declares ``identify``)."""
    notes: list[str] = field(default_factory=list)
    """What the verifier could not check, and why."""

    @property
    def drain_eps(self) -> float:
        """Input events per second, from the stages' start to their last commit."""
        return self.events / self.drain_s if self.drain_s else 0.0

    @property
    def cpu_s_per_1k(self) -> float:
        """CPU seconds of all stages per 1,000 input events."""
        return 1000 * sum(self.cpu_s_per_stage.values()) / self.events if self.events else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            **asdict(self),
            "cpu_s_per_stage": {k: round(v, 3) for k, v in self.cpu_s_per_stage.items()},
            "rss_mb_per_stage": {k: round(v, 1) for k, v in self.rss_mb_per_stage.items()},
            "drain_s": round(self.drain_s, 3),
            "drain_eps": round(self.drain_eps, 1),
            "cpu_s_per_1k_events": round(self.cpu_s_per_1k, 4),
        }


async def run_pipeline_bench(
    settings: Settings,
    app_path: str,
    inputs: dict[str, list[WorkloadRecord]],
    timeout_s: float = 900,
) -> PipelineBench:
    """Produce ``inputs`` to fresh topics, drain them through the pipeline at
    ``app_path`` (one process per stage) and verify the result."""
    loaded = load_pipeline(app_path)
    prefix = f"benchapp{uuid.uuid4().hex[:8]}."
    topology = settings.topics.model_copy(update={"prefix": prefix})
    run = settings.model_copy(update={"topics": topology})
    naming = Naming.of(topology)
    topics = pipeline_topics(topology, loaded.flow, list(loaded.stages))
    await apply_topics(settings.kafka, topics)
    produced = sum((await produce_by_topic(settings.kafka, naming, inputs)).values())
    env = {
        **os.environ,
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "PIPELINE_TOPICS_PREFIX": prefix,
        "PIPELINE_HTTP_ENABLED": "false",
    }
    logs = Path(tempfile.mkdtemp(prefix="pipeline-bench-"))
    try:
        started = time.time()
        processes = {
            name: await asyncio.create_subprocess_exec(
                str(PIPELINE_BIN),
                "run",
                app_path,
                name,
                env=env,
                stdout=(logs / f"{name}.log").open("wb"),
                stderr=asyncio.subprocess.STDOUT,
            )
            for name in loaded.stages
        }
        try:
            draining = asyncio.ensure_future(
                wait_until_drained(
                    settings.kafka,
                    loaded.sources,
                    naming=naming,
                    retry_levels=topology.retry_levels,
                    timeout_s=timeout_s,
                    poll_s=0.2,
                )
            )
            exits = {asyncio.ensure_future(p.wait()): name for name, p in processes.items()}
            done, _ = await asyncio.wait({draining, *exits}, return_when=asyncio.FIRST_COMPLETED)
            if draining not in done:
                draining.cancel()
                name = next(name for task, name in exits.items() if task in done)
                tail = (logs / f"{name}.log").read_text(errors="replace")[-2000:]
                raise StageExited(f"stage {name} exited before the backlog drained:\n{tail}")
            draining.result()
            drained_at = time.time()
            cpu = {name: _proc_cpu_seconds(p.pid) for name, p in processes.items()}
            rss = {name: _proc_peak_rss_mb(p.pid) for name, p in processes.items()}
        finally:
            for process in processes.values():
                if process.returncode is None:
                    process.terminate()
            await asyncio.gather(*(p.wait() for p in processes.values()))
        report = await verify_pipeline(run, loaded.name, loaded.stages)
    finally:
        await delete_topics(settings.kafka, [t.name for t in topics])
        shutil.rmtree(logs, ignore_errors=True)
    return PipelineBench(
        pipeline=loaded.name,
        events=produced,
        drain_s=drained_at - started,
        cpu_s_per_stage=cpu,
        rss_mb_per_stage=rss,
        clean=report.clean and report.loss_verified,
        notes=report.notes,
    )
