"""The sensor example (``examples/sensors/``) on the real broker, killed midway.

``pipeline run examples.sensors.flow:pipeline --all`` runs from the repository root on
a few thousand readings, is killed with SIGKILL once some but not all of them are
stored, and started again. Under either guarantee every reading is then accounted for
once: stored or dead-lettered (with provenance) exactly once if it is valid, dropped
and nowhere if it is not; hot readings raised one alert each, under their site's key;
each device's readings and alerts keep their order.
"""

from __future__ import annotations

import asyncio
import json
import signal
import socket
import subprocess
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from aiokafka.structs import ConsumerRecord, TopicPartition

from examples.sensors import flow
from examples.sensors.store import KNOWN_BROKEN
from pipeline.kafka.admin import admin_client
from pipeline.kafka.produce import produce_records
from pipeline.settings import Settings
from pipeline.verify import read_topic
from pipeline.workload import WorkloadRecord
from tests.integration.helpers import (
    PIPELINE_BIN,
    assert_in_seq_order_per_device,
    pipeline_command,
    stage_env,
)

ROOT = Path(__file__).resolve().parents[2]
PIPELINE_PATH = "examples.sensors.flow:pipeline"
SITES = ("north", "south", "east", "west")
DEVICES = [f"probe-{n}" for n in range(14)] + sorted(KNOWN_BROKEN)
READINGS_PER_DEVICE = 200
STORE_DLQ = "store_readings.dlq"
FEED_CHUNKS = 32
FEED_PAUSE_S = 0.2


def celsius(seq: int) -> float:
    """Every 9th reading impossible (dropped), every 7th hot (alerted)."""
    if seq % 9 == 4:
        return 999.0
    return 95.0 + seq % 3 if seq % 7 == 0 else 18.0 + seq % 5


@dataclass(frozen=True, slots=True)
class Workload:
    readings: list[dict[str, object]]

    @property
    def valid(self) -> set[str]:
        return {str(r["reading_id"]) for r in self.readings if float(str(r["celsius"])) < 200}

    @property
    def malformed(self) -> set[str]:
        return {str(r["reading_id"]) for r in self.readings} - self.valid

    @property
    def broken(self) -> set[str]:
        return {
            str(r["reading_id"])
            for r in self.readings
            if r["device_id"] in KNOWN_BROKEN and str(r["reading_id"]) in self.valid
        }

    @property
    def hot(self) -> set[str]:
        return {str(r["reading_id"]) for r in self.readings if 90 < float(str(r["celsius"])) < 200}


def workload() -> Workload:
    """Readings interleaved across devices, each device's in ``seq`` order."""
    return Workload(
        [
            {
                "reading_id": f"{device}/{seq}",
                "device_id": device,
                "site": SITES[n % len(SITES)],
                "celsius": celsius(seq),
                "seq": seq,
            }
            for seq in range(READINGS_PER_DEVICE)
            for n, device in enumerate(DEVICES)
        ]
    )


async def produce(settings: Settings, readings: list[dict[str, object]]) -> None:
    await produce_records(
        settings.kafka,
        f"{settings.topics.prefix}{flow.READINGS}",
        (
            WorkloadRecord(key=str(r["device_id"]).encode(), value=json.dumps(r).encode())
            for r in readings
        ),
    )


async def feed(settings: Settings, readings: list[dict[str, object]], chunks: int) -> None:
    """Produce ``readings`` in ``chunks`` parts, one every ``FEED_PAUSE_S``: readings keep
    arriving while the pipeline runs, is killed and restarts."""
    size = -(-len(readings) // chunks)
    for start in range(0, len(readings), size):
        await produce(settings, readings[start : start + size])
        await asyncio.sleep(FEED_PAUSE_S)


async def start(env: dict[str, str]) -> asyncio.subprocess.Process:
    """``pipeline run examples.sensors.flow:pipeline --all`` from the repository root."""
    return await asyncio.create_subprocess_exec(
        str(PIPELINE_BIN),
        "run",
        PIPELINE_PATH,
        "--all",
        cwd=ROOT,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def committed(settings: Settings, topic: str) -> list[ConsumerRecord]:
    return await read_topic(settings.kafka, settings.topics.prefix + topic)


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float) -> None:
    """Poll ``condition()`` until it holds."""
    async with asyncio.timeout(timeout_s):
        while True:
            if await condition():
                return
            await asyncio.sleep(0.1)


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def group_offsets(settings: Settings, stage: str) -> dict[TopicPartition, int]:
    """The offsets ``stage``'s consumer group has committed."""
    async with admin_client(settings.kafka) as admin:
        offsets = await admin.list_consumer_group_offsets(f"{settings.topics.prefix}{stage}")
    return {tp: meta.offset for tp, meta in offsets.items() if meta.offset >= 0}


async def malformed_from(
    settings: Settings, position: dict[TopicPartition, int], malformed: set[str]
) -> int:
    """Malformed readings at or after ``position``: the ones a screen restarted from
    there handles, and drops, (again)."""
    return sum(
        1
        for record in await committed(settings, flow.READINGS)
        if record.offset >= position.get(TopicPartition(record.topic, record.partition), 0)
        and json.loads(record.value)["reading_id"] in malformed
    )


async def counter(http: httpx.AsyncClient, line_start: str) -> float:
    """The value of the metric sample whose line starts with ``line_start`` (0 if none)."""
    for line in (await http.get("/metrics")).text.splitlines():
        if line.startswith(line_start):
            return float(line.rsplit(" ", 1)[1])
    return 0.0


def reading_ids(records: list[ConsumerRecord]) -> list[str]:
    return [json.loads(r.value)["reading_id"] for r in records]


async def kill_midway_and_restart(
    settings: Settings, env: dict[str, str], readings: Workload, feeding: asyncio.Task[None]
) -> None:
    """Run the example, SIGKILL it once a quarter of the readings are stored, run it
    again until every reading is accounted for, then stop it with SIGTERM."""
    expected_out = len(readings.valid)
    first = await start(env)
    try:

        async def some_stored() -> bool:
            return len(await committed(settings, flow.STORED)) >= expected_out // 4

        await until(some_stored, timeout_s=60)
    finally:
        first.send_signal(signal.SIGKILL)
        await first.wait()
    stored_at_kill = len(await committed(settings, flow.STORED))
    dead_at_kill = len(await committed(settings, STORE_DLQ))
    assert 0 < stored_at_kill + dead_at_kill < expected_out, "the kill was not midway"
    screen_restarts_from = await group_offsets(settings, "screen_readings")

    port = free_port()
    second = await start({**env, "PIPELINE_HTTP_ENABLED": "true", "PIPELINE_HTTP_PORT": str(port)})
    http = httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}", timeout=5)
    try:

        async def everything_accounted_for() -> bool:
            if second.returncode is not None:
                return True  # it stopped: the assertion below says how
            out = len(await committed(settings, flow.STORED)) + len(
                await committed(settings, STORE_DLQ)
            )
            alerts = len(await committed(settings, flow.ALERTS))
            return out >= expected_out and alerts >= len(readings.hot)

        await feeding
        await until(everything_accounted_for, timeout_s=90)
        # The restarted screen drops the malformed readings from its committed offsets on
        # (it dropped the earlier ones before the kill) and dead-letters none of them.
        redropped = await malformed_from(settings, screen_restarts_from, readings.malformed)
        screen = '{stage="screen_readings"}'

        async def drops_counted() -> bool:
            return await counter(http, f"pipeline_events_dropped_total{screen}") >= redropped

        await until(drops_counted, timeout_s=30)
        assert await counter(http, f"pipeline_events_dropped_total{screen}") == redropped
        assert await counter(http, f"pipeline_events_dead_lettered_total{screen}") == 0
    finally:
        await http.aclose()
        if second.returncode is None:
            second.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(second.communicate(), 60)
    assert second.returncode == 0, output.decode()[-3000:]


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_the_sensor_example_survives_a_kill_midway(
    settings: Settings, guarantee: str
) -> None:
    # Restarted under one stable name, as a StatefulSet's pod is: it takes its partitions
    # back without waiting out the session, and with exactly_once its producers fence
    # the killed process's open transactions instead of read_committed readers waiting
    # for the broker to time them out.
    env = stage_env(
        settings,
        PIPELINE_PROCESSING_GUARANTEE=guarantee,
        PIPELINE_STAGE_GROUP_INSTANCE_ID="sensors-0",
        PYTHONPATH="",
    )
    code, out = await pipeline_command(ROOT, env, "topics", "apply", PIPELINE_PATH)
    assert code == 0, out
    readings = workload()
    feeding = asyncio.create_task(feed(settings, readings.readings, FEED_CHUNKS))
    try:
        await kill_midway_and_restart(settings, env, readings, feeding)
    finally:
        feeding.cancel()

    stored = await committed(settings, flow.STORED)
    dead = await committed(settings, STORE_DLQ)
    alerts = await committed(settings, flow.ALERTS)
    valid = await committed(settings, flow.VALID)
    checked = await committed(settings, flow.CHECKED)

    # the workload has something for every path
    assert readings.malformed
    assert readings.broken
    assert readings.hot

    # every valid reading is stored or dead-lettered exactly once; none is lost
    out = Counter(reading_ids(stored) + reading_ids(dead))
    assert [i for i, n in out.items() if n > 1] == [], "duplicated"
    assert readings.valid - set(out) == set(), "lost"
    assert set(out) == readings.valid
    assert set(reading_ids(dead)) == readings.broken
    for records in (valid, checked):
        assert sorted(reading_ids(records)) == sorted(readings.valid)

    # malformed readings were dropped by the screen: nowhere downstream, not dead letters
    everywhere = {*reading_ids(valid), *reading_ids(checked), *out, *reading_ids(alerts)}
    assert everywhere.isdisjoint(readings.malformed)
    for stage in flow.pipeline.stages:
        if stage != "store_readings":
            assert await committed(settings, f"{stage}.dlq") == []
    assert len(readings.readings) - len(valid) == len(readings.malformed)

    # dead letters say where they came from and why
    for record in dead:
        headers = dict(record.headers)
        assert (
            headers["pipeline.origin.topic"] == f"{settings.topics.prefix}{flow.CHECKED}".encode()
        )
        assert headers["pipeline.stage"] == b"store_readings"
        assert b"known to be broken" in headers["pipeline.error.message"]

    # one alert per hot reading, keyed by site
    assert sorted(reading_ids(alerts)) == sorted(readings.hot)
    assert all(r.key.decode() == json.loads(r.value)["site"] for r in alerts)

    # per device, the stored readings and the alerts keep seq order
    for records in (stored, alerts):
        assert_in_seq_order_per_device(records)
