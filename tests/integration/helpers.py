"""Shared steps of the real-broker tests."""

from __future__ import annotations

import asyncio
import json
import os
import signal
import subprocess
import sys
from collections import defaultdict
from collections.abc import AsyncIterator, Iterable, Sequence
from contextlib import asynccontextmanager
from pathlib import Path

from aiokafka.structs import ConsumerRecord

from pipeline.app import PipelineApp, create_app
from pipeline.kafka.lag import wait_until_drained
from pipeline.kafka.produce import produce_records
from pipeline.kafka.topology import ORDERS_EVENTS, STAGE_NAMES, Naming
from pipeline.settings import Settings
from pipeline.stages.services import Services
from pipeline.verify import VerifyReport, verify
from pipeline.workload import WorkloadRecord, generate

PIPELINE_BIN = Path(sys.executable).with_name("pipeline")


@asynccontextmanager
async def running(
    settings: Settings,
    stages: Sequence[str] = STAGE_NAMES,
    services: Services | None = None,
) -> AsyncIterator[PipelineApp]:
    """The given stages running in this process; drained and stopped on exit."""
    pipeline = create_app(settings, stages, services=services, http=False)
    await pipeline.start()
    try:
        yield pipeline
    finally:
        await pipeline.stop()
    assert pipeline.failure is None, pipeline.failure


async def produce_orders(settings: Settings, orders: int, **workload: int) -> int:
    """Produce ``orders`` order lifecycles to the test's input topic."""
    naming = Naming.of(settings.topics)
    return await produce_records(
        settings.kafka, naming.topic(ORDERS_EVENTS), generate(orders, **workload)
    )


async def produce(settings: Settings, records: list[WorkloadRecord]) -> int:
    """Produce hand-made records to the test's input topic."""
    naming = Naming.of(settings.topics)
    return await produce_records(settings.kafka, naming.topic(ORDERS_EVENTS), records)


async def drain_and_verify(settings: Settings, timeout_s: float = 180) -> VerifyReport:
    """Wait until every stage committed everything, then run the verifier."""
    naming = Naming.of(settings.topics)
    await wait_until_drained(
        settings.kafka,
        STAGE_NAMES,
        naming=naming,
        retry_levels=settings.topics.retry_levels,
        timeout_s=timeout_s,
    )
    return await verify(settings.kafka, naming)


def stage_env(settings: Settings, **extra: str) -> dict[str, str]:
    """Environment for a ``pipeline`` subprocess that joins this test's namespace."""
    return {
        **os.environ,
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "PIPELINE_TOPICS_PREFIX": settings.topics.prefix,
        "PIPELINE_STAGE_COMMIT_INTERVAL_MS": str(settings.stage.commit_interval_ms),
        "PIPELINE_HTTP_ENABLED": "false",
        **extra,
    }


def start_stage_process(settings: Settings, *stages: str, **env: str) -> subprocess.Popen[bytes]:
    """``pipeline run STAGE...`` as a child process."""
    return subprocess.Popen(
        [str(PIPELINE_BIN), "run", *stages],
        env=stage_env(settings, **env),
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )


async def pipeline_command(
    directory: Path, env: dict[str, str], *arguments: str
) -> tuple[int | None, str]:
    """``pipeline ARGUMENTS...`` run in ``directory``: its exit code and its stdout (its
    stderr when it failed)."""
    process = await asyncio.create_subprocess_exec(
        str(PIPELINE_BIN),
        *arguments,
        cwd=directory,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
    )
    out, err = await asyncio.wait_for(process.communicate(), 120)
    return process.returncode, (out if process.returncode == 0 else err).decode()


def stop_stage_process(process: subprocess.Popen[bytes], timeout_s: float = 60) -> None:
    """SIGTERM (a graceful drain), then SIGKILL if it has not exited within ``timeout_s``."""
    process.send_signal(signal.SIGTERM)
    try:
        process.wait(timeout=timeout_s)
    except subprocess.TimeoutExpired:
        process.kill()


def assert_in_seq_order_per_device(records: Iterable[ConsumerRecord]) -> None:
    """Each device's readings (JSON with ``device_id`` and ``seq``) are in ``seq`` order."""
    per_device: dict[str, list[int]] = defaultdict(list)
    for record in records:
        event = json.loads(record.value or b"")
        per_device[event["device_id"]].append(event["seq"])
    assert all(seqs == sorted(seqs) for seqs in per_device.values()), per_device
