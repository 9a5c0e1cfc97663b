"""``pipeline topics apply`` is idempotent and reports drift instead of hiding it."""

from __future__ import annotations

from aiokafka.admin import NewTopic

from pipeline.kafka.admin import admin_client, apply_topics
from pipeline.kafka.topology import ORDERS_PAID, pipeline_topics
from pipeline.settings import Settings


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
