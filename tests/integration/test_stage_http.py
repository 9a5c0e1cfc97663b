"""A running stage process serves /health, /ready and /metrics; after real traffic the
scrape holds every metric the dashboard and the alert rules use."""

from __future__ import annotations

import json
import signal
import socket
import time
import urllib.error
import urllib.request

from pipeline.kafka.topology import Naming
from pipeline.settings import Settings
from tests.integration.helpers import drain_and_verify, produce_orders, start_stage_process
from tests.unit.test_dashboards_and_alerts import (
    alert_rules,
    dashboard_expressions,
    load_dashboard,
    metric_names,
)


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _get(port: int, path: str) -> tuple[int, str]:
    try:
        with urllib.request.urlopen(f"http://127.0.0.1:{port}{path}", timeout=5) as response:
            return response.status, response.read().decode()
    except urllib.error.HTTPError as error:
        return error.code, error.read().decode()


def _wait_until_ready(port: int, attempts: int = 600) -> list[int]:
    seen: list[int] = []
    for _ in range(attempts):
        try:
            status, _body = _get(port, "/ready")
        except OSError:  # not listening yet
            status = 0
        seen.append(status)
        if status == 200:
            return seen
        time.sleep(0.1)  # polling another process's HTTP endpoint: nothing to await
    raise AssertionError(f"never ready; statuses seen {sorted(set(seen))}")


async def test_metrics_after_real_traffic_cover_every_dashboard_and_alert_metric(
    settings: Settings, topics: Naming
) -> None:
    port = _free_port()
    process = start_stage_process(
        settings,
        "--all",
        PIPELINE_HTTP_ENABLED="true",
        PIPELINE_HTTP_PORT=str(port),
        PIPELINE_SERVICES_TRANSIENT_FAILURE_RATE="0.3",
        PIPELINE_STAGE_RETRY_DELAYS_S=json.dumps([0.1, 0.1, 0.1]),
        PIPELINE_STAGE_IN_PROCESS_ATTEMPTS="1",
    )
    try:
        statuses = _wait_until_ready(port)
        assert _get(port, "/health")[0] == 200
        ready_body = _get(port, "/ready")[1]
        assert "validate=assigned" in ready_body
        await produce_orders(settings, 500)
        report = await drain_and_verify(settings)
        status, scrape = _get(port, "/metrics")
    finally:
        process.send_signal(signal.SIGTERM)
        output = process.communicate(timeout=60)[0].decode()
    assert process.returncode == 0, output[-3000:]
    assert report.clean, report.as_dict()
    assert status == 200
    assert 200 in statuses
    exported = {
        line.split("{")[0].split(" ")[0]
        for line in scrape.splitlines()
        if line and not line.startswith("#")
    }
    wanted: set[str] = set()
    for expression in dashboard_expressions(load_dashboard()).values():
        wanted |= metric_names(expression)
    for rule in alert_rules():
        wanted |= metric_names(rule["expr"])
    wanted.discard("up")  # written by Prometheus itself
    assert wanted - exported == set(), (
        f"used by dashboards/alerts, not exported: {wanted - exported}"
    )
    for sample in (
        "pipeline_events_retried_total",
        "pipeline_events_dead_lettered_total",
        "pipeline_consumer_lag",
        "pipeline_build_info",
    ):
        assert sample in exported
