"""Prometheus's own checker accepts the alert rules and the scrape configuration."""

from __future__ import annotations

import shutil
import subprocess
from pathlib import Path

import pytest

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

INSTALL_PROMTOOL = (
    "promtool is not on PATH, so the Prometheus rules and config cannot be checked. "
    "Install it: `apt-get install -y --no-install-recommends prometheus` (Debian/Ubuntu, "
    "ships /usr/bin/promtool), or put promtool from a Prometheus release on PATH."
)


def promtool() -> str:
    """promtool's path; a missing promtool fails the run, it never skips the check."""
    path = shutil.which("promtool")
    if path is None:
        pytest.fail(INSTALL_PROMTOOL)
    return path


def check(kind: str, path: Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run(
        [promtool(), "check", kind, str(path)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )


def test_promtool_accepts_the_alert_rules() -> None:
    result = check("rules", ALERTS)
    assert result.returncode == 0, result.stdout + result.stderr


def test_promtool_accepts_the_prometheus_config_and_its_rule_files() -> None:
    result = check("config", PROMETHEUS_CONFIG)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "rule files found" in result.stdout, "prometheus.yml loads the alert rules"


ALERT_TESTS = ROOT / "deploy" / "prometheus" / "alerts.test.yml"


def test_every_alert_fires_and_stays_quiet_as_its_unit_tests_say() -> None:
    """`promtool test rules` with synthetic series: each alert fires with its rendered
    annotations when it should, and not before its `for:` or below its threshold."""
    result = subprocess.run(
        [promtool(), "test", "rules", str(ALERT_TESTS)],
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    assert result.returncode == 0, result.stdout + result.stderr


def test_every_alert_has_a_unit_test() -> None:
    import yaml

    rules = yaml.safe_load(ALERTS.read_text())
    alerts = {rule["alert"] for group in rules["groups"] for rule in group["rules"]}
    tests = yaml.safe_load(ALERT_TESTS.read_text())["tests"]
    tested = {case["alertname"] for test in tests for case in test["alert_rule_test"]}
    fired = {
        case["alertname"]
        for test in tests
        for case in test["alert_rule_test"]
        if case.get("exp_alerts")
    }
    assert alerts == tested == fired, (alerts, tested, fired)
