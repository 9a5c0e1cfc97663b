"""Declaring a pipeline: what ``@pipeline.stage`` accepts, refuses and derives."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from pydantic import BaseModel

from pipeline import Depends, Output, Pipeline
from pipeline.errors import ConfigurationError
from pipeline.settings import StageSettings
from tests.unit.loop_iterations import counting_iterations

pytestmark = pytest.mark.unit


class Reading(BaseModel):
    site: str
    value: float


class Store:
    def __init__(self) -> None:
        self.saved: list[Reading] = []


def test_a_stage_is_derived_from_its_handler() -> None:
    pipeline = Pipeline("sensors")

    @pipeline.stage(source="raw", sink="clean", key=lambda r: r.site, outputs=["alerts"])
    async def clean(reading: Reading) -> Reading | None:
        """Drop what no sensor can read."""
        return reading if reading.value >= -273 else None

    spec = pipeline.stages["clean"]
    assert (spec.source, spec.output_topics) == ("raw", ("clean", "alerts"))
    assert spec.input_type is Reading
    assert spec.output_type is Reading
    assert spec.description == "Drop what no sensor can read."
    assert pipeline.topics() == ["raw", "clean", "alerts"]
    assert pipeline.entry_topics() == ["raw"]
    assert pipeline.terminal_topics() == ["clean", "alerts"]


def test_per_stage_settings_are_the_stages_defaults() -> None:
    pipeline = Pipeline("p")

    @pipeline.stage(source="a", sink="b", guarantee="exactly_once", max_in_flight=7)
    async def tuned(reading: Reading) -> Reading:
        return reading

    settings = pipeline.stages["tuned"].settings_for(StageSettings())
    assert settings.max_in_flight == 7
    assert settings.guarantee_of("tuned") == "exactly_once"


def test_a_stage_whose_ladder_has_no_retry_topics_is_refused_before_it_runs() -> None:
    from pipeline.app import create_app
    from pipeline.settings import Settings

    pipeline = Pipeline("p")

    @pipeline.stage(source="a", sink="b", retry_delays_s=[1, 5, 30, 120])
    async def patient(reading: Reading) -> Reading:
        return reading

    with pytest.raises(ConfigurationError, match="4 retry delays but PIPELINE_TOPICS_RETRY"):
        create_app(Settings(), catalog=pipeline.stages, http=False)


@pytest.mark.parametrize(
    ("source", "why"),
    [
        ("def handler(reading: Reading) -> Reading: return reading", "async def"),
        ("async def handler(reading) -> None: return None", "annotate the first parameter"),
        (
            "async def handler(reading: Reading, limit: int = 3) -> None: return None",
            "neither the event nor a Depends",
        ),
        (
            "def opened():\n    yield Store()\n"
            "async def handler(reading: Reading, store: Store = Depends(opened)) -> None:\n"
            "    return None",
            "yields",
        ),
    ],
)
def test_a_handler_the_runtime_cannot_call_is_refused_when_declared(source: str, why: str) -> None:
    namespace: dict[str, Any] = {"Reading": Reading, "Store": Store, "Depends": Depends}
    exec(source, namespace)
    pipeline = Pipeline("p")
    with pytest.raises(ConfigurationError, match=why):
        pipeline.stage(source="a", sink="b")(namespace["handler"])


def test_two_stages_of_one_name_are_refused() -> None:
    pipeline = Pipeline("p")

    async def twice(reading: Reading) -> Reading:
        return reading

    pipeline.stage(source="a", sink="b")(twice)
    with pytest.raises(ConfigurationError, match="two stages"):
        pipeline.stage(source="b", sink="c")(twice)


async def test_dependencies_are_resolved_once_and_can_be_overridden() -> None:
    made: list[Store] = []

    def make_store() -> Store:
        made.append(Store())
        return made[-1]

    pipeline = Pipeline("p")

    @pipeline.stage(source="a", sink="b")
    async def save(reading: Reading, store: Store = Depends(make_store)) -> Output:
        store.saved.append(reading)
        return Output("b", reading)

    call = pipeline.handler("save")
    await asyncio.gather(*(call(Reading(site="s", value=n)) for n in range(5)))
    assert len(made) == 1
    assert [r.value for r in made[0].saved] == [0, 1, 2, 3, 4]

    fake = Store()
    overridden = pipeline.handler("save", {make_store: lambda: fake})
    await overridden(Reading(site="s", value=9))
    assert [r.value for r in fake.saved] == [9]
    assert len(made) == 1


async def test_calls_made_while_dependencies_resolve_all_go_on_in_one_loop_iteration() -> None:
    # A whole first fetch calls the handler while its dependencies resolve: all of them
    # wait for one resolution and then run together, not one per loop iteration.
    ran_at: list[int] = []
    opened: list[Store] = []

    async def open_store() -> Store:
        await asyncio.sleep(0)  # connecting
        opened.append(Store())
        return opened[-1]

    pipeline = Pipeline("p")
    async with counting_iterations() as iterations:

        @pipeline.stage(source="a", sink="b")
        async def save(reading: Reading, store: Store = Depends(open_store)) -> Reading:
            ran_at.append(iterations.count)
            return reading

        call = pipeline.handler("save")
        done = await asyncio.gather(*(call(Reading(site="s", value=n)) for n in range(50)))
    assert [r.value for r in done] == list(range(50))
    assert len(opened) == 1
    assert len(ran_at) == 50
    assert len(set(ran_at)) == 1


async def test_a_failed_resolution_fails_its_waiting_calls_and_the_next_call_retries() -> None:
    attempts = 0

    async def open_store() -> Store:
        nonlocal attempts
        attempts += 1
        await asyncio.sleep(0)  # connecting
        if attempts == 1:
            raise ConnectionError("the store is not up yet")
        return Store()

    pipeline = Pipeline("p")

    @pipeline.stage(source="a", sink="b")
    async def save(reading: Reading, store: Store = Depends(open_store)) -> Reading:
        return reading

    call = pipeline.handler("save")
    failed = await asyncio.gather(
        *(call(Reading(site="s", value=n)) for n in range(3)), return_exceptions=True
    )
    assert [type(f) for f in failed] == [ConnectionError] * 3
    assert (await call(Reading(site="s", value=7))).value == 7
    assert attempts == 2
