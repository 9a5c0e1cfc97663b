"""Handler outcomes through the engine: drop, fan-out, re-keying, undeclared topics,
and a dropped record back from the ladder releasing its key."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from pipeline.errors import NoOutput
from pipeline.failures.holds import Hold
from pipeline.failures.ladder import RETRY_DUE_AT_MS, RETRY_LEVEL
from pipeline.kafka.topology import Naming
from pipeline.runtime.dedupe import record_identity
from pipeline.runtime.engine import StageEngine
from pipeline.runtime.observer import NullObserver
from pipeline.runtime.outputs import Output, as_records
from pipeline.runtime.stage import StageSpec
from pipeline.settings import StageSettings
from pipeline.stages.services import ServiceUnavailable
from tests.unit.records import consumer_record
from tests.unit.test_engine_accounting import AckingSink, Event, record

pytestmark = pytest.mark.unit


class Alert(BaseModel):
    site: str
    n: int


def engine_with(handler: Any, **spec: Any) -> tuple[StageEngine, AckingSink]:
    stage: StageSpec[Event, Any] = StageSpec(
        name="s", source="in", sink="out", input_type=Event, handler=handler, **spec
    )
    sink = AckingSink()
    settings = StageSettings(in_process_attempts=1, dedupe_window=0)
    engine = StageEngine(stage, None, settings, sink, NullObserver(), Naming("p."))  # type: ignore[arg-type]
    engine.start(None)
    return engine, sink


async def test_fan_out_finishes_the_input_only_when_every_output_is_acknowledged() -> None:
    async def handler(event: Event, services: Any) -> list[Output]:
        return [
            Output("out", event),
            Output("alerts", Alert(site="s1", n=event.n), key="s1"),
            Output("alerts", b"raw", key=b"s2"),
        ]

    engine, sink = engine_with(handler, outputs=("alerts",))
    await engine.submit([record(0, "a")])
    assert [(t, k) for t, k, _, _ in sink.appended] == [
        ("p.out", b"a"),
        ("p.alerts", b"s1"),
        ("p.alerts", b"s2"),
    ]
    receipt = sink.appended[0][3]
    assert all(r is receipt for *_, r in sink.appended)  # one input, one receipt
    assert receipt.outstanding == 3
    sink.acknowledge_all()
    assert engine.in_flight == 0


async def test_a_returned_event_is_keyed_by_the_stages_key() -> None:
    async def handler(event: Event, services: Any) -> Alert:
        return Alert(site=f"site-{event.n % 2}", n=event.n)

    engine, sink = engine_with(handler, key=lambda alert: alert.site)
    await engine.submit([record(0, "a"), record(1, "a")])
    assert [(t, k) for t, k, _, _ in sink.appended] == [("p.out", b"site-0"), ("p.out", b"site-1")]


async def test_an_output_to_an_undeclared_topic_dead_letters_the_input() -> None:
    async def handler(event: Event, services: Any) -> Output:
        return Output("elsewhere", event)

    engine, sink = engine_with(handler)
    await engine.submit([record(0, "a")])
    [(topic, key, _, _)] = sink.appended
    assert (topic, key) == ("p.s.dlq", b"a")


async def test_a_record_dropped_on_its_way_back_from_the_ladder_releases_its_key() -> None:
    """Offset 0 fails and climbs, holding key a; offset 1 (key a) waits. Back from the
    ladder, the handler drops it: the key's release is journaled and offset 1 runs."""
    attempts: dict[int, int] = {}

    async def handler(event: Event, services: Any) -> Event | None:
        attempts[event.n] = attempts.get(event.n, 0) + 1
        if event.n == 0 and attempts[0] == 1:
            raise ServiceUnavailable("down")
        return None if event.n == 0 else event

    engine, sink = engine_with(handler)
    await engine.submit([record(0, "a"), record(1, "a")])
    assert sink.topics() == ["p.s.holds", "p.s.retry.1"]
    hold = engine._ledger.holds[(0, b"a")]
    assert isinstance(hold, Hold)
    sink.acknowledge_all()
    back = consumer_record(
        "p.s.retry.1",
        0,
        b"a",
        Event(key="a", n=0).model_dump_json().encode(),
        headers=[(RETRY_LEVEL, b"1"), (RETRY_DUE_AT_MS, b"0"), ("pipeline.attempt", b"1")],
    )
    await engine.submit([back])
    await asyncio.sleep(0)
    assert sink.topics() == ["p.s.holds", "p.out"]  # the release, then offset 1's output
    assert sink.appended[0][2] is None  # a tombstone: the key is no longer held
    sink.acknowledge_all()
    assert engine.in_flight == 0


def test_as_records_refuses_what_is_not_an_output() -> None:
    for result in ({"a": 1}, [Output("out", b"x"), "y"], 42):
        with pytest.raises(NoOutput, match="handler returned"):
            as_records(result, input_key=b"k", sink="out", declared={"out": "out"}, key_of=None)


async def test_outputs_and_dead_letters_carry_the_inputs_identity_for_crash_dedupe() -> None:
    """A stage whose outputs do not embed the input's id (here: an alert) stamps it on
    them, so the identities read from its output tails after a crash match."""

    async def handler(event: Event, services: Any) -> Alert:
        if event.n == 1:
            raise ValueError("bad reading")
        return Alert(site="s", n=event.n)

    stage: StageSpec[Event, Any] = StageSpec(
        name="s",
        source="in",
        sink="out",
        input_type=Event,
        handler=handler,
        identify=lambda event: f"reading-{event.n}",
    )
    sink = AckingSink()
    settings = StageSettings(in_process_attempts=1, dedupe_window=100)
    engine = StageEngine(stage, None, settings, sink, NullObserver(), Naming())  # type: ignore[arg-type]
    engine.start(None)
    await engine.submit([record(0, "a"), record(1, "b")])
    written = [
        consumer_record(topic, i, key, value, headers=headers)
        for i, (topic, key, value, _) in enumerate(sink.appended)
        for headers in [sink.headers[i]]
    ]
    assert [(r.topic, record_identity(r)) for r in written] == [
        ("out", "reading-0"),
        ("s.dlq", "reading-1"),
    ]
