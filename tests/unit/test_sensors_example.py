"""The sensor example's handlers (``examples/sensors/``), called the way the runtime
calls them, with a fresh store in place of the process's."""

from __future__ import annotations

import asyncio

import pytest

from examples.sensors.flow import ALERTS, CHECKED, pipeline
from examples.sensors.models import Alert, Reading
from examples.sensors.store import ReadingStore, get_store
from pipeline import FatalError, Output

pytestmark = pytest.mark.unit


def reading(device: str = "probe-1", celsius: float = 21.0, seq: int = 1) -> Reading:
    return Reading(
        reading_id=f"{device}/{seq}", device_id=device, site="north", celsius=celsius, seq=seq
    )


async def test_an_impossible_reading_is_dropped() -> None:
    screen = pipeline.handler("screen_readings")
    assert await screen(reading(celsius=999.0)) is None
    assert await screen(reading(celsius=21.0)) == reading(celsius=21.0)


async def test_a_hot_reading_is_passed_on_and_alerted_under_its_site() -> None:
    outputs = await pipeline.handler("raise_alerts")(reading(celsius=95.0))
    alert = Alert(**reading(celsius=95.0).model_dump())
    assert outputs == [Output(CHECKED, reading(celsius=95.0)), Output(ALERTS, alert, "north")]
    assert await pipeline.handler("raise_alerts")(reading()) == [Output(CHECKED, reading())]


async def test_a_batch_is_stored_except_a_broken_devices_readings() -> None:
    store = ReadingStore(known_broken=frozenset({"roof-3"}))
    write = pipeline.handler("store_readings", {get_store: lambda: store})
    good, broken = reading("probe-1"), reading("roof-3")
    outcomes = await asyncio.gather(write(good), write(broken), return_exceptions=True)
    assert outcomes[0] == good
    assert isinstance(outcomes[1], FatalError)
    assert "roof-3" in str(outcomes[1])
    assert store.rows == {good.reading_id: good}


def test_every_stage_identifies_readings_for_deduplication() -> None:
    assert all(spec.identify is not None for spec in pipeline.stages.values())
    assert pipeline.entry_topics() == ["sensors.readings"]
