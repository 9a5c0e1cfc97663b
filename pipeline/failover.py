"""``pipeline chaos --brokers 3``: the pipeline while a broker of a three-node cluster
dies, checked by the verifier, with the longest pause in its output measured.

Cases:
  leader      kill -9 the broker leading the most partitions of the stages' input
              topics; it stays down until the backlog has drained
  controller  kill -9 the active KRaft controller; it stays down
  bounce      kill -9 a broker (the leader of the most partitions) and start it again
              after a few seconds

Every stage runs as its own ``pipeline run STAGE`` process, given the cluster as a
bootstrap list. No stage process may need a restart: clients find the new leaders and
coordinators themselves. The pause is the longest time the flow's last topic did not
grow, from the kill until the backlog drained.
"""

from __future__ import annotations

import asyncio
import time
import uuid
from collections import Counter
from dataclasses import asdict, dataclass
from itertools import pairwise
from pathlib import Path
from typing import Any, Literal

from aiokafka import AIOKafkaConsumer
from aiokafka.errors import KafkaError
from aiokafka.structs import TopicPartition

from pipeline.chaos import ChaosLog, _env, _Stages, drain_reviving
from pipeline.kafka.admin import (
    admin_client,
    apply_topics,
    delete_topics,
    metadata_retries,
    wait_for_leaders,
)
from pipeline.kafka.connection import client_options, stop_consumer
from pipeline.kafka.local_cluster import LocalCluster
from pipeline.kafka.produce import produce_records
from pipeline.kafka.topology import (
    ORDERS_EVENTS,
    ORDERS_FULFILLED,
    STAGE_NAMES,
    STAGE_TOPICS,
    Naming,
    pipeline_topics,
)
from pipeline.settings import Guarantee, Settings
from pipeline.verify import VerifyReport, verify
from pipeline.workload import generate

FailoverCase = Literal["leader", "controller", "bounce"]
CASES: tuple[FailoverCase, ...] = ("leader", "controller", "bounce")


@dataclass(slots=True)
class FailoverResult:
    """The verifier's report, which node died, and what the stages felt."""

    case: FailoverCase
    guarantee: Guarantee
    killed_node: int
    report: VerifyReport
    longest_pause_s: float
    stage_restarts: int
    seconds: float

    @property
    def clean(self) -> bool:
        """Nothing lost, reordered or unknown (exactly-once: nothing duplicated), and no
        stage needed a restart."""
        report = self.report
        return (
            report.lost == 0
            and report.out_of_order == 0
            and report.unknown == 0
            and (self.guarantee != "exactly_once" or report.duplicated == 0)
            and self.stage_restarts == 0
        )

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {**asdict(self), "report": self.report.as_dict(), "clean": self.clean}


async def leader_of_most(settings: Settings, topics: list[str]) -> int:
    """The broker id leading the most partitions of ``topics``."""
    described = await _described(settings, topics)
    leaders = Counter(
        partition["leader"] for topic in described for partition in topic["partitions"]
    )
    return int(leaders.most_common(1)[0][0])


@metadata_retries
async def _described(settings: Settings, topics: list[str]) -> list[dict[str, Any]]:
    async with admin_client(settings.kafka) as admin:
        described: list[dict[str, Any]] = await admin.describe_topics(topics)
    return described


async def _written(settings: Settings, topic: str) -> int:
    described = await _described(settings, [topic])
    tps = [TopicPartition(topic, p["partition"]) for p in described[0]["partitions"]]
    consumer = AIOKafkaConsumer(**client_options(settings.kafka))
    await consumer.start()
    try:
        ends = await consumer.end_offsets(tps)
    finally:
        await stop_consumer(consumer)
    return int(sum(ends.values()))


async def _until_written(settings: Settings, topic: str, records: int, timeout_s: float) -> None:
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                if await _written(settings, topic) >= records:
                    return
            except KafkaError:
                pass
            await asyncio.sleep(0.2)


class OutputWatch:
    """Reads the flow's last topic as a downstream consumer would (read_committed) and
    notes when records arrive, to find the longest time nothing did."""

    def __init__(self, settings: Settings, topic: str) -> None:
        self._settings = settings
        self._topic = topic
        self.growth: list[float] = []  # monotonic times at which records arrived
        self.ready = asyncio.Event()

    async def run(self) -> None:
        """Consume from the topic's end until cancelled."""
        await wait_for_leaders(self._settings.kafka, [self._topic])
        described = await _described(self._settings, [self._topic])
        tps = [TopicPartition(self._topic, p["partition"]) for p in described[0]["partitions"]]
        consumer = AIOKafkaConsumer(
            **client_options(self._settings.kafka),
            enable_auto_commit=False,
            isolation_level="read_committed",
        )
        await consumer.start()
        try:
            consumer.assign(tps)
            await consumer.seek_to_end(*tps)
            self.ready.set()
            while True:
                batch = await consumer.getmany(timeout_ms=100, max_records=10_000)
                if any(batch.values()):
                    self.growth.append(time.monotonic())
        finally:
            await stop_consumer(consumer)

    def longest_pause(self, since: float) -> float:
        """The longest time without growth from ``since`` until the last growth."""
        return longest_pause(self.growth, since)


def longest_pause(growth: list[float], since: float) -> float:
    """The longest gap, in seconds, between ``since`` and the growth times after it,
    and between consecutive ones (0 when nothing grew after ``since``)."""
    after = sorted(t for t in growth if t >= since)
    if not after:
        return 0.0
    marks = [since, *after]
    return round(max(b - a for a, b in pairwise(marks)), 2)


async def run_failover(
    settings: Settings,
    cluster: LocalCluster,
    case: FailoverCase,
    *,
    orders: int,
    guarantee: Guarantee,
    down_s: float = 5.0,
    drain_timeout_s: float = 300.0,
    log_dir: Path | None = None,
) -> FailoverResult:
    """Run one failover case on ``cluster`` in a fresh namespace; the node killed is
    running again when this returns."""
    prefix = f"failover{uuid.uuid4().hex[:8]}."
    run = settings.model_copy(
        update={
            "kafka": settings.kafka.model_copy(update={"bootstrap_servers": cluster.bootstrap}),
            "topics": settings.topics.model_copy(
                update={
                    "prefix": prefix,
                    "replication_factor": cluster.replication,
                    "min_insync_replicas": max(1, cluster.replication - 1),
                }
            ),
            "stage": settings.stage.model_copy(update={"processing_guarantee": guarantee}),
        }
    )
    naming = Naming.of(run.topics)
    topics = pipeline_topics(run.topics)
    await apply_topics(run.kafka, topics)
    await wait_for_leaders(run.kafka, [topic.name for topic in topics])
    stages = _Stages(_env(run, prefix), log_dir, list(STAGE_NAMES), None)
    log = ChaosLog()
    started = time.monotonic()
    for stage in STAGE_NAMES:
        stages.start(stage)
    # Half the orders' events before the kill, half after: the flow must go on through
    # the degraded cluster, whatever the speed of this machine.
    events = list(generate(orders))
    before, after = events[: len(events) // 2], events[len(events) // 2 :]
    source = naming.topic(ORDERS_EVENTS)
    producing = asyncio.create_task(produce_records(run.kafka, source, before))
    killed = 0
    watch = OutputWatch(run, naming.topic(ORDERS_FULFILLED))
    watching = asyncio.create_task(watch.run())
    killed_at = time.monotonic()
    try:
        await asyncio.wait_for(watch.ready.wait(), 120)
        # Kill once the flow is under way: a quarter of the first half fulfilled.
        await producing
        await _until_written(run, naming.topic(ORDERS_FULFILLED), len(before) // 4, 120)
        inputs = [naming.topic(STAGE_TOPICS[stage][0]) for stage in STAGE_NAMES]
        if case == "controller":
            killed = await asyncio.to_thread(cluster.active_controller)
        else:
            killed = await leader_of_most(run, inputs)
        killed_at = time.monotonic()
        await asyncio.to_thread(cluster.kill, killed)
        producing = asyncio.create_task(produce_records(run.kafka, source, after))
        if case == "bounce":
            await asyncio.sleep(down_s)
            await asyncio.to_thread(cluster.start, killed)
        await producing
        sources = {stage: STAGE_TOPICS[stage][0] for stage in STAGE_NAMES}
        await drain_reviving(
            stages,
            run,
            naming,
            log,
            started + drain_timeout_s,
            sources,
            [topic.name for topic in topics],
        )
        stages.revive(log)
        if watching.done():
            watching.result()  # the watch failed: its pause would be wrong
    finally:
        watching.cancel()
        if not producing.done():
            producing.cancel()
        stages.stop_all(log, run.stage.shutdown_drain_timeout_s + 10)
    report = await verify(run.kafka, naming)
    pause = watch.longest_pause(killed_at)
    seconds = round(time.monotonic() - started, 1)
    if killed and case != "bounce":
        await asyncio.to_thread(cluster.start, killed)
    await delete_topics(run.kafka, [topic.name for topic in topics])
    return FailoverResult(
        case=case,
        guarantee=guarantee,
        killed_node=killed,
        report=report,
        longest_pause_s=pause,
        stage_restarts=log.restarts,
        seconds=seconds,
    )
