"""Eager stepping: a record's coroutine runs at once where the Python version allows, and
one that suspends continues in a task that carries its result, errors and cancellation."""

from __future__ import annotations

import asyncio
import contextvars
from collections.abc import Coroutine
from typing import Any

import pytest

from pipeline.runtime.eager import EAGER_TASKS, Pending, step

pytestmark = pytest.mark.unit

eager_only = pytest.mark.skipif(not EAGER_TASKS, reason="eager tasks need Python 3.12+")
lazy_only = pytest.mark.skipif(EAGER_TASKS, reason="Python 3.11 has no eager tasks")

current_record: contextvars.ContextVar[str] = contextvars.ContextVar("current_record")


class HandlerFailed(Exception):
    pass


async def _await_done_future(value: int) -> int:
    done: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    done.set_result(value)
    return await done  # a finished future does not suspend


async def _await_gate(gate: asyncio.Future[int], offset: int = 0) -> int:
    return await gate + offset


def _waiter(gate: asyncio.Future[int], seen: list[str]) -> Coroutine[Any, Any, int]:
    async def wait_for_gate() -> int:
        try:
            return await gate
        except asyncio.CancelledError:
            seen.append("cancelled")
            raise

    return wait_for_gate()


async def _fail_at_once() -> int:
    raise HandlerFailed("bad record")


async def _let_scheduled_callbacks_run() -> None:
    """Yield to the loop once, so a task created just before has taken its first step."""
    loop = asyncio.get_running_loop()
    tick: asyncio.Future[None] = loop.create_future()
    loop.call_soon(tick.set_result, None)
    await tick


async def test_coroutine_that_never_suspends_yields_its_value() -> None:
    result = step(_await_done_future(7))

    value = await result.task if isinstance(result, Pending) else result
    assert value == 7


@eager_only
async def test_coroutine_that_never_suspends_returns_its_value_without_a_task() -> None:
    tasks_before = asyncio.all_tasks()

    assert step(_await_done_future(7)) == 7
    assert asyncio.all_tasks() == tasks_before


@eager_only
async def test_exception_before_the_first_suspension_propagates_to_the_caller() -> None:
    with pytest.raises(HandlerFailed, match="bad record"):
        step(_fail_at_once())


@lazy_only
async def test_without_eager_tasks_every_coroutine_gets_an_ordinary_task() -> None:
    result = step(_await_done_future(7))

    assert isinstance(result, Pending)
    assert not result.task.done()  # nothing ran yet
    assert await result.task == 7


@lazy_only
async def test_without_eager_tasks_an_immediate_exception_reaches_the_task() -> None:
    result = step(_fail_at_once())

    assert isinstance(result, Pending)
    with pytest.raises(HandlerFailed, match="bad record"):
        await result.task


async def test_suspending_coroutine_continues_in_a_task_that_resolves_to_its_value() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    result = step(_await_gate(gate, offset=1))

    assert isinstance(result, Pending)
    assert not result.task.done()
    gate.set_result(41)
    assert await result.task == 42


async def test_suspending_coroutine_gets_each_awaited_value_in_turn() -> None:
    loop = asyncio.get_running_loop()
    gates: list[asyncio.Future[int]] = [loop.create_future() for _ in range(3)]

    async def sum_gates() -> int:
        return sum([await gate for gate in gates])

    result = step(sum_gates())
    assert isinstance(result, Pending)
    for number, gate in enumerate(gates, start=1):
        gate.set_result(number)
    assert await result.task == 6


async def test_exception_after_suspension_reaches_the_task() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def fail_after_waiting() -> int:
        await gate
        raise HandlerFailed("late failure")

    result = step(fail_after_waiting())
    assert isinstance(result, Pending)
    gate.set_result(0)
    with pytest.raises(HandlerFailed, match="late failure"):
        await result.task


async def test_failed_awaited_future_raises_inside_the_coroutine() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def recover() -> str:
        try:
            await gate
        except HandlerFailed as exc:
            return f"recovered from {exc}"
        return "no error"

    result = step(recover())
    assert isinstance(result, Pending)
    gate.set_exception(HandlerFailed("service down"))
    assert await result.task == "recovered from service down"


async def test_cancelling_the_task_right_after_step_cancels_the_suspended_coroutine() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen: list[str] = []
    result = step(_waiter(gate, seen))
    assert isinstance(result, Pending)

    result.task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await result.task
    if EAGER_TASKS:  # the coroutine had started: it must see the cancellation
        assert seen == ["cancelled"]
        assert gate.cancelled()
    else:  # the coroutine never started, so there is nothing to clean up
        assert seen == []


async def test_cancelling_the_running_task_cancels_the_suspended_coroutine() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    seen: list[str] = []
    result = step(_waiter(gate, seen))
    assert isinstance(result, Pending)
    await _let_scheduled_callbacks_run()

    result.task.cancel()

    with pytest.raises(asyncio.CancelledError):
        await result.task
    assert seen == ["cancelled"]
    assert gate.cancelled()


async def test_cancellation_the_coroutine_absorbs_lets_the_task_return() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()

    async def absorb_cancel() -> str:
        try:
            await gate
        except asyncio.CancelledError:
            return "cleaned up"
        return "finished"

    result = step(absorb_cancel())
    assert isinstance(result, Pending)
    await _let_scheduled_callbacks_run()

    result.task.cancel()

    assert await result.task == "cleaned up"


async def test_context_variables_set_by_a_suspending_coroutine_stay_in_its_task() -> None:
    gate: asyncio.Future[int] = asyncio.get_running_loop().create_future()
    token = current_record.set("caller")

    async def handle() -> str:
        current_record.set("record 5")
        await gate
        return current_record.get()

    try:
        result = step(handle())
        assert current_record.get() == "caller"
        assert isinstance(result, Pending)
        gate.set_result(0)
        assert await result.task == "record 5"
        assert current_record.get() == "caller"
    finally:
        current_record.reset(token)
