"""Batched handlers: the events a stage starts together go to one handler call.

A stage whose handler takes ``list[Model]`` (a bulk payment, a database write) still
runs the engine's per-record path — key lanes, the failure path, receipts — unchanged:
each record hands its event to :class:`MicroBatcher` and gets its outcome back. The
batcher gathers every event started in the same loop iteration (one fetched batch, at
most ``max_size`` per call) and calls the handler once with them. Key lanes let only
one record per key be in progress, so a call holds at most one event per key and
per-key order holds as it does for per-record handlers. The events a call's outcomes
start (the next of each key) go in the next call at once when the handler did not
wait (Python 3.12+: an eager start tells), so a fetch's rounds run in one loop
iteration, as a per-record stage's lanes do.

The handler returns one outcome per event, in order: what a per-record handler would
return (a model, ``None``, ``Output``\\ s), or an exception instance for an event that
failed — it alone goes down the failure path. A handler that raises fails every event
of the call, each on its own path (retried, climbing, dead-lettered).

Outcomes go back through a plain callback, called for every event of the call in
order once the call has returned (:meth:`MicroBatcher.start`): every event of a batched
stage waits for its call, and a future, a done-callback and a loop turn per event cost
as much as the rest of its path. Awaiting one event's outcome (``await batcher(event)``,
what a retry in process does) gets a future.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Coroutine, Sequence
from typing import Any

from pipeline.errors import NoOutput
from pipeline.runtime.eager import EAGER_TASKS, Pending, step

BatchCall = Callable[[list[Any]], Coroutine[Any, Any, Sequence[Any]]]
"""The user's batched handler, dependencies bound: events in, one outcome per event out."""

Deliver = Callable[[Any, Any], None]
"""Called with ``(token, outcome)`` once an event's call has returned; the outcome is
the handler's for that event, or the exception instance that failed it."""


class MicroBatcher:
    """Per-event calls (what the engine makes) in front of a batched handler."""

    __slots__ = ("_call_batch", "_max_size", "_pending", "_running")

    def __init__(self, call_batch: BatchCall, max_size: int) -> None:
        self._call_batch = call_batch
        self._max_size = max_size
        self._pending: list[tuple[Any, Deliver, Any]] = []
        self._running: set[asyncio.Task[None]] = set()

    def start(self, event: Any, deliver: Deliver, token: Any) -> None:
        """Add ``event`` to the next call; ``deliver(token, outcome)`` once it returned."""
        if not self._pending:
            # after the engine has started this loop iteration's events
            asyncio.get_running_loop().call_soon(self._flush)
        self._pending.append((event, deliver, token))

    def __call__(self, event: Any) -> asyncio.Future[Any]:
        """The outcome of ``event``, once the call holding it has returned."""
        future: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        self.start(event, _settle, future)
        return future

    def _flush(self) -> None:
        pending, self._pending = self._pending, []
        size = self._max_size
        for start in range(0, len(pending), size):
            task = asyncio.ensure_future(self._run(pending[start : start + size]))
            self._running.add(task)  # a task nothing references may be collected
            task.add_done_callback(self._running.discard)

    async def _run(self, chunk: list[tuple[Any, Deliver, Any]]) -> None:
        while await self._call(chunk):
            # The call did not wait, and delivering its outcomes started the next event
            # of each key: they go in the next call at once. So a fetch's rounds (one
            # per event of its busiest key) run in one loop iteration, and their outputs
            # leave in one batch per partition, not one per round. After a call that
            # waited they are left to the next iteration, to join the events of calls
            # that returned with it.
            pending = self._pending
            if not pending:
                return
            chunk = pending[: self._max_size]
            del pending[: self._max_size]

    async def _call(self, chunk: list[tuple[Any, Deliver, Any]]) -> bool:
        """Call the handler with ``chunk`` and deliver its outcomes; ``True`` when it
        returned without waiting."""
        waited = True
        try:
            call = self._call_batch([event for event, _, _ in chunk])
            if EAGER_TASKS:  # whether it waits is known only from an eager start
                result = step(call)
                if isinstance(result, Pending):
                    result = await result.task
                else:
                    waited = False
            else:
                result = await call
            outcomes = list(result)
            if len(outcomes) != len(chunk):
                raise NoOutput(
                    f"a batched handler returned {len(outcomes)} outcomes for {len(chunk)} "
                    "events (one per event, in order)"
                )
        except Exception as exc:
            for _, deliver, token in chunk:
                deliver(token, exc)
            return not waited
        for (_, deliver, token), outcome in zip(chunk, outcomes, strict=True):
            deliver(token, outcome)
        return not waited


def _settle(future: asyncio.Future[Any], outcome: Any) -> None:
    if future.done():
        return  # its waiter was cancelled (a stop)
    if isinstance(outcome, BaseException):
        future.set_exception(outcome)
    else:
        future.set_result(outcome)
