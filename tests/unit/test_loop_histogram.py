"""The loop-local histogram exports exactly what prometheus_client's Histogram would."""

from __future__ import annotations

import pytest
from prometheus_client import CollectorRegistry, Counter, Histogram, generate_latest

from pipeline.telemetry.histograms import LoopHistogram, ObservationCount

pytestmark = pytest.mark.unit

BUCKETS = (0.001, 0.01, 0.1, 1.0)
VALUES = [0.0005, 0.001, 0.002, 0.01, 0.05, 0.1, 0.5, 1.0, 2.0, 7.5, 0.0]


def exposition(make: type, observe_into: str) -> str:
    registry = CollectorRegistry()
    histogram = make("latency_seconds", "Latency.", ["stage"], buckets=BUCKETS, registry=registry)
    for stage in ("pay", "fulfil"):
        child = histogram.labels(stage)
        for value in VALUES if stage == observe_into else VALUES[:3]:
            child.observe(value)
    lines = generate_latest(registry).decode().splitlines()
    return "\n".join(line for line in lines if "_created" not in line)


def loop_histogram(
    name: str,
    doc: str,
    labels: list[str],
    *,
    buckets: tuple[float, ...],
    registry: CollectorRegistry,
) -> LoopHistogram:
    return LoopHistogram(name, doc, buckets, registry, label=labels[0])


def test_buckets_count_and_sum_match_prometheus_clients_histogram() -> None:
    expected = exposition(Histogram, "pay")
    assert exposition(loop_histogram, "pay") == expected  # type: ignore[arg-type]
    assert 'latency_seconds_bucket{le="0.01",stage="pay"} 5.0' in expected  # le inclusive


def test_a_second_registration_of_the_name_is_refused() -> None:
    registry = CollectorRegistry()
    LoopHistogram("latency_seconds", "Latency.", BUCKETS, registry)
    with pytest.raises(ValueError, match="Duplicated"):
        LoopHistogram("latency_seconds", "Latency.", BUCKETS, registry)


def test_the_observation_count_is_exported_as_a_counter_per_label() -> None:
    registry = CollectorRegistry()
    histogram = LoopHistogram("latency_seconds", "Latency.", BUCKETS, registry)
    ObservationCount("handled", "Handled.", histogram, registry)
    expected_registry = CollectorRegistry()
    expected = Counter("handled", "Handled.", ["stage"], registry=expected_registry)
    for stage, values in (("pay", VALUES), ("fulfil", VALUES[:3]), ("idle", [])):
        child = histogram.labels(stage)
        expected.labels(stage)
        for value in values:
            child.observe(value)
            expected.labels(stage).inc()

    def counter_lines(registry: CollectorRegistry) -> list[str]:
        lines = generate_latest(registry).decode().splitlines()
        lines = [line for line in lines if "_created" not in line]
        return sorted(line for line in lines if line.startswith(("handled", "# TYPE handled")))

    assert counter_lines(registry) == counter_lines(expected_registry)
    assert registry.get_sample_value("handled_total", {"stage": "pay"}) == len(VALUES)
