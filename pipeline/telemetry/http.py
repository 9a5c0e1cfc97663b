"""The per-process HTTP endpoints: ``/metrics``, ``/health`` and ``/ready``."""

from __future__ import annotations

from typing import Any

from faststream.asgi import AsgiResponse, get
from prometheus_client import CONTENT_TYPE_LATEST, CollectorRegistry, generate_latest

from pipeline.runtime.wiring import StageRuntime


def http_routes(runtimes: list[StageRuntime], registry: CollectorRegistry) -> list[tuple[str, Any]]:
    """ASGI routes for a stage process."""

    @get
    async def health(scope: Any) -> AsgiResponse:
        # Liveness: answering at all means the event loop runs.
        return AsgiResponse(b"ok", status_code=200)

    @get
    async def ready(scope: Any) -> AsgiResponse:
        # Readiness: every stage's consumer is connected and owns partitions (or the group
        # has more members than partitions and this one is deliberately idle).
        states = {runtime.spec.name: runtime.readiness() for runtime in runtimes}
        ok = all(state in ("assigned", "idle") for state in states.values())
        body = ",".join(f"{name}={state}" for name, state in states.items()).encode()
        return AsgiResponse(body, status_code=200 if ok else 503)

    @get
    async def metrics(scope: Any) -> AsgiResponse:
        return AsgiResponse(
            generate_latest(registry),
            status_code=200,
            headers={"content-type": CONTENT_TYPE_LATEST},
        )

    return [("/health", health), ("/ready", ready), ("/metrics", metrics)]
