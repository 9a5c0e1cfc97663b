"""The engine's in-flight and drain accounting, with a sink the test acknowledges.

Each test reproduces a defect found by reading the engine: a drain waiting for records
that were already finished, a revoke counting finished records twice, and a handler
returning nothing leaving its record unfinished forever.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

import pytest
from aiokafka.structs import TopicPartition
from pydantic import BaseModel

from pipeline.kafka.topology import Naming
from pipeline.runtime.core.ledger import StageLedger
from pipeline.runtime.engine import StageEngine
from pipeline.runtime.observer import NullObserver
from pipeline.runtime.stage import StageSpec
from pipeline.settings import StageSettings
from pipeline.stages.services import ServiceUnavailable
from tests.unit.records import consumer_record

pytestmark = pytest.mark.unit

SOURCE = "in"


class Event(BaseModel):
    key: str
    n: int


class AckingSink:
    """Keeps appended records until the test acknowledges them, like a producer."""

    def __init__(self) -> None:
        self.appended: list[tuple[str, bytes | None, bytes, Any]] = []
        self.headers: list[list[tuple[str, bytes]]] = []
        self._delivered: Callable[[list[Any], asyncio.Future[Any]], None] | None = None

    def bind(self, on_delivered: Callable[[list[Any], asyncio.Future[Any]], None]) -> None:
        self._delivered = on_delivered

    def append(
        self, topic: str, key: bytes | None, value: bytes, headers: Any, receipt: Any
    ) -> None:
        self.appended.append((topic, key, value, receipt))
        self.headers.append(list(headers))

    def acknowledge_all(self) -> None:
        assert self._delivered is not None
        delivery: asyncio.Future[Any] = asyncio.get_running_loop().create_future()
        delivery.set_result(None)
        receipts = [receipt for *_, receipt in self.appended]
        self.appended.clear()
        self.headers.clear()
        self._delivered(receipts, delivery)

    def topics(self) -> list[str]:
        return [topic for topic, *_ in self.appended]


def engine_for(handler: Any, **settings: Any) -> tuple[StageEngine, AckingSink]:
    spec: StageSpec[Event, Event] = StageSpec(
        name="s", source=SOURCE, sink="out", input_type=Event, handler=handler
    )
    sink = AckingSink()
    stage_settings = StageSettings(in_process_attempts=1, dedupe_window=0, **settings)
    engine = StageEngine(spec, None, stage_settings, sink, NullObserver(), Naming())  # type: ignore[arg-type]
    engine.start(None)
    return engine, sink


def record(offset: int, key: str) -> Any:
    value = Event(key=key, n=offset).model_dump_json().encode()
    return consumer_record(SOURCE, offset, key.encode(), value)


async def test_a_revoke_does_not_wait_for_records_finished_behind_a_held_key() -> None:
    """Offset 0 (key a) climbs the ladder and holds its key; offset 1 (key a) waits
    behind it and cannot finish here; offset 2 (key b) finishes. The revoke has nothing
    left to wait for and must end at once, not at its timeout."""

    async def handler(event: Event, services: Any) -> Event:
        if event.n == 0:
            raise ServiceUnavailable("down")
        return event

    engine, sink = engine_for(handler)
    await engine.submit([record(0, "a"), record(1, "a"), record(2, "b")])
    assert sorted(sink.topics()) == ["out", "s.holds", "s.retry.1"]
    sink.acknowledge_all()
    await asyncio.wait_for(engine.revoked({TopicPartition(SOURCE, 0)}, timeout_s=30), 5)
    assert engine.in_flight == 0


async def test_a_revoke_that_times_out_counts_each_record_once() -> None:
    """Offset 0 never finishes; offset 1 finishes out of order. When the revoke gives
    up on offset 0, the stage's in-flight total must drop to zero, not below it."""
    never = asyncio.Event()

    async def handler(event: Event, services: Any) -> Event:
        if event.n == 0:
            await never.wait()
        return event

    engine, sink = engine_for(handler)
    await engine.submit([record(0, "a"), record(1, "b")])
    sink.acknowledge_all()
    assert engine.in_flight == 1
    await engine.revoked({TopicPartition(SOURCE, 0)}, timeout_s=0.05)
    assert engine.in_flight == 0
    await asyncio.wait_for(engine.wait_idle(), 5)
    never.set()


@pytest.mark.parametrize("suspends", [False, True], ids=["at-once", "after-await"])
async def test_a_handler_returning_none_consumes_its_record_with_no_output(
    suspends: bool,
) -> None:
    async def handler(event: Event, services: Any) -> Event | None:
        if suspends:
            await asyncio.sleep(0)
        return None if event.n == 0 else event

    engine, sink = engine_for(handler)
    await engine.submit([record(0, "a"), record(1, "a")])
    await _until(lambda: len(sink.appended) == 1)
    assert sink.topics() == ["out"]
    sink.acknowledge_all()
    assert engine.in_flight == 0
    assert engine.describe()["partitions"]["in[0]"]["safe_offset"] == 2


@pytest.mark.parametrize("suspends", [False, True], ids=["at-once", "after-await"])
async def test_a_result_that_is_not_an_output_dead_letters_its_record(suspends: bool) -> None:
    async def handler(event: Event, services: Any) -> Any:
        if suspends:
            await asyncio.sleep(0)
        return {"not": "an event"} if event.n == 0 else event

    engine, sink = engine_for(handler)
    await engine.submit([record(0, "a"), record(1, "a")])
    await _until(lambda: len(sink.appended) == 2)
    assert sink.topics() == ["s.dlq", "out"]
    sink.acknowledge_all()
    assert engine.in_flight == 0


async def _until(condition: Callable[[], bool]) -> None:
    """Let the loop run the handler's continuation until ``condition`` holds."""
    for _ in range(1_000):
        if condition():
            return
        await asyncio.sleep(0)
    raise AssertionError("condition never held")


def test_records_below_a_new_assignments_committed_offset_are_not_taken() -> None:
    # A previous owner's last transaction committed offset 10 after this consumer
    # fetched from 5: the records in between are done already.
    ledger: StageLedger[object, object] = StageLedger()
    ledger.assign([("orders", 0)], {("orders", 0): 10})
    partition = ledger.open(("orders", 0))
    assert partition is not None
    assert not ledger.take(partition, 5)
    assert ledger.take(partition, 10)
    assert ledger.in_flight == 1
