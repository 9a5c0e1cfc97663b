"""The demo: broker, topics, all stages, a produced workload, drain, verify."""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import uvicorn

from pipeline.broker import ensure_broker
from pipeline.ingress import create_ingress
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
    http = None
    if settings.http.enabled:
        http = await _serve(pipeline.app, settings.http.host, settings.http.port, lifespan=False)
    if http is not None:
        base = f"http://{settings.http.host}:{settings.http.port}"
        say(f"stage endpoints: {base}/metrics {base}/health {base}/ready")
    api = await _serve(create_ingress(settings), settings.api.host, settings.api.port)
    if api is not None:
        base = f"http://{settings.api.host}:{settings.api.port}"
        say(f"order API: POST {base}/orders, GET {base}/orders/{{id}}, docs at {base}/docs")
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
        for server in (http, api):
            if server is not None:
                server.should_exit = True
        await pipeline.stop()
    if pipeline.failure is not None:
        raise RuntimeError(f"a stage failed: {pipeline.failure!r}")
    return DemoResult(bootstrap, produced, seconds, await verify(settings.kafka, naming))


async def _serve(app: Any, host: str, port: int, *, lifespan: bool = True) -> uvicorn.Server | None:
    """Serve ``app`` beside the demo; ``None`` (with a warning) when the port is taken.

    The stages' app is already started, so it runs without lifespan; the order API
    starts its own broker connection in its lifespan.
    """
    with socket.socket() as probe:
        try:
            probe.bind((host, port))
        except OSError as exc:
            log.warning("%s:%d not served: %s", host, port, exc)
            return None
    config = uvicorn.Config(
        app, host=host, port=port, lifespan="on" if lifespan else "off", log_level="warning"
    )
    server = uvicorn.Server(config)
    task = asyncio.create_task(server.serve())
    while not server.started:
        if task.done():
            log.warning("%s:%d not served: %r", host, port, task.exception())
            return None
        await asyncio.sleep(0.02)  # uvicorn offers no event for "listening"
    return server
