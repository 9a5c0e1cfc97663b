"""The demo: broker, topics, all stages, a produced workload, drain, verify.

The order API it serves checks tokens like a deployment does. Unless the settings name
a key source (or disable authentication), the demo signs with a key of its own that
lives only in this process and prints a token of it: customer ``cus-demo`` with the
operator scope, so it places that customer's orders and reads every order.
"""

from __future__ import annotations

import asyncio
import logging
import socket
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import uvicorn
from pydantic import SecretStr

from pipeline.broker import ensure_broker
from pipeline.ingress import create_ingress
from pipeline.ingress.local_issuer import LocalIssuer
from pipeline.kafka.admin import apply_topics, delete_topics
from pipeline.kafka.lag import wait_until_drained
from pipeline.kafka.produce import produce_records
from pipeline.kafka.topology import ORDERS_EVENTS, STAGE_NAMES, Naming, pipeline_topics
from pipeline.runner import build
from pipeline.settings import IngressSettings, Settings
from pipeline.verify import VerifyReport, verify
from pipeline.workload import generate

log = logging.getLogger(__name__)

DEMO_DATABASE = Path(".cache/demo-ingress.db")
"""The order API's database in a demo with fresh topics."""

DEMO_ISSUER = "urn:order-pipeline:local"
DEMO_CUSTOMER = "cus-demo"
DEMO_TOKEN_TTL_S = 12 * 3600


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
    settings, token = demo_auth(settings)
    api = await _serve(
        create_ingress(settings, _demo_api(settings, fresh)), settings.api.host, settings.api.port
    )
    if api is not None:
        base = f"http://{settings.api.host}:{settings.api.port}"
        say(f"order API: POST {base}/orders, GET {base}/orders/{{id}}, docs at {base}/docs")
        if token is not None:
            say(f"order API token ({DEMO_CUSTOMER}, reads every order): {token}")
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


def demo_auth(settings: Settings) -> tuple[Settings, str | None]:
    """``settings`` whose order API trusts a key made for this run, and a token signed
    with it; unchanged (and no token) when the settings already name a key source or
    disable authentication."""
    api = settings.api
    if api.auth_disabled or any((api.auth_jwks_url, api.auth_jwks, api.auth_jwks_file)):
        return settings, None
    issuer = LocalIssuer.generate(api.auth_issuer or DEMO_ISSUER, api.auth_audience)
    api = api.model_copy(update={"auth_issuer": issuer.issuer, "auth_jwks": issuer.jwks_json()})
    token = issuer.token(DEMO_CUSTOMER, scopes=[api.auth_operator_scope], ttl_s=DEMO_TOKEN_TTL_S)
    return settings.model_copy(update={"api": api}), token


def _demo_api(settings: Settings, fresh: bool) -> IngressSettings:
    """The order API's settings for the demo: with fresh topics, a fresh database too (the
    offsets an earlier run's projection stored belong to topics that are gone)."""
    if not fresh:
        return settings.api
    for leftover in DEMO_DATABASE.parent.glob(f"{DEMO_DATABASE.name}*"):  # -wal, -shm too
        leftover.unlink()
    url = SecretStr(f"sqlite+aiosqlite:///{DEMO_DATABASE}")
    return settings.api.model_copy(update={"database_url": url})


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
