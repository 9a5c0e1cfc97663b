"""How the order API's memory grows with the orders it knows (``pipeline bench-api``).

The API runs as its own process (``pipeline serve-api``) on fresh topics and a fresh
database. Orders are fed in steps: each order's ``OrderPlaced`` to ``orders.events``
(what the owner projection reads) and its outcome to ``orders.fulfilled`` (what the
status projection reads). After each step, once both projections' groups have committed
everything and a sample of orders answers ``GET /orders/{id}``, the process's resident
memory is read from ``/proc``. With the state in the database it should stay flat; an
in-process store grows with every order.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
import uuid
from collections.abc import Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import httpx

from pipeline.ingress.owners import owner_group
from pipeline.kafka.admin import admin_client, apply_topics, delete_topics
from pipeline.kafka.lag import end_offsets
from pipeline.kafka.produce import produce_records
from pipeline.kafka.topology import (
    ORDERS_EVENTS,
    ORDERS_FULFILLED,
    STAGE_NAMES,
    Naming,
    pipeline_topics,
)
from pipeline.settings import Settings
from pipeline.workload import WorkloadRecord
from schemas import OrderPlaced, OrderProgress

SETTLE_S = 5.0
"""Pause after the projections caught up, so that the allocator settles."""


@dataclass(frozen=True, slots=True)
class MemoryPoint:
    """The API process after ``orders`` orders: resident and peak resident memory."""

    orders: int
    rss_mb: float
    peak_rss_mb: float
    catch_up_s: float


async def measure_api_memory(
    settings: Settings,
    steps: list[int],
    *,
    database_url: str | None = None,
    on_point: Callable[[MemoryPoint], None] = lambda _point: None,
) -> list[MemoryPoint]:
    """Feed the API up to each of ``steps`` orders (ascending) and measure it each time."""
    naming = Naming.of(
        settings.topics.model_copy(update={"prefix": f"bench-api-{uuid.uuid4().hex[:6]}."})
    )
    topics = pipeline_topics(settings.topics.model_copy(update={"prefix": naming.prefix}))
    await apply_topics(settings.kafka, topics)
    workdir = Path(tempfile.mkdtemp(prefix="bench-api-"))
    port = _free_port()
    api = _start_api(
        settings, naming, port, database_url or f"sqlite+aiosqlite:///{workdir}/ingress.db"
    )
    points: list[MemoryPoint] = []
    try:
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{port}") as client:
            await _until_ready(client, api)
            fed = 0
            for target in steps:
                started = time.perf_counter()
                await _feed(settings, naming, range(fed, target))
                fed = target
                await _until_projected(settings, naming, client, target)
                caught_up = time.perf_counter() - started
                await asyncio.sleep(SETTLE_S)
                rss, peak = _memory_mb(api.pid)
                point = MemoryPoint(target, rss, peak, round(caught_up, 1))
                points.append(point)
                on_point(point)
    finally:
        api.send_signal(signal.SIGTERM)
        try:
            api.wait(timeout=30)
        except subprocess.TimeoutExpired:
            api.kill()
        shutil.rmtree(workdir, ignore_errors=True)
        await delete_topics(settings.kafka, [topic.name for topic in topics])
    return points


def _start_api(
    settings: Settings, naming: Naming, port: int, database_url: str
) -> subprocess.Popen[bytes]:
    environment = {
        **os.environ,
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "PIPELINE_TOPICS_PREFIX": naming.prefix,
        "PIPELINE_API_DATABASE_URL": database_url,
        # The benchmark is one unauthenticated caller polling fast, on loopback only.
        "PIPELINE_API_AUTH_DISABLED": "true",
        "PIPELINE_API_RATE_LIMIT_PER_S": "100000",
        "PIPELINE_API_RATE_LIMIT_BURST": "100000",
    }
    command = [str(Path(sys.executable).with_name("pipeline")), "serve-api", "--host", "127.0.0.1"]
    return subprocess.Popen(
        [*command, "--port", str(port)],
        env=environment,
        stdout=subprocess.DEVNULL,
        stderr=subprocess.DEVNULL,
    )


def _order_id(n: int) -> str:
    return f"ord-{n:08d}"


def _records(orders: range) -> Iterator[tuple[WorkloadRecord, WorkloadRecord]]:
    for n in orders:
        placed = OrderPlaced.model_validate(
            {
                "event_id": f"{_order_id(n)}-1",
                "order_id": _order_id(n),
                "sequence": 1,
                "occurred_at": "2025-01-31T12:00:00Z",
                "customer_id": f"cus-{n % 5000}",
                "currency": "EUR",
                "items": [{"sku": "book-1", "quantity": 1, "unit_price_cents": 990}],
            }
        )
        key = placed.order_id.encode()
        outcome = OrderProgress(event=placed, status="fulfilled", total_cents=990)
        yield (
            WorkloadRecord(key, placed.model_dump_json().encode()),
            WorkloadRecord(key, outcome.model_dump_json().encode()),
        )


async def _feed(settings: Settings, naming: Naming, orders: range) -> None:
    pairs = list(_records(orders))
    await produce_records(settings.kafka, naming.topic(ORDERS_EVENTS), (p[0] for p in pairs))
    await produce_records(settings.kafka, naming.topic(ORDERS_FULFILLED), (p[1] for p in pairs))


async def _until_ready(client: httpx.AsyncClient, api: subprocess.Popen[bytes]) -> None:
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        if api.poll() is not None:
            raise RuntimeError(f"the API exited with {api.returncode}")
        try:
            if (await client.get("/ready")).status_code == 200:
                return
        except httpx.TransportError:
            pass  # not listening yet
        await asyncio.sleep(0.2)
    raise RuntimeError("the API did not become ready within 60 s")


async def _until_projected(
    settings: Settings, naming: Naming, client: httpx.AsyncClient, orders: int
) -> None:
    """Until both projections' groups committed every record and a sample answers."""
    consumers = {
        naming.group(settings.api.projection_group): [
            naming.topic(ORDERS_FULFILLED),
            *(naming.dead_letter(stage) for stage in STAGE_NAMES),
        ],
        naming.group(owner_group(settings.api)): [naming.topic(ORDERS_EVENTS)],
    }
    sample = [_order_id(n) for n in range(0, orders, max(1, orders // 50))] + [
        _order_id(orders - 1)
    ]
    while True:
        behind = 0
        for group, inputs in consumers.items():
            behind += await _behind(settings, group, inputs)
        if behind <= 0:
            codes = [(await client.get(f"/orders/{order_id}")).status_code for order_id in sample]
            if set(codes) == {200}:
                return
        await asyncio.sleep(0.5)  # polling the groups' progress


async def _behind(settings: Settings, group: str, inputs: list[str]) -> int:
    """How many records of ``inputs`` ``group`` has not committed yet."""
    ends = await end_offsets(settings.kafka, inputs)
    async with admin_client(settings.kafka) as admin:
        committed = await admin.list_consumer_group_offsets(group)
    return sum(end - (committed[tp].offset if tp in committed else 0) for tp, end in ends.items())


def _memory_mb(pid: int) -> tuple[float, float]:
    """(VmRSS, VmHWM) of ``pid`` in MB."""
    fields = {}
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        name, _, value = line.partition(":")
        fields[name] = value.strip()
    return _kb(fields["VmRSS"]) / 1024, _kb(fields["VmHWM"]) / 1024


def _kb(value: str) -> float:
    return round(float(value.split()[0]), 1)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
