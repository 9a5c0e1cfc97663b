"""``pipeline status`` reads each stage's state from Kafka: members, lag, retrying,
dead letters and, between two samples, events/s."""

from __future__ import annotations

import asyncio
import json

from pipeline.kafka.topology import STAGE_NAMES, STAGE_TOPICS, Naming
from pipeline.settings import Settings
from pipeline.status import Sampler
from tests.integration.helpers import (
    PIPELINE_BIN,
    drain_and_verify,
    produce_orders,
    running,
    stage_env,
)


async def test_status_shows_members_lag_rates_and_dead_letters(
    settings: Settings, topics: Naming
) -> None:
    sampler = Sampler(
        settings.kafka,
        {stage: STAGE_TOPICS[stage][0] for stage in STAGE_NAMES},
        topics,
        settings.topics.retry_levels,
    )
    produced = await produce_orders(settings, 1_000)
    before = {row.stage: row for row in await sampler.next()}
    assert before["validate"].lag == produced  # nothing consumed yet
    assert before["validate"].members == 0
    assert before["validate"].events_per_s is None
    async with running(settings):
        report = await drain_and_verify(settings)
        after = {row.stage: row for row in await sampler.next()}
        process = await asyncio.create_subprocess_exec(
            str(PIPELINE_BIN),
            "status",
            "--json",
            env=stage_env(settings),
            stdout=asyncio.subprocess.PIPE,
        )
        printed, _ = await asyncio.wait_for(process.communicate(), 60)
    assert report.clean, report.as_dict()
    assert all(row.lag == 0 and row.members == 1 for row in after.values()), after
    assert after["validate"].consumed == produced
    rate = after["validate"].events_per_s
    assert rate is not None
    assert rate > 0
    assert after["validate"].dead_letters == report.dead_lettered  # invalid records
    assert sum(row.dead_letters for row in after.values()) == report.dead_lettered
    assert process.returncode == 0
    rows = {row["stage"]: row for row in json.loads(printed)}
    assert rows["validate"]["dead_letters"] == report.dead_lettered
    assert rows["fulfil"]["lag"] == 0
