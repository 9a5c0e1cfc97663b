"""Runs benchmark scenarios: each implementation as four hop processes plus a sink,
on fresh topics of the same broker, one after another in the same run."""

from __future__ import annotations

import asyncio
import json
import os
import random
import subprocess
import sys
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from pipeline.bench.model import HOPS, PAYLOAD, hop_topic
from pipeline.kafka.admin import apply_topics, delete_topics
from pipeline.kafka.topology import (
    Naming,
    TopicSpec,
    dead_letter_topic,
    holds_topic,
    retry_topic,
)
from pipeline.settings import Guarantee, Settings, TransactionScheme

CLOCK_TICKS = os.sysconf("SC_CLK_TCK")


@dataclass(slots=True)
class RunResult:
    """One implementation in one scenario."""

    implementation: str
    events: int
    seconds: float
    p50_ms: float
    p99_ms: float
    order_violations: int
    cpu_s_per_hop: list[float] = field(default_factory=list)
    rss_mb_per_hop: list[float] = field(default_factory=list)
    connections_per_hop: list[int] = field(default_factory=list)

    @property
    def eps(self) -> float:
        """End-to-end events per second through all hops."""
        return self.events / self.seconds if self.seconds else 0.0

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "implementation": self.implementation,
            "events": self.events,
            "seconds": round(self.seconds, 3),
            "eps": round(self.eps, 1),
            "p50_ms": round(self.p50_ms, 1),
            "p99_ms": round(self.p99_ms, 1),
            "order_violations": self.order_violations,
            "cpu_s_per_hop": [round(c, 2) for c in self.cpu_s_per_hop],
            "rss_mb_per_hop": [round(r, 1) for r in self.rss_mb_per_hop],
            "connections_per_hop": self.connections_per_hop,
        }


def _proc_cpu_seconds(pid: int) -> float:
    with open(f"/proc/{pid}/stat") as stat:
        fields = stat.read().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / CLOCK_TICKS


def _proc_peak_rss_mb(pid: int) -> float:
    with open(f"/proc/{pid}/status") as status:
        for line in status:
            if line.startswith("VmHWM:"):
                return int(line.split()[1]) / 1024
    return 0.0


def _spawn(args: list[str], env: dict[str, str]) -> subprocess.Popen[str]:
    return subprocess.Popen(
        [sys.executable, "-m", "pipeline.bench.workers", *args],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.DEVNULL,
        text=True,
    )


def _proc_sockets(pid: int) -> int:
    """Open sockets of a process (its broker connections: the hops serve no HTTP)."""
    fds = Path(f"/proc/{pid}/fd")
    count = 0
    for fd in fds.iterdir():
        try:
            count += os.readlink(fd).startswith("socket:")
        except OSError:
            continue  # closed meanwhile
    return count


async def _read_line(process: subprocess.Popen[str], prefix: str, timeout_s: float) -> str:
    """The worker's next stdout line starting with ``prefix`` (others are its logs)."""
    assert process.stdout is not None
    async with asyncio.timeout(timeout_s):
        while True:
            line = await asyncio.to_thread(process.stdout.readline)
            if not line:
                raise RuntimeError(f"benchmark worker {process.args!r} exited early")
            if line.startswith(prefix):
                return line.strip()


async def produce_bench_events(
    settings: Settings, topic: str, events: int, keys: int, seed: int = 1
) -> None:
    """``events`` events over ``keys`` keys, each key's ``seq`` counting up."""
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_hosts,
        linger_ms=10,
        max_batch_size=512 * 1024,
        enable_idempotence=True,
    )
    await producer.start()
    rng = random.Random(seed)
    sequence = [0] * keys
    try:
        pending = []
        for _ in range(events):
            key = rng.randrange(keys)
            value = orjson.dumps(
                {"key": f"k{key}", "seq": sequence[key], "created": time.time(), "payload": PAYLOAD}
            )
            sequence[key] += 1
            pending.append(await producer.send(topic, value, key=f"k{key}".encode()))
            if len(pending) >= 5_000:
                await asyncio.gather(*pending)
                pending.clear()
        await asyncio.gather(*pending)
    finally:
        await producer.stop()


async def run_chain(
    settings: Settings,
    implementation: str,
    *,
    events: int,
    keys: int,
    delay_ms: float = 0.0,
    backlog: bool = False,
    timeout_s: float = 300.0,
    guarantee: Guarantee = "at_least_once",
    transactions: TransactionScheme = "auto",
) -> RunResult:
    """Run one implementation's four hops over ``events`` events and measure them.

    ``backlog`` produces everything before the hops start (a burst to drain); otherwise
    the hops are ready first and events are produced while they run.
    """
    prefix = f"bench{uuid.uuid4().hex[:8]}."
    run_settings = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"prefix": prefix})}
    )
    naming = Naming.of(run_settings.topics)
    names = [hop_topic(i) for i in range(HOPS + 1)]
    for hop in range(HOPS):
        stage = f"hop{hop}"
        names += [dead_letter_topic(stage), holds_topic(stage)]
        names += [retry_topic(stage, n) for n in range(1, len(settings.stage.retry_delays_s) + 1)]
    topics = [TopicSpec(naming.topic(name), settings.topics.partitions, 1) for name in names]
    await apply_topics(settings.kafka, topics)
    env = {
        **os.environ,
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "PIPELINE_TOPICS_PREFIX": prefix,
        "PIPELINE_HTTP_ENABLED": "false",
        "PIPELINE_PROCESSING_GUARANTEE": guarantee,
        "PIPELINE_STAGE_TRANSACTIONS": transactions,
        "PIPELINE_TOPICS_PARTITIONS": str(settings.topics.partitions),
    }
    source = naming.topic(hop_topic(0))
    started = time.time()
    if backlog:
        await produce_bench_events(run_settings, source, events, keys)
        started = time.time()
    hops = [
        _spawn([implementation, "--hop", str(i), "--delay-ms", str(delay_ms)], env)
        for i in range(HOPS)
    ]
    sink = _spawn(["sink", "--expected", str(events)], env)
    try:
        for process in [*hops, sink]:
            await _read_line(process, "READY", 60)
        if not backlog:
            started = time.time()
            await produce_bench_events(run_settings, source, events, keys)
        summary = json.loads(await _read_line(sink, "{", timeout_s))
        cpu = [_proc_cpu_seconds(p.pid) for p in hops]
        rss = [_proc_peak_rss_mb(p.pid) for p in hops]
        sockets = [_proc_sockets(p.pid) for p in hops]
    finally:
        for process in [*hops, sink]:
            process.terminate()
        for process in [*hops, sink]:
            try:
                process.wait(timeout=30)
            except subprocess.TimeoutExpired:
                process.kill()
        await delete_topics(settings.kafka, [t.name for t in topics])
    label = implementation
    if guarantee == "exactly_once":
        label += " eos" if transactions == "auto" else f" eos {transactions.replace('_', '-')}"
    return RunResult(
        implementation=label,
        events=summary["received"],
        seconds=summary["last_at"] - started,
        p50_ms=summary["p50_ms"],
        p99_ms=summary["p99_ms"],
        order_violations=summary["order_violations"],
        cpu_s_per_hop=cpu,
        rss_mb_per_hop=rss,
        connections_per_hop=sockets,
    )
