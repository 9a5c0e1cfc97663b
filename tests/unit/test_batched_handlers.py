"""Batched handlers through the engine: one call for the events started together, at most
one per key, each event's outcome on its own path."""

from __future__ import annotations

import asyncio
from typing import Any

import orjson
import pytest

from pipeline import Pipeline, RetryableError
from pipeline.errors import ConfigurationError
from pipeline.kafka.topology import Naming
from pipeline.runtime.eager import EAGER_TASKS
from pipeline.runtime.engine import StageEngine
from pipeline.runtime.observer import NullObserver
from pipeline.settings import StageSettings
from tests.unit.loop_iterations import counting_iterations
from tests.unit.test_engine_accounting import AckingSink, Event, _until, record

pytestmark = pytest.mark.unit


def batched_engine(pipeline: Pipeline, **settings: Any) -> tuple[StageEngine, AckingSink]:
    spec = next(iter(pipeline.stages.values()))
    sink = AckingSink()
    stage_settings = StageSettings(**{"in_process_attempts": 1, "dedupe_window": 0, **settings})
    engine = StageEngine(spec, None, stage_settings, sink, NullObserver(), Naming())  # type: ignore[arg-type]
    engine.start(None)
    return engine, sink


def values(sink: AckingSink, topic: str = "out") -> list[tuple[str, int]]:
    decoded = [orjson.loads(value) for t, _, value, _ in sink.appended if t == topic]
    return [(event["key"], event["n"]) for event in decoded]


async def test_one_call_holds_the_heads_of_the_keys_and_later_events_follow_in_order() -> None:
    pipeline = Pipeline("p")
    calls: list[list[tuple[str, int]]] = []

    @pipeline.stage(source="in", sink="out")
    async def bulk(events: list[Event]) -> list[Event]:
        calls.append([(e.key, e.n) for e in events])
        await asyncio.sleep(0)  # a remote call
        return events

    engine, sink = batched_engine(pipeline)
    await engine.submit([record(0, "a"), record(1, "b"), record(2, "a"), record(3, "c")])
    await _until(lambda: len(sink.appended) == 4)
    # the first call has one event per key; a's second event follows in the next call
    assert calls == [[("a", 0), ("b", 1), ("c", 3)], [("a", 2)]]
    assert [v for v in values(sink) if v[0] == "a"] == [("a", 0), ("a", 2)]
    sink.acknowledge_all()
    assert engine.in_flight == 0


@pytest.mark.skipif(
    not EAGER_TASKS, reason="whether a call waits is known from an eager start (3.12+)"
)
async def test_a_handler_that_does_not_wait_runs_a_fetchs_rounds_in_one_loop_iteration() -> None:
    # One call per event of the busiest key (a has three): all in the iteration that
    # started them, so their outputs are appended together and leave in one batch per
    # partition, as a per-record stage's do.
    pipeline = Pipeline("p")
    calls: list[tuple[int, list[tuple[str, int]]]] = []

    async with counting_iterations() as iterations:

        @pipeline.stage(source="in", sink="out")
        async def bulk(events: list[Event]) -> list[Event]:
            calls.append((iterations.count, [(e.key, e.n) for e in events]))
            return events

        engine, sink = batched_engine(pipeline)
        await engine.submit([record(0, "a"), record(1, "b"), record(2, "a"), record(3, "a")])
        await _until(lambda: len(sink.appended) == 4)
    assert [events for _, events in calls] == [[("a", 0), ("b", 1)], [("a", 2)], [("a", 3)]]
    assert len({at for at, _ in calls}) == 1
    assert [v for v in values(sink) if v[0] == "a"] == [("a", 0), ("a", 2), ("a", 3)]


async def test_after_calls_that_waited_the_next_events_go_in_one_call_together() -> None:
    # Two calls wait for the same reply and return in one loop iteration: the next
    # events of their keys join in one call, not one call each.
    pipeline = Pipeline("p")
    reply = asyncio.Event()
    calls: list[list[tuple[str, int]]] = []

    @pipeline.stage(source="in", sink="out", max_batch_size=2)
    async def bulk(events: list[Event]) -> list[Event]:
        calls.append([(e.key, e.n) for e in events])
        await reply.wait()
        return events

    engine, sink = batched_engine(pipeline)
    await engine.submit(
        [record(0, "a"), record(1, "b"), record(2, "c"), record(3, "a"), record(4, "c")]
    )
    await _until(lambda: len(calls) == 2)
    reply.set()
    await _until(lambda: len(sink.appended) == 5)
    assert calls == [[("a", 0), ("b", 1)], [("c", 2)], [("a", 3), ("c", 4)]]


async def test_a_failed_event_takes_the_failure_path_alone() -> None:
    pipeline = Pipeline("p")

    @pipeline.stage(source="in", sink="out", in_process_attempts=1)
    async def bulk(events: list[Event]) -> list[Event | Exception | None]:
        return [ValueError("bad row") if e.n == 1 else None if e.n == 2 else e for e in events]

    engine, sink = batched_engine(pipeline)
    await engine.submit([record(0, "a"), record(1, "b"), record(2, "c")])
    await _until(lambda: len(sink.appended) == 2)
    assert sorted(sink.topics()) == ["bulk.dlq", "out"]
    assert values(sink) == [("a", 0)]  # c was dropped: no output, yet finished
    sink.acknowledge_all()
    assert engine.in_flight == 0
    assert engine.describe()["partitions"]["in[0]"]["safe_offset"] == 3


async def test_a_raising_handler_fails_every_event_of_its_call_on_its_own_path() -> None:
    pipeline = Pipeline("p")
    calls = 0

    @pipeline.stage(source="in", sink="out")
    async def bulk(events: list[Event]) -> list[Event]:
        nonlocal calls
        calls += 1
        if calls == 1:
            raise RetryableError("the store is down")
        return events

    engine, sink = batched_engine(pipeline, in_process_attempts=2)
    await engine.submit([record(0, "a"), record(1, "b")])
    await _until(lambda: len(sink.appended) == 2)
    assert sorted(values(sink)) == [("a", 0), ("b", 1)]  # both retried in process, together
    assert calls == 2


async def test_a_wrong_number_of_outcomes_dead_letters_the_events() -> None:
    pipeline = Pipeline("p")

    @pipeline.stage(source="in", sink="out")
    async def bulk(events: list[Event]) -> list[Event]:
        return events[:1]

    engine, sink = batched_engine(pipeline)
    await engine.submit([record(0, "a"), record(1, "b")])
    await _until(lambda: len(sink.appended) == 2)
    assert all(topic.endswith(".dlq") for topic in sink.topics())


def test_a_batched_stage_declares_its_element_types() -> None:
    pipeline = Pipeline("p")

    @pipeline.stage(source="in", sink="out", max_batch_size=50)
    async def bulk(events: list[Event]) -> list[Event | None]:
        return list(events)

    spec = pipeline.stages["bulk"]
    assert spec.input_type is Event
    assert spec.output_type is Event
    with pytest.raises(ConfigurationError):
        pipeline.stage(source="in", sink="out", max_batch_size=0)
