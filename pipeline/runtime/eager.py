"""Run a record's coroutine without paying for a scheduled task when it never waits.

Most handler calls never suspend (validation, a service answering from memory), and a
task that waits for the next loop iteration costs more than the handler itself. On
Python 3.12+ the coroutine starts as an *eager* task: it runs at once, inside its own
task (so context variables and anyio cancel scopes behave), and only a coroutine that
really suspends is left to the loop. Python 3.11 has no eager tasks; there every record
gets an ordinary task (correct, slower).
"""

from __future__ import annotations

import asyncio
import sys
import typing
from collections.abc import Awaitable, Coroutine
from typing import Any, TypeVar

Result = TypeVar("Result")

EAGER_TASKS = sys.version_info >= (3, 12)


class Pending:
    """The call suspended and its outcome comes with ``task``."""

    __slots__ = ("task",)

    def __init__(self, task: asyncio.Future[Any]) -> None:
        self.task = task


def step(call: Awaitable[Result]) -> Result | Pending:
    """Run ``call`` until it returns (its result) or suspends (a :class:`Pending`).

    When it finishes without suspending, its exception propagates to the caller.
    """
    coro = typing.cast(Coroutine[Any, Any, Result], call)
    if EAGER_TASKS:
        task: asyncio.Task[Result] = asyncio.Task(  # type: ignore[call-arg,unused-ignore]
            coro, loop=asyncio.get_running_loop(), eager_start=True
        )
        if task.done():
            return task.result()
        return Pending(task)
    return Pending(asyncio.ensure_future(coro))
