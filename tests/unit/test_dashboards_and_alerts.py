"""The Grafana dashboard and the Prometheus alerts name only metrics the code exports."""

from __future__ import annotations

import copy
import json
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
import yaml
from prometheus_client import CollectorRegistry

from pipeline.app import create_app
from pipeline.settings import Settings
from pipeline.telemetry.metrics import PipelineMetrics

pytestmark = pytest.mark.unit

ROOT = Path(__file__).resolve().parents[2]
DASHBOARD = ROOT / "deploy" / "grafana" / "dashboards" / "pipeline.json"
ALERTS = ROOT / "deploy" / "prometheus" / "alerts.yml"
PROMETHEUS_CONFIG = ROOT / "deploy" / "prometheus" / "prometheus.yml"

# Series Prometheus itself attaches to every target.
PROMETHEUS_SERIES = frozenset({"up"})

# The series names each metric type is exposed as: prometheus_client names a counter's
# family without `_total` but exposes `<name>_total`; a histogram's bare name is no series.
SERIES_SUFFIXES = {
    "counter": ("_total", "_created"),
    "gauge": ("",),
    "histogram": ("_bucket", "_count", "_sum", "_created"),
    "summary": ("", "_count", "_sum", "_created"),
    "info": ("_info",),
    "stateset": ("",),
    "gaugehistogram": ("_bucket", "_gcount", "_gsum"),
    "unknown": ("",),
}

PROMQL_KEYWORDS = frozenset(
    {"and", "or", "unless", "bool", "offset", "by", "without", "on", "ignoring"}
    | {"group_left", "group_right", "inf", "nan", "atan2"}
)
_STRING = re.compile(r'"(?:[^"\\]|\\.)*"|\'(?:[^\'\\]|\\.)*\'|`[^`]*`')
_GRAFANA_VARIABLE = re.compile(r"\$\{[^}]*\}|\$\w+|\[\[\w+\]\]")
_LABEL_LIST = re.compile(r"\b(?:by|without|on|ignoring|group_left|group_right)\s*\([^)]*\)")
_IDENTIFIER = re.compile(r"(?<![\w.:])[A-Za-z_:][\w:]*")
_LABEL_VALUES = re.compile(r"^\s*label_values\(\s*(?:(?P<selector>.*),)?\s*\w+\s*\)\s*$")


def exposed_series(registry: CollectorRegistry) -> set[str]:
    """Every series name a registry's metrics are scraped as, children or not."""
    names: set[str] = set()
    for family in registry.collect():
        names |= {family.name + suffix for suffix in SERIES_SUFFIXES[family.type]}
        names |= {sample.name for sample in family.samples}
    return names


def known_series() -> set[str]:
    """The pipeline's own series, FastStream's Kafka middleware's (as wired by the app into
    the registry its /metrics serves), and Prometheus's."""
    pipeline_registry = CollectorRegistry()
    PipelineMetrics(pipeline_registry)
    served_registry = create_app(Settings()).registry
    return exposed_series(pipeline_registry) | exposed_series(served_registry) | PROMETHEUS_SERIES


def metric_names(expr: str) -> set[str]:
    """Metric names a PromQL expression selects: identifiers that are not function calls,
    keywords, label names (in matchers or grouping clauses), durations or variables."""
    text = _GRAFANA_VARIABLE.sub("", _STRING.sub('""', expr))
    text = re.sub(r"\{[^}]*\}", " ", text)  # label matchers
    text = re.sub(r"\[[^\]]*\]", " ", text)  # ranges and subqueries
    text = _LABEL_LIST.sub(" ", text)
    names = set()
    for match in _IDENTIFIER.finditer(text):
        if re.match(r"\s*\(", text[match.end() :]):
            continue  # a function or aggregation
        if match.group().lower() not in PROMQL_KEYWORDS:
            names.add(match.group())
    return names


def _walk(node: Any) -> Iterator[dict[str, Any]]:
    if isinstance(node, dict):
        yield node
        for value in node.values():
            yield from _walk(value)
    elif isinstance(node, list):
        for item in node:
            yield from _walk(item)


def dashboard_expressions(dashboard: dict[str, Any]) -> dict[str, str]:
    """Where -> PromQL, for every panel target (rows included) and query variable."""
    found: dict[str, str] = {}
    for panel in _walk(dashboard.get("panels", [])):
        for target in panel.get("targets", []):
            if "expr" in target:
                found[f"panel {panel.get('title')!r} {target.get('refId')}"] = target["expr"]
    for variable in dashboard["templating"]["list"]:
        if variable.get("type") != "query":
            continue
        query = variable["query"]
        query = query.get("query", "") if isinstance(query, dict) else query
        label_values = _LABEL_VALUES.match(query)
        if label_values:
            query = label_values.group("selector") or ""
        found[f"variable {variable['name']!r}"] = query
    return found


def alert_rules() -> list[dict[str, Any]]:
    groups = yaml.safe_load(ALERTS.read_text())["groups"]
    return [rule for group in groups for rule in group["rules"]]


def load_dashboard() -> dict[str, Any]:
    dashboard: dict[str, Any] = json.loads(DASHBOARD.read_text())
    return dashboard


def unknown_metrics(expressions: dict[str, str]) -> dict[str, set[str]]:
    """Where -> metric names the code does not export."""
    known = known_series()
    unknown = {where: metric_names(expr) - known for where, expr in expressions.items()}
    return {where: names for where, names in unknown.items() if names}


@pytest.mark.parametrize(
    ("expr", "names"),
    [
        (
            "histogram_quantile(0.99, sum by (stage, le) "
            '(rate(a_seconds_bucket{stage=~"$stage"}[$__rate_interval])))',
            {"a_seconds_bucket"},
        ),
        ("sum(rate(a_total[5m])) by (stage) / on (stage) group_left b", {"a_total", "b"}),
        ("deriv(sum by (stage) (c)[10m:1m]) > 0\nand\nsum by (stage) (d) > 1e3", {"c", "d"}),
        ('up{job="order-pipeline", stage=~"${stage}"} == 0', {"up"}),
        ('e offset 5m unless f{verdict="retry"}', {"e", "f"}),
        ('label_replace(g, "dst", "$1", "src", "(.*)")', {"g"}),
    ],
)
def test_metric_names_are_told_apart_from_functions_labels_and_keywords(
    expr: str, names: set[str]
) -> None:
    assert metric_names(expr) == names


def test_series_names_follow_the_metric_type() -> None:
    known = known_series()
    assert "pipeline_events_processed_total" in known
    assert "pipeline_events_processed" not in known  # no such series: counters end in _total
    assert "pipeline_handler_duration_seconds_bucket" in known
    assert "pipeline_handler_duration_seconds" not in known
    assert "pipeline_consumer_lag" in known
    assert "faststream_received_messages_total" in known


def test_every_dashboard_metric_is_exported_by_the_code() -> None:
    assert unknown_metrics(dashboard_expressions(load_dashboard())) == {}


def test_every_alert_metric_is_exported_by_the_code() -> None:
    expressions = {rule["alert"]: rule["expr"] for rule in alert_rules()}
    assert unknown_metrics(expressions) == {}


def test_a_misspelt_metric_in_a_panel_is_caught() -> None:
    dashboard = copy.deepcopy(load_dashboard())
    panel = next(panel for panel in dashboard["panels"] if panel.get("targets"))
    panel["targets"].append(
        {"refId": "Z", "expr": 'sum(rate(pipeline_events_procesed_total{stage=~"$stage"}[5m]))'}
    )
    unknown = unknown_metrics(dashboard_expressions(dashboard))
    assert unknown.get(f"panel {panel['title']!r} Z") == {"pipeline_events_procesed_total"}


def test_dashboard_panels_follow_the_stage_variable() -> None:
    dashboard = load_dashboard()
    assert dashboard["uid"] == "order-pipeline"
    variables = {variable["name"]: variable for variable in dashboard["templating"]["list"]}
    stage = variables["stage"]
    query = stage["query"]["query"] if isinstance(stage["query"], dict) else stage["query"]
    assert query == "label_values(pipeline_stage_ready, stage)"
    assert stage["includeAll"], "the stage variable offers All"
    assert stage["multi"], "the stage variable takes several stages"
    for where, expr in dashboard_expressions(dashboard).items():
        if where.startswith("panel"):
            assert '=~"$stage"' in expr, f"{where} ignores the stage variable: {expr}"


def test_dashboard_panel_ids_are_unique() -> None:
    ids = [panel["id"] for panel in _walk(load_dashboard()["panels"]) if "gridPos" in panel]
    assert len(ids) == len(set(ids))


def test_every_alert_has_a_runbook_section_and_a_severity() -> None:
    anchors = []
    for rule in alert_rules():
        runbook = rule.get("annotations", {}).get("runbook", "")
        assert re.fullmatch(r"docs/deploy\.md#[a-z0-9-]+", runbook), (rule["alert"], runbook)
        anchors.append(runbook)
        assert rule.get("labels", {}).get("severity") in ("warning", "critical"), rule["alert"]
    assert len(anchors) == len(set(anchors)), "each alert has its own runbook section"


def test_job_matchers_name_the_scrape_job() -> None:
    scrape_configs = yaml.safe_load(PROMETHEUS_CONFIG.read_text())["scrape_configs"]
    jobs = {job["job_name"] for job in scrape_configs}
    expressions = [rule["expr"] for rule in alert_rules()]
    expressions += list(dashboard_expressions(load_dashboard()).values())
    for expr in expressions:
        for job in re.findall(r'\bjob\s*=\s*"([^"]*)"', expr):
            assert job in jobs, f"no scrape job {job!r} ({expr})"
