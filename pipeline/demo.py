"""The demo: broker, topics, all stages, a produced workload, drain, verify."""

from __future__ import annotations

import asyncio
import logging
import time
from collections.abc import Callable
from dataclasses import dataclass

import uvicorn

from pipeline.app import PipelineApp
from pipeline.broker import ensure_broker
from pipeline.kafka.admin import apply_topics, delete_topics
from pipeline.kafka.lag import wait_until_drained
from pipeline.kafka.produce import produce_records
from pipeline.kafka.topology import ORDERS_EVENTS, STAGE_NAMES, Naming, pipeline_topics
from pipeline.runner import build
from pipeline.settings import Settings
from pipeline.verify import VerifyReport, verify
from pipeline.workload import generate

log = logging.getLogger(__name__)


@dataclass(slots=True)
class DemoResult:
    """What the demo did and what the verifier found."""

    bootstrap: str
    produced: int
    seconds: float
    report: VerifyReport


async def run_demo(
    settings: Settings,
    orders: int,
    *,
    on_produced: Callable[[int], None] | None = None,
    on_status: Callable[[str], None] | None = None,
    drain_timeout_s: float = 600.0,
    fresh: bool = True,
) -> DemoResult:
    """Run the whole pipeline in this process over ``orders`` fresh orders; ``fresh``
    recreates the topics first so the verifier sees this run only."""
    say = on_status or (lambda _msg: None)
    naming = Naming.of(settings.topics)
    bootstrap = await ensure_broker(settings)
    say(f"broker at {bootstrap}")
    topics = pipeline_topics(settings.topics)
    if fresh:
        await delete_topics(settings.kafka, [topic.name for topic in topics])
    report = await apply_topics(settings.kafka, topics)
    say(f"topics: {len(report.created)} created, {len(report.unchanged)} unchanged")
    pipeline = build(settings, STAGE_NAMES)
    await pipeline.start()
    http = await _serve_http(pipeline, settings) if settings.http.enabled else None
    if http is not None:
        base = f"http://{settings.http.host}:{settings.http.port}"
        say(f"stage endpoints: {base}/metrics {base}/health {base}/ready")
    started = time.perf_counter()
    try:
        produced = await produce_records(
            settings.kafka,
            naming.topic(ORDERS_EVENTS),
            generate(orders),
            on_progress=on_produced,
        )
        say("produced; waiting for the pipeline to drain")
        await wait_until_drained(
            settings.kafka,
            STAGE_NAMES,
            naming=naming,
            retry_levels=settings.topics.retry_levels,
            timeout_s=drain_timeout_s,
        )
        seconds = time.perf_counter() - started
    finally:
        if http is not None:
            http.should_exit = True
        await pipeline.stop()
    if pipeline.failure is not None:
        raise RuntimeError(f"a stage failed: {pipeline.failure!r}")
    return DemoResult(bootstrap, produced, seconds, await verify(settings.kafka, naming))


async def _serve_http(pipeline: PipelineApp, settings: Settings) -> uvicorn.Server | None:
    """Serve the stages' HTTP endpoints beside the demo (the app itself is already
    started, so uvicorn runs without lifespan)."""
    config = uvicorn.Config(
        pipeline.app,
        host=settings.http.host,
        port=settings.http.port,
        lifespan="off",
        log_level="warning",
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            log.warning("HTTP endpoints not served: %r", task.exception())
            return None
        await asyncio.sleep(0.02)  # uvicorn offers no event for "listening"
    return server
