"""Reading what the verifier checks from the broker: every topic the stages read or
write, and each stage's dead letters (replayed or not) and still-parked events."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pipeline.accounting.check import StageTrail, check_flow
from pipeline.accounting.facts import stage_facts
from pipeline.accounting.report import FlowReport
from pipeline.failures.dead_letters import REPLAYED, read_actions
from pipeline.kafka.topology import Naming, flow_topics
from pipeline.runtime.stage import StageSpec
from pipeline.settings import Settings
from pipeline.verify import read_topic, still_parked


async def verify_pipeline(
    settings: Settings, name: str, stages: Mapping[str, StageSpec[Any, Any]]
) -> FlowReport:
    """Read pipeline ``name``'s topics up to their current end and account for every
    event of its ``stages`` (:func:`pipeline.accounting.check.check_flow`)."""
    naming = Naming.of(settings.topics)
    facts = [stage_facts(spec, settings.stage, naming) for spec in stages.values()]
    names = flow_topics(facts)
    records = await asyncio.gather(*(read_topic(settings.kafka, topic) for topic in names))
    trails = await asyncio.gather(*(_trail(settings, naming, stage) for stage in stages))
    return check_flow(
        name, facts, dict(zip(names, records, strict=True)), dict(zip(stages, trails, strict=True))
    )


async def _trail(settings: Settings, naming: Naming, stage: str) -> StageTrail:
    dead, actions, parked = await asyncio.gather(
        read_topic(settings.kafka, naming.dead_letter(stage)),
        read_actions(settings.kafka, naming, stage),
        still_parked(settings.kafka, naming, stage),
    )
    replayed = [r for r in dead if actions.get(f"{r.partition}/{r.offset}") == REPLAYED]
    waiting = [r for r in dead if actions.get(f"{r.partition}/{r.offset}") != REPLAYED]
    return StageTrail(dead_letters=waiting, replayed=replayed, parked=parked)
