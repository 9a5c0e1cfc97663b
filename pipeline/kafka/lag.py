"""Consumer lag of the stages' groups, and waiting for the pipeline to drain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Sequence

from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from pipeline.kafka.admin import admin_client, topic_partitions
from pipeline.kafka.connection import client_options, stop_consumer
from pipeline.kafka.topology import Naming
from pipeline.settings import KafkaSettings


async def end_offsets(settings: KafkaSettings, topics: Sequence[str]) -> dict[TopicPartition, int]:
    """The current end offset of every partition of ``topics``."""
    tps = await topic_partitions(settings, list(topics))
    if not tps:
        return {}
    consumer = AIOKafkaConsumer(**client_options(settings), enable_auto_commit=False)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await stop_consumer(consumer)


async def stage_lag(
    settings: KafkaSettings,
    stages: Sequence[str],
    naming: Naming | None = None,
    retry_levels: int = 3,
) -> dict[str, int]:
    """Per stage: records of its input and retry topics not yet committed by its group."""
    naming = naming or Naming()
    consumed = {
        stage: [naming.source(stage)]
        + [naming.retry(stage, level) for level in range(1, retry_levels + 1)]
        for stage in stages
    }
    ends = await end_offsets(settings, [topic for topics in consumed.values() for topic in topics])
    lag: dict[str, int] = {}
    async with admin_client(settings) as admin:
        for stage in stages:
            committed = await admin.list_consumer_group_offsets(naming.group(stage))
            lag[stage] = sum(
                end - (committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0)
                for tp, end in ends.items()
                if tp.topic in consumed[stage]
            )
    return lag


async def wait_until_drained(
    settings: KafkaSettings,
    stages: Sequence[str],
    *,
    naming: Naming | None = None,
    retry_levels: int = 3,
    timeout_s: float,
    poll_s: float = 0.5,
) -> dict[str, int]:
    """Poll until every stage's group has committed up to the end of its input, twice in
    a row (an upstream commit can add records downstream); returns the last lag seen."""
    deadline = time.monotonic() + timeout_s
    clean_checks = 0
    lag: dict[str, int] = {}
    while time.monotonic() < deadline:
        lag = await stage_lag(settings, stages, naming, retry_levels)
        clean_checks = clean_checks + 1 if not any(lag.values()) else 0
        if clean_checks >= 2:
            return lag
        await asyncio.sleep(poll_s)
    raise TimeoutError(f"pipeline did not drain within {timeout_s:.0f}s; lag {lag}")
