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
