"""``pipeline topics apply`` is idempotent and reports drift instead of hiding it; a stage
whose topics do not exist says so and exits."""

from __future__ import annotations

import asyncio

import pytest
from aiokafka.admin import NewTopic

from pipeline.kafka.admin import admin_client, apply_topics
from pipeline.kafka.topology import ORDERS_PAID, pipeline_topics
from pipeline.settings import Settings
from tests.integration.helpers import start_stage_process


async def test_apply_twice_creates_once_then_reports_unchanged(settings: Settings) -> None:
    wanted = pipeline_topics(settings.topics)
    first = await apply_topics(settings.kafka, wanted)
    second = await apply_topics(settings.kafka, wanted)
    assert sorted(first.created) == sorted(t.name for t in wanted)
    assert second.created == []
    assert sorted(second.unchanged) == sorted(t.name for t in wanted)


async def test_a_topic_with_other_partitions_is_reported_as_drift(settings: Settings) -> None:
    wanted = pipeline_topics(settings.topics)
    wrong = f"{settings.topics.prefix}{ORDERS_PAID}"
    async with admin_client(settings.kafka) as admin:
        await admin.create_topics([NewTopic(wrong, 3, 1)])
    report = await apply_topics(settings.kafka, wanted)
    assert not report.clean
    assert "partitions: wanted 12, found 3" in report.drift[wrong], report.drift


@pytest.mark.parametrize("http", ["false", "true"])  # true: as deployed, under uvicorn
async def test_a_stage_without_its_topics_refuses_to_start_and_says_how_to_create_them(
    settings: Settings, http: str
) -> None:
    process = start_stage_process(
        settings, "validate", PIPELINE_HTTP_ENABLED=http, PIPELINE_HTTP_PORT="0"
    )
    try:
        output, _ = await asyncio.to_thread(process.communicate, timeout=60)
    finally:
        if process.poll() is None:
            process.kill()

    assert process.returncode == 2, output.decode()[-2000:]
    text = " ".join(output.decode().split())  # unwrapped
    assert f"topics missing on the broker: {settings.topics.prefix}orders.validated" in text
    assert "pipeline topics apply" in text
    async with admin_client(settings.kafka) as admin:  # and none was created meanwhile
        assert [t for t in await admin.list_topics() if t.startswith(settings.topics.prefix)] == []
