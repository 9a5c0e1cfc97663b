"""The shipped alert rules and Grafana panels on a live Prometheus (Debian's
``prometheus``, as promtool is) scraping the four stages while orders flow.

After traffic, every panel's query returns data; a stage killed with SIGKILL makes
``PipelineStageDown`` fire; a stage that stalls (its handler never returns) while orders
keep arriving makes ``PipelineConsumerLagGrowing`` fire. The rules' ``for:`` durations
(and the lag alert's window and backlog threshold) are shortened for the test only; the
shipped ones are
untouched (their own behaviour is unit-tested with synthetic series in
deploy/prometheus/alerts.test.yml).

``pipeline_consumer_lag`` is exported by the stage process itself, on each commit and on
a timer from the broker's end offsets, so a stage that stops committing still shows its
growing backlog; a frozen process is not scraped (``PipelineStageDown`` covers that).
"""

from __future__ import annotations

import asyncio
import shutil
import signal
import socket
import subprocess
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
import yaml

from pipeline.kafka.lag import stage_lag
from pipeline.kafka.topology import STAGE_NAMES, Naming
from pipeline.settings import Settings
from tests.integration.helpers import drain_and_verify, produce_orders, start_stage_process
from tests.unit.test_dashboards_and_alerts import dashboard_expressions, load_dashboard

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


LAG_WINDOW = ("[10m:1m]", "[20s:1s]")
LAG_BACKLOG = ("> 1000", "> 500")
"""The lag alert's trend window and backlog threshold, shipped -> in this test."""


def shortened_rules(directory: Path) -> Path:
    """The shipped alerts with every ``for:`` at 3 s (scrapes every second here), and the
    lag alert's trend over 20 s of a backlog over 500 records."""
    rules = yaml.safe_load(ALERTS.read_text())
    for group in rules["groups"]:
        for rule in group["rules"]:
            if "for" in rule:
                rule["for"] = "3s"
            if rule.get("alert") == "PipelineConsumerLagGrowing":
                for shipped, short in (LAG_WINDOW, LAG_BACKLOG):
                    assert shipped in rule["expr"], f"the lag alert no longer has {shipped}"
                    rule["expr"] = rule["expr"].replace(shipped, short)
    path = directory / "alerts.yml"
    path.write_text(yaml.safe_dump(rules))
    return path


@pytest.fixture
def stage_ports() -> dict[str, int]:
    return {stage: free_port() for stage in STAGE_NAMES}


@pytest.fixture
def prometheus(tmp_path: Path, stage_ports: dict[str, int]) -> Iterator[str]:
    """A Prometheus server scraping the stages' ports every second; its base URL."""
    binary = shutil.which("prometheus")
    if binary is None:
        pytest.fail("prometheus is not on PATH: apt-get install prometheus (make install does)")
    port = free_port()
    config = {
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "rule_files": [str(shortened_rules(tmp_path))],
        "scrape_configs": [
            {
                "job_name": "order-pipeline",
                "metrics_path": "/metrics",
                "honor_labels": True,
                "static_configs": [
                    {"targets": [f"127.0.0.1:{p}"], "labels": {"stage": stage}}
                    for stage, p in stage_ports.items()
                ],
            }
        ],
    }
    (tmp_path / "prometheus.yml").write_text(yaml.safe_dump(config))
    process = subprocess.Popen(
        [
            binary,
            f"--config.file={tmp_path / 'prometheus.yml'}",
            f"--storage.tsdb.path={tmp_path / 'data'}",
            f"--web.listen-address=127.0.0.1:{port}",
        ],
        stdout=subprocess.DEVNULL,
        stderr=(tmp_path / "prometheus.log").open("wb"),
    )
    try:
        yield f"http://127.0.0.1:{port}"
    finally:
        process.terminate()
        process.wait(timeout=30)


async def until(condition: Any, timeout_s: float = 60.0) -> Any:
    """Poll ``condition()`` (async) until it returns something truthy."""
    async with asyncio.timeout(timeout_s):
        while True:
            result = await condition()
            if result:
                return result
            await asyncio.sleep(0.5)


@pytest.fixture
async def client(prometheus: str) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=prometheus, timeout=10) as http:

        async def ready() -> bool:
            try:
                return (await http.get("/-/ready")).status_code == 200
            except httpx.TransportError:
                return False

        await until(ready)
        yield http


async def query(client: httpx.AsyncClient, expr: str) -> list[Any]:
    response = await client.get("/api/v1/query", params={"query": expr})
    body = response.json()
    assert body["status"] == "success", (expr, body)
    result: list[Any] = body["data"]["result"]
    return result


async def test_every_panel_has_data_and_a_killed_stage_fires_stage_down(
    settings: Settings,
    topics: Naming,
    stage_ports: dict[str, int],
    client: httpx.AsyncClient,
) -> None:
    processes = {
        stage: start_stage_process(
            settings,
            stage,
            PIPELINE_HTTP_ENABLED="true",
            PIPELINE_HTTP_PORT=str(port),
            PIPELINE_SERVICES_TRANSIENT_FAILURE_RATE="0.05",
            PIPELINE_STAGE_RETRY_DELAYS_S="[0.5, 1.0, 2.0]",
        )
        for stage, port in stage_ports.items()
    }
    try:
        await until(lambda: _all_up(client))
        await produce_orders(settings, 1_000)  # with invalid records: dead letters too
        report = await drain_and_verify(settings)
        assert report.clean, report.as_dict()
        panels = {
            where: expr.replace('"$stage"', '".*"').replace("$__rate_interval", "1m")
            for where, expr in dashboard_expressions(load_dashboard()).items()
        }

        async def every_panel_has_data() -> bool:
            return all([await query(client, expr) for expr in panels.values()])

        try:
            await until(every_panel_has_data, timeout_s=60)
        except TimeoutError:
            empty = [w for w, e in panels.items() if not await query(client, e)]
            pytest.fail(f"panels without data after traffic: {empty}")

        processes["reserve"].send_signal(signal.SIGKILL)
        processes["reserve"].wait()

        async def stage_down_fires() -> list[Any]:
            alerts = (await client.get("/api/v1/alerts")).json()["data"]["alerts"]
            return [
                a
                for a in alerts
                if a["labels"]["alertname"] == "PipelineStageDown" and a["state"] == "firing"
            ]

        [firing] = await until(stage_down_fires, timeout_s=60)
        assert firing["labels"]["stage"] == "reserve"
        assert firing["annotations"]["runbook"] == "docs/deploy.md#stage-down"
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            process.wait(timeout=60)


async def test_a_stalled_stage_fires_consumer_lag_growing(
    settings: Settings,
    topics: Naming,
    stage_ports: dict[str, int],
    client: httpx.AsyncClient,
) -> None:
    # pay's payment calls never return within the test and it takes at most 10 records
    # at once: it stalls, committing and fetching nothing, while orders keep arriving.
    # Only its lag, measured from the broker's end offsets, can show it.
    slow = {
        "PIPELINE_SERVICES_LATENCY_MS": "600000",
        "PIPELINE_STAGE_MAX_IN_FLIGHT": "10",
        "PIPELINE_STAGE_LAG_INTERVAL_S": "1",
    }
    processes = {
        stage: start_stage_process(
            settings,
            stage,
            PIPELINE_HTTP_ENABLED="true",
            PIPELINE_HTTP_PORT=str(port),
            **(slow if stage == "pay" else {}),
        )
        for stage, port in stage_ports.items()
    }

    async def keep_ordering() -> None:
        while True:
            await produce_orders(settings, 100, invalid_every=0)
            await asyncio.sleep(0.5)

    try:
        await until(lambda: _all_up(client))
        feeding = asyncio.create_task(keep_ordering())
        try:

            async def lag_growing_fires() -> list[Any]:
                alerts = (await client.get("/api/v1/alerts")).json()["data"]["alerts"]
                return [
                    a
                    for a in alerts
                    if a["labels"]["alertname"] == "PipelineConsumerLagGrowing"
                    and a["state"] == "firing"
                ]

            firing = await until(lag_growing_fires, timeout_s=60)
            # the backlog is real: Kafka's own view of the group agrees
            behind = await stage_lag(settings.kafka, ["pay"], topics, settings.topics.retry_levels)
        finally:
            feeding.cancel()
        assert [a["labels"]["stage"] for a in firing] == ["pay"]
        assert firing[0]["annotations"]["runbook"] == "docs/deploy.md#consumer-lag-growing"
        assert behind["pay"] > 500
    finally:
        for process in processes.values():
            if process.poll() is None:
                process.terminate()
        for process in processes.values():
            process.wait(timeout=60)


async def _all_up(client: httpx.AsyncClient) -> bool:
    up = await query(client, 'up{job="order-pipeline"} == 1')
    return len(up) == len(STAGE_NAMES)
