"""The checked-in AsyncAPI document is the one the code builds, and it has every channel."""

from __future__ import annotations

from pathlib import Path
from typing import Any

import pytest
from pydantic import BaseModel

from pipeline import Output, Pipeline
from pipeline.asyncapi import PipelineDocument, pipeline_asyncapi, reference_settings
from pipeline.kafka.topology import STAGE_TOPICS, Naming, dead_letter_topic, retry_topic
from pipeline.loading import LoadedPipeline

CHECKED_IN = Path(__file__).parents[2] / "docs" / "asyncapi.json"
REGENERATE = "regenerate it: pipeline asyncapi --reference -o docs/asyncapi.json"
INPUT_SCHEMAS = {
    "validate": "OrderEvent",
    "reserve": "OrderProgress",
    "pay": "OrderProgress",
    "fulfil": "OrderProgress",
}


@pytest.fixture(scope="module")
def document() -> PipelineDocument:
    return pipeline_asyncapi(reference_settings())


def _operations(doc: dict[str, Any]) -> dict[tuple[str, str], dict[str, Any]]:
    """(address, send|receive) -> the channel it is on."""
    found = {}
    for operation in doc["operations"].values():
        channel = doc["channels"][operation["channel"]["$ref"].rsplit("/", 1)[-1]]
        found[(channel["address"], operation["action"])] = channel
    return found


def _payload(doc: dict[str, Any], channel: dict[str, Any]) -> dict[str, Any]:
    (reference,) = channel["messages"].values()
    return dict(doc["components"]["messages"][reference["$ref"].rsplit("/", 1)[-1]])


def test_checked_in_document_is_what_the_code_generates(document: PipelineDocument) -> None:
    assert CHECKED_IN.exists(), REGENERATE
    assert CHECKED_IN.read_text() == document.to_json(), (
        f"docs/asyncapi.json is stale; {REGENERATE}"
    )


def test_every_stage_retry_and_dead_letter_channel_is_present(document: PipelineDocument) -> None:
    doc = document.document
    operations = _operations(doc)
    levels = reference_settings().topics.retry_levels
    assert levels > 0
    for stage, (source, sink) in STAGE_TOPICS.items():
        assert (source, "receive") in operations, stage
        assert (sink, "send") in operations, stage
        assert (dead_letter_topic(stage), "send") in operations, stage
        for level in range(1, levels + 1):
            assert (retry_topic(stage, level), "receive") in operations, (stage, level)
            assert (retry_topic(stage, level), "send") in operations, (stage, level)
    assert doc["asyncapi"].startswith("3.")


def test_stage_inputs_and_retries_carry_the_stage_input_schema(document: PipelineDocument) -> None:
    doc = document.document
    operations = _operations(doc)
    for stage, (source, _sink) in STAGE_TOPICS.items():
        wanted = {"$ref": f"#/components/schemas/{INPUT_SCHEMAS[stage]}"}
        assert _payload(doc, operations[(source, "receive")])["payload"] == wanted
        retry = _payload(doc, operations[(retry_topic(stage, 1), "send")])
        assert retry["payload"] == wanted
        assert "pipeline.retry.due_at_ms" in retry["headers"]["properties"]
        dead = _payload(doc, operations[(dead_letter_topic(stage), "send")])
        assert "pipeline.error.type" in dead["headers"]["properties"]
    event = doc["components"]["schemas"]["OrderEvent"]
    assert event["discriminator"]["propertyName"] == "kind"
    assert "EmptyPayload" not in doc["components"]["schemas"]


def test_the_topic_prefix_reaches_every_address() -> None:
    settings = reference_settings()
    prefixed = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"prefix": "acme."})}
    )
    doc = pipeline_asyncapi(prefixed).document
    addresses = {channel["address"] for channel in doc["channels"].values()}
    assert Naming("acme.").dead_letter("pay") in addresses
    assert all(address.startswith("acme.") for address in addresses)


class Reading(BaseModel):
    device_id: str
    celsius: float


class Alert(BaseModel):
    site: str


def _sensors() -> Pipeline:
    pipeline = Pipeline("sensors", description="Readings in, alerts out.")

    @pipeline.stage(source="readings.raw", sink="readings.clean")
    async def clean(reading: Reading) -> Reading | None:
        return reading

    @pipeline.stage(source="readings.clean", sink="readings.checked", outputs=["alerts"])
    async def check(reading: Reading) -> list[Output]:
        return [Output("readings.checked", reading), Output("alerts", Alert(site="a"))]

    @pipeline.stage(source="readings.checked", sink="readings.stored")
    async def store(reading: Reading) -> Reading:
        return reading

    return pipeline


def test_a_users_pipeline_is_documented_from_its_own_stages() -> None:
    sensors = _sensors()
    flow = LoadedPipeline(sensors.name, sensors.stages, sensors.topics(), sensors.description)

    doc = pipeline_asyncapi(reference_settings(), flow=flow).document

    assert doc["info"]["title"] == "sensors"
    assert doc["info"]["description"] == "Readings in, alerts out."
    operations = _operations(doc)
    reading = {"$ref": "#/components/schemas/Reading"}
    for topic in ("readings.raw", "readings.clean", "readings.checked"):
        assert _payload(doc, operations[(topic, "receive")])["payload"] == reading
    for topic in ("readings.clean", "readings.checked", "readings.stored"):
        # readings.checked is written as Output(...): the model store reads documents it
        assert _payload(doc, operations[(topic, "send")])["payload"] == reading
    alerts = _payload(doc, operations[("alerts", "send")])["payload"]
    assert "not in its handler's signature" in alerts["description"]
    for stage in sensors:
        assert (dead_letter_topic(stage), "send") in operations
        assert (retry_topic(stage, 1), "receive") in operations
    assert "orders.events" not in {channel["address"] for channel in doc["channels"].values()}
    assert set(doc["components"]["schemas"]) == {"Reading"}
