"""The ``checkout`` scenario: the four real stages against a framework-free loop.

Both implementations run the checkout's own handlers and pydantic models, one process
per stage, over the same produced backlog of real orders (no invalid events, no
transient failures: the happy path every implementation pays for). The framework-free
loop is the smallest batched aiokafka loop that keeps per-key order: ``getmany``,
decode, call the handler, encode, send without awaiting each, await the batch, commit.
So the ratio isolates what the runtime costs on real work: lanes, the commit rule,
deduplication, metrics, tracing hooks, the failure paths' bookkeeping.

Drain time counts from the stage processes' start (start-up and assignment settling
included) until the last stage has written every event; steady state is the rate
between the 10th and the 90th percentile of the outputs' timestamps.
"""

from __future__ import annotations

import asyncio
import os
import time
import uuid
from dataclasses import dataclass, field
from typing import Any

from pipeline.bench.runner import _proc_cpu_seconds, _proc_peak_rss_mb, _read_line, _spawn
from pipeline.kafka.admin import apply_topics, delete_topics
from pipeline.kafka.lag import end_offsets
from pipeline.kafka.produce import produce_records
from pipeline.kafka.topology import ORDERS_EVENTS, ORDERS_FULFILLED, STAGE_NAMES, Naming
from pipeline.kafka.topology import pipeline_topics as checkout_topics
from pipeline.settings import Settings
from pipeline.verify import read_topic, verify
from pipeline.workload import generate

ROLES = {"pipeline": "checkout-pipeline", "framework-free": "checkout-raw"}


@dataclass(slots=True)
class CheckoutRun:
    """One implementation of the four stages over one backlog."""

    implementation: str
    events: int
    drain_s: float
    steady_eps: float
    cpu_s_per_stage: list[float] = field(default_factory=list)
    rss_mb_per_stage: list[float] = field(default_factory=list)
    clean: bool = False

    @property
    def drain_eps(self) -> float:
        """Events per second from the stages' start to the last output."""
        return self.events / self.drain_s if self.drain_s else 0.0

    @property
    def cpu_s_per_1k(self) -> float:
        """CPU seconds of all four stages per 1,000 events."""
        return 1000 * sum(self.cpu_s_per_stage) / self.events if self.events else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "implementation": self.implementation,
            "events": self.events,
            "drain_s": round(self.drain_s, 2),
            "drain_eps": round(self.drain_eps, 1),
            "steady_eps": round(self.steady_eps, 1),
            "cpu_s_per_1k_events": round(self.cpu_s_per_1k, 4),
            "cpu_s_per_stage": [round(c, 2) for c in self.cpu_s_per_stage],
            "rss_mb_per_stage": [round(r, 1) for r in self.rss_mb_per_stage],
            "clean": self.clean,
        }


async def run_checkout(
    settings: Settings, implementation: str, events: int, timeout_s: float = 900
) -> CheckoutRun:
    """Produce ``events`` checkout events to fresh topics, then drain them through the
    four stages of ``implementation`` and verify the result."""
    prefix = f"benchco{uuid.uuid4().hex[:8]}."
    topology = settings.topics.model_copy(update={"prefix": prefix})
    run_settings = settings.model_copy(update={"topics": topology})
    naming = Naming.of(topology)
    topics = checkout_topics(topology)
    await apply_topics(settings.kafka, topics)
    # about 1.6 events per order lifecycle
    records = list(generate(max(1, events * 5 // 8), invalid_every=0))[:events]
    produced = await produce_records(settings.kafka, naming.topic(ORDERS_EVENTS), records)
    env = {
        **os.environ,
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "PIPELINE_TOPICS_PREFIX": prefix,
        "PIPELINE_HTTP_ENABLED": "false",
        "PIPELINE_SERVICES_TRANSIENT_FAILURE_RATE": "0",
        "PIPELINE_SERVICES_LATENCY_MS": "0",
    }
    role = ROLES[implementation]
    started = time.time()
    stages = [_spawn([role, "--hop", str(i)], env) for i in range(len(STAGE_NAMES))]
    fulfilled = naming.topic(ORDERS_FULFILLED)
    try:
        for process in stages:
            await _read_line(process, "READY", 120)
        async with asyncio.timeout(timeout_s):
            while sum((await end_offsets(settings.kafka, [fulfilled])).values()) < produced:  # noqa: ASYNC110
                await asyncio.sleep(0.2)
        drained_at = time.time()
        cpu = [_proc_cpu_seconds(p.pid) for p in stages]
        rss = [_proc_peak_rss_mb(p.pid) for p in stages]
    finally:
        for process in stages:
            process.terminate()
        for process in stages:
            try:
                process.wait(timeout=30)
            except Exception:
                process.kill()
    outputs = sorted(record.timestamp for record in await read_topic(settings.kafka, fulfilled))
    report = await verify(run_settings.kafka, naming)
    await delete_topics(settings.kafka, [t.name for t in topics])
    return CheckoutRun(
        implementation=implementation,
        events=produced,
        drain_s=drained_at - started,
        steady_eps=_steady_rate(outputs),
        cpu_s_per_stage=cpu,
        rss_mb_per_stage=rss,
        clean=report.clean and report.duplicated == 0 and report.events == produced,
    )


def _steady_rate(timestamps_ms: list[int]) -> float:
    """Outputs per second between the 10th and the 90th percentile of their times."""
    if len(timestamps_ms) < 10:
        return 0.0
    low, high = len(timestamps_ms) // 10, len(timestamps_ms) * 9 // 10
    span_s = (timestamps_ms[high] - timestamps_ms[low]) / 1000
    return (high - low) / span_s if span_s > 0 else 0.0
