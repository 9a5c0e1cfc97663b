"""Running a pipeline process until a signal or a stage failure stops it."""

from __future__ import annotations

import asyncio
import logging
import signal
from collections.abc import Sequence

import uvicorn

from pipeline.app import PipelineApp, create_app
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def build(settings: Settings, stage_names: Sequence[str] | None) -> PipelineApp:
    """The process's app with its HTTP endpoints."""
    return create_app(settings, stage_names, http=settings.http.enabled)


async def serve(settings: Settings, stage_names: Sequence[str] | None) -> int:
    """Run the stages until SIGTERM/SIGINT (graceful drain) or a stage failure (exit 1)."""
    pipeline = build(settings, stage_names)
    if settings.http.enabled:
        config = uvicorn.Config(
            pipeline.app,
            host=settings.http.host,
            port=settings.http.port,
            lifespan="on",
            log_level="warning",
            timeout_graceful_shutdown=int(settings.stage.shutdown_drain_timeout_s) + 5,
        )
        server = uvicorn.Server(config)
        # uvicorn re-raises the stop signal to the handler it found once it has shut
        # down; with the default one that kills the process (exit -15) after a clean
        # drain. A no-op handler lets a graceful stop end with status 0.
        for sig in (signal.SIGTERM, signal.SIGINT):
            signal.signal(sig, lambda _signum, _frame: None)
        for runtime in pipeline.runtimes:
            runtime.engine.on_failure = lambda _exc: setattr(server, "should_exit", True)
        await server.serve()
    else:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        for runtime in pipeline.runtimes:
            runtime.engine.on_failure = lambda _exc: stop.set()
        await pipeline.start()
        await stop.wait()
        await pipeline.stop()
    if pipeline.failure is not None:
        log.error("stopped because a stage failed: %r", pipeline.failure)
        return 1
    return 0
