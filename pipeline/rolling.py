"""A rolling restart of one stage's replicas, with and without static group membership,
measuring how long the stage's output stands still.

Three ``pipeline run STAGE`` processes share the stage's group while orders arrive at
a steady rate; each is stopped (SIGTERM: drain, commit) and started again in turn. With
dynamic membership every stop and every start is a rebalance, and the whole group stops
while it runs; with static membership (``PIPELINE_STAGE_GROUP_INSTANCE_ID``) a restarted
process rejoins as itself within the session timeout, and the other replicas never stop.
"""

from __future__ import annotations

import asyncio
import subprocess
import time
import uuid
from dataclasses import asdict, dataclass
from typing import Any

from pipeline.chaos import PIPELINE_BIN, _env
from pipeline.failover import OutputWatch
from pipeline.kafka.admin import apply_topics, delete_topics, group_members, wait_for_leaders
from pipeline.kafka.lag import wait_until_drained
from pipeline.kafka.produce import produce_records
from pipeline.kafka.topology import (
    ORDERS_EVENTS,
    STAGE_NAMES,
    STAGE_TOPICS,
    Naming,
    pipeline_topics,
)
from pipeline.settings import Settings
from pipeline.verify import verify
from pipeline.workload import generate


@dataclass(slots=True)
class RollingResult:
    """The longest time the stage's output did not grow during the restarts."""

    stage: str
    static: bool
    replicas: int
    longest_pause_s: float
    restart_seconds: float
    clean: bool

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return asdict(self)


async def _steady(settings: Settings, topic: str, orders: int, per_second: float) -> None:
    events = list(generate(orders))
    chunk = max(1, int(per_second / 10))
    for start in range(0, len(events), chunk):
        await produce_records(settings.kafka, topic, events[start : start + chunk])
        await asyncio.sleep(0.1)


async def run_rolling_restart(
    settings: Settings,
    *,
    stage: str = "pay",
    static: bool,
    replicas: int = 3,
    orders: int = 3_000,
    per_second: float = 400.0,
) -> RollingResult:
    """Roll ``stage``'s ``replicas`` processes once; the other stages run one process each."""
    prefix = f"rolling{uuid.uuid4().hex[:8]}."
    run = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"prefix": prefix})}
    )
    naming = Naming.of(run.topics)
    topics = pipeline_topics(run.topics)
    await apply_topics(run.kafka, topics)
    await wait_for_leaders(run.kafka, [topic.name for topic in topics])
    env = _env(run, prefix)

    def start(name: str, instance: str | None) -> subprocess.Popen[bytes]:
        extra = {"PIPELINE_STAGE_GROUP_INSTANCE_ID": instance} if instance else {}
        return subprocess.Popen(
            [str(PIPELINE_BIN), "run", name],
            env={**env, **extra},
            stdout=subprocess.DEVNULL,
            stderr=subprocess.DEVNULL,
        )

    others = [start(name, None) for name in STAGE_NAMES if name != stage]
    ids = [f"{stage}-{n}" if static else None for n in range(replicas)]
    rolled = [start(stage, instance) for instance in ids]
    group = naming.group(stage)
    watch = OutputWatch(run, naming.topic(STAGE_TOPICS[stage][1]))
    watching = asyncio.create_task(watch.run())
    producing = asyncio.create_task(_steady(run, naming.topic(ORDERS_EVENTS), orders, per_second))
    try:
        await asyncio.wait_for(watch.ready.wait(), 60)
        await _until_members(run, group, replicas)
        await asyncio.sleep(3)  # the flow is steady
        began = time.monotonic()
        for index, instance in enumerate(ids):
            rolled[index].terminate()
            await asyncio.to_thread(rolled[index].wait, 60)
            rolled[index] = start(stage, instance)
            await _until_members(run, group, replicas)
            await asyncio.sleep(2)
        restart_seconds = round(time.monotonic() - began, 1)
        pause = watch.longest_pause(began)
        await producing
        await wait_until_drained(
            run.kafka,
            STAGE_NAMES,
            naming=naming,
            retry_levels=run.topics.retry_levels,
            timeout_s=120,
        )
    finally:
        watching.cancel()
        producing.cancel()
        for process in [*others, *rolled]:
            process.terminate()
        for process in [*others, *rolled]:
            await asyncio.to_thread(process.wait, 60)
    report = await verify(run.kafka, naming)
    await delete_topics(run.kafka, [topic.name for topic in topics])
    clean = report.lost == 0 and report.out_of_order == 0 and report.unknown == 0
    return RollingResult(stage, static, replicas, pause, restart_seconds, clean)


async def _until_members(settings: Settings, group: str, members: int) -> None:
    async with asyncio.timeout(120):
        while await group_members(settings.kafka, group) < members:  # noqa: ASYNC110
            await asyncio.sleep(0.3)
