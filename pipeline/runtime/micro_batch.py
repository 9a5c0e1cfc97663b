"""Batched handlers: the events a stage starts together go to one handler call.

A stage whose handler takes ``list[Model]`` (a bulk payment, a database write) still
runs the engine's per-record path — key lanes, the failure path, receipts — unchanged:
each record calls :class:`MicroBatcher` with its event and awaits that event's outcome.
The batcher gathers every event started in the same loop iteration (one fetched batch,
at most ``max_size`` per call) and calls the handler once with them. Key lanes let only
one record per key be in progress, so a call holds at most one event per key and
per-key order holds as it does for per-record handlers.

The handler returns one outcome per event, in order: what a per-record handler would
return (a model, ``None``, ``Output``\\ s), or an exception instance for an event that
failed — it alone goes down the failure path. A handler that raises fails every event
of the call, each on its own path (retried, climbing, dead-lettered).
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from pipeline.errors import NoOutput

BatchCall = Callable[[list[Any]], Coroutine[Any, Any, Sequence[Any]]]
"""The user's batched handler, dependencies bound: events in, one outcome per event out."""


class MicroBatcher:
    """A per-event call (what the engine calls) in front of a batched handler."""

    __slots__ = ("_call_batch", "_max_size", "_pending", "_running")

    def __init__(self, call_batch: BatchCall, max_size: int) -> None:
        self._call_batch = call_batch
        self._max_size = max_size
        self._pending: list[tuple[Any, asyncio.Future[Any]]] = []
        self._running: set[asyncio.Task[None]] = set()

    def __call__(self, event: Any) -> asyncio.Future[Any]:
        """The outcome of ``event``, once the call holding it has returned (a future,
        not a coroutine: the engine waits on it without a task per event)."""
        loop = asyncio.get_running_loop()
        future: asyncio.Future[Any] = loop.create_future()
        if not self._pending:
            loop.call_soon(self._flush)  # after the engine has started this iteration's
        self._pending.append((event, future))
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        size = self._max_size
        for start in range(0, len(pending), size):
            task = asyncio.ensure_future(self._run(pending[start : start + size]))
            self._running.add(task)  # a task nothing references may be collected
            task.add_done_callback(self._running.discard)

    async def _run(self, chunk: list[tuple[Any, asyncio.Future[Any]]]) -> None:
        try:
            outcomes = list(await self._call_batch([event for event, _ in chunk]))
            if len(outcomes) != len(chunk):
                raise NoOutput(
                    f"a batched handler returned {len(outcomes)} outcomes for {len(chunk)} "
                    "events (one per event, in order)"
                )
        except Exception as exc:
            for _, future in chunk:
                if not future.done():
                    future.set_exception(exc)
            return
        for (_, future), outcome in zip(chunk, outcomes, strict=True):
            if future.done():
                continue  # its record's task was cancelled (a stop)
            if isinstance(outcome, BaseException):
                future.set_exception(outcome)
            else:
                future.set_result(outcome)
