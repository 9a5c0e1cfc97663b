"""``pipeline dlq``: list dead letters with their provenance, replay them once after the
fault is fixed, and the verifier accounts them where they ended."""

from __future__ import annotations

import json
import subprocess

from pipeline.failures import provenance
from pipeline.kafka.admin import apply_topics
from pipeline.kafka.topology import Naming, pipeline_topics
from pipeline.settings import Settings
from pipeline.stages.services import Services, simulated_services
from tests.integration.helpers import (
    PIPELINE_BIN,
    drain_and_verify,
    produce_orders,
    running,
    stage_env,
)
from tests.integration.test_retry_ladder import BrokenPayment


def _dlq(settings: Settings, *args: str) -> subprocess.CompletedProcess[str]:
    env = stage_env(
        settings,
        PIPELINE_TOPICS_RETRY_LEVELS=str(settings.topics.retry_levels),
        PIPELINE_STAGE_RETRY_DELAYS_S=json.dumps(settings.stage.retry_delays_s),
    )
    return subprocess.run(
        [str(PIPELINE_BIN), "dlq", *args], env=env, capture_output=True, text=True, check=True
    )


async def test_dead_letters_are_listed_replayed_once_and_then_flow(
    settings: Settings, topics: Naming
) -> None:
    stage = settings.stage.model_copy(update={"retry_delays_s": [0.1], "in_process_attempts": 1})
    topology = settings.topics.model_copy(update={"retry_levels": 1})
    settings = settings.model_copy(update={"stage": stage, "topics": topology})
    await apply_topics(settings.kafka, pipeline_topics(settings.topics))
    down = Services(
        inventory=simulated_services(settings.services).inventory,
        payment=BrokenPayment(settings.services, broken="*"),
    )
    async with running(settings, services=down):
        await produce_orders(settings, 20, invalid_every=0)
        before = await drain_and_verify(settings)
    assert before.clean, before.as_dict()
    assert before.dead_lettered > 0

    listed = json.loads(_dlq(settings, "list", "--stage", "pay", "--json").stdout)
    assert len(listed) == before.dead_lettered - before.dead_letter_reasons.get(
        "reserve: ServiceUnavailable", 0
    )
    for letter in listed:
        for name in (
            provenance.ORIGIN_TOPIC,
            provenance.ORIGIN_OFFSET,
            provenance.ERROR_TYPE,
            provenance.ATTEMPT,
            provenance.FIRST_FAILURE_AT,
            provenance.ERROR_STACK,
        ):
            assert letter["headers"].get(name), name

    first = _dlq(settings, "replay", "--stage", "pay").stdout
    second = _dlq(settings, "replay", "--stage", "pay").stdout
    assert f"replayed {len(listed)} dead letters" in first
    assert "replayed 0 dead letters" in second

    async with running(settings):  # the gateway is back
        after = await drain_and_verify(settings)
    assert after.clean, after.as_dict()
    assert after.replayed == len(listed)
    assert after.dead_lettered == before.dead_lettered - len(listed)
    assert json.loads(_dlq(settings, "list", "--stage", "pay", "--json").stdout) == []
