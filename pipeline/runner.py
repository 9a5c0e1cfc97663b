"""Running a pipeline process until a signal or a stage failure stops it."""

from __future__ import annotations

import asyncio
import json
import logging
import signal
from collections.abc import Mapping, Sequence
from typing import Any

import uvicorn

from pipeline.app import PipelineApp, create_app
from pipeline.loop import tune_garbage_collector
from pipeline.runtime.stage import StageSpec
from pipeline.settings import Settings

log = logging.getLogger(__name__)


def build(
    settings: Settings,
    stage_names: Sequence[str] | None,
    catalog: Mapping[str, StageSpec[Any, Any]] | None = None,
) -> PipelineApp:
    """The process's app with its HTTP endpoints (``catalog``: a user's pipeline's
    stages; ``None``: the checkout flow)."""
    if catalog is None:
        return create_app(settings, stage_names, http=settings.http.enabled)
    return create_app(settings, stage_names, http=settings.http.enabled, catalog=catalog)


def _log_state(pipeline: PipelineApp) -> None:
    for runtime in pipeline.runtimes:
        log.warning("state %s", json.dumps(runtime.engine.describe()))
    for task in asyncio.all_tasks():
        frames = [f"{frame.f_code.co_name}:{frame.f_lineno}" for frame in task.get_stack(limit=8)]
        log.warning("task %s %s", task.get_name(), " <- ".join(reversed(frames)))


async def serve(
    settings: Settings,
    stage_names: Sequence[str] | None,
    catalog: Mapping[str, StageSpec[Any, Any]] | None = None,
) -> int:
    """Run the stages until SIGTERM/SIGINT (graceful drain) or a stage failure (exit 1).

    SIGUSR1 logs each stage engine's state (in flight, held keys, paused partitions).
    """
    pipeline = build(settings, stage_names, catalog)
    await pipeline.check_topics()  # before a server whose failed start-up would hide it
    tune_garbage_collector()
    asyncio.get_running_loop().add_signal_handler(signal.SIGUSR1, _log_state, pipeline)
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
            runtime.engine.on_failure(lambda _exc: setattr(server, "should_exit", True))
        await server.serve()
    else:
        stop = asyncio.Event()
        loop = asyncio.get_running_loop()
        for sig in (signal.SIGTERM, signal.SIGINT):
            loop.add_signal_handler(sig, stop.set)
        for runtime in pipeline.runtimes:
            runtime.engine.on_failure(lambda _exc: stop.set())
        starting = asyncio.create_task(pipeline.start())
        stopping = asyncio.create_task(stop.wait())
        await asyncio.wait({starting, stopping}, return_when=asyncio.FIRST_COMPLETED)
        if not starting.done():
            # A stop asked for while still connecting (the broker may be away): give up
            # the start; nothing was taken, so nothing needs draining.
            starting.cancel()
            await asyncio.gather(starting, return_exceptions=True)
        else:
            starting.result()
            await stopping
        stopping.cancel()
        await pipeline.stop()
    if pipeline.failure is not None:
        log.error("stopped because a stage failed: %r", pipeline.failure)
        return 1
    return 0
