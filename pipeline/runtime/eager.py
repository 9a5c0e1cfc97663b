"""Run a coroutine synchronously until it first suspends.

Most handler calls never wait (validation, a service answering from memory), and
creating an asyncio task per record would cost more than the handler itself. So a
coroutine is stepped right away; only one that really suspends is handed to a task,
which resumes it exactly where it stopped (what ``eager_start`` does on Python 3.12+).
"""

from __future__ import annotations

import asyncio
import types
from collections.abc import Coroutine, Generator
from typing import Any, TypeVar

Result = TypeVar("Result")


@types.coroutine
def _resume(coro: Coroutine[Any, Any, Result], yielded: Any) -> Generator[Any, Any, Result]:
    # Pass what the coroutine awaits up to the task, and the task's answer back down.
    while True:
        try:
            sent = yield yielded
        except GeneratorExit:
            coro.close()
            raise
        except BaseException as exc:  # delivered by the task (cancellation included)
            try:
                yielded = coro.throw(exc)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]
        else:
            try:
                yielded = coro.send(sent)
            except StopIteration as stop:
                return stop.value  # type: ignore[no-any-return]


async def _finish(coro: Coroutine[Any, Any, Result], yielded: Any) -> Result:
    return await _resume(coro, yielded)


class Pending:
    """Marker type: the coroutine suspended and continues in ``task``."""

    __slots__ = ("task",)

    def __init__(self, task: asyncio.Task[Any]) -> None:
        self.task = task


def step(coro: Coroutine[Any, Any, Result]) -> Result | Pending:
    """Run ``coro`` until it returns (its result) or suspends (a :class:`Pending`).

    An exception raised before the first suspension propagates to the caller.
    """
    try:
        yielded = coro.send(None)
    except StopIteration as stop:
        return stop.value  # type: ignore[no-any-return]
    return Pending(asyncio.ensure_future(_finish(coro, yielded)))
