"""The pipeline's own Prometheus metrics, and the engine observer that feeds them.

Labels are bounded: the stage name, an outcome or verdict from a fixed enum, and the
exception's class name (bounded by the code base). Never a key, an id or a message.
"""

from __future__ import annotations

import platform
import time
from datetime import datetime
from importlib.metadata import version
from typing import Any

from aiokafka.structs import TopicPartition
from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.failures.classify import Verdict
from pipeline.telemetry.histograms import LoopHistogram, ObservationCount

# Handlers here take microseconds (in-memory) to tens of milliseconds (remote calls).
HANDLER_BUCKETS = (0.0001, 0.0005, 0.001, 0.0025, 0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 1.0)
# End to end spans every stage, commit intervals and retries: milliseconds to minutes.
END_TO_END_BUCKETS = (0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0, 10.0, 30.0, 60.0, 300.0)


class PipelineMetrics:
    """Every metric the pipeline exports, registered once per registry."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.failed = Counter(
            "pipeline_events_failed",
            "Handler failures, by the verdict of the stage's error policy.",
            ["stage", "verdict", "exception_type"],
            registry=registry,
        )
        self.retried = Counter(
            "pipeline_events_retried",
            "Further attempts of records that failed with a retryable error.",
            ["stage"],
            registry=registry,
        )
        self.dead_lettered = Counter(
            "pipeline_events_dead_lettered",
            "Records sent to the stage's dead-letter topic.",
            ["stage", "exception_type"],
            registry=registry,
        )
        # observed for every record: the engine's loop-local histograms, not prometheus
        # client's locked ones (pipeline/telemetry/histograms.py)
        self.handler_duration = LoopHistogram(
            "pipeline_handler_duration_seconds",
            "Time from a record's start to its handler's result.",
            HANDLER_BUCKETS,
            registry,
        )
        self.end_to_end = LoopHistogram(
            "pipeline_end_to_end_latency_seconds",
            "Time from the event's creation (its occurred_at) to its handling here.",
            END_TO_END_BUCKETS,
            registry,
        )
        # one per handler duration observed: the histogram's count, not a second
        # per-record increment behind prometheus_client's lock
        self.processed = ObservationCount(
            "pipeline_events_processed",
            "Records whose handler succeeded and whose output was issued.",
            self.handler_duration,
            registry,
        )
        self.in_flight = Gauge(
            "pipeline_in_flight_records",
            "Records taken from Kafka whose outputs are not acknowledged yet.",
            ["stage"],
            registry=registry,
        )
        self.deduplicated = Counter(
            "pipeline_events_deduplicated",
            "Redelivered records finished without a second output.",
            ["stage"],
            registry=registry,
        )
        self.dropped = Counter(
            "pipeline_events_dropped",
            "Records whose handler returned nothing: consumed, no output (a filter).",
            ["stage"],
            registry=registry,
        )
        self.parked = Counter(
            "pipeline_events_parked",
            "Records of keys held behind a dead letter, written to <stage>.parked.",
            ["stage"],
            registry=registry,
        )
        self.held_keys = Gauge(
            "pipeline_held_keys",
            "Keys whose later events are parked behind a dead letter (on_dead_letter=hold).",
            ["stage"],
            registry=registry,
        )
        self.oldest_hold = Gauge(
            "pipeline_oldest_hold_timestamp_seconds",
            "When the longest-held key was parked (0: none held); alert on its age.",
            ["stage"],
            registry=registry,
        )
        self.committed = Counter(
            "pipeline_offset_commits",
            "Offset commits of the stage's consumer group.",
            ["stage"],
            registry=registry,
        )
        self.lag = Gauge(
            "pipeline_consumer_lag",
            "End offset minus committed offset, per input partition.",
            ["stage", "topic", "partition"],
            registry=registry,
        )
        self.ready = Gauge(
            "pipeline_stage_ready",
            "1 when the stage's consumer owns partitions or is deliberately idle.",
            ["stage"],
            registry=registry,
        )
        self.build_info = Gauge(
            "pipeline_build_info",
            "Versions of the running pipeline; always 1.",
            ["version", "faststream", "aiokafka", "python"],
            registry=registry,
        )
        self.build_info.labels(
            _version("order-pipeline"),
            _version("faststream"),
            _version("aiokafka"),
            platform.python_version(),
        ).set(1)


def _version(package: str) -> str:
    try:
        return version(package)
    except Exception:  # not installed as a distribution (a source checkout)
        return "unknown"


class PrometheusObserver:
    """Feeds :class:`PipelineMetrics` from one stage's engine; label children are bound
    once, so the hot path does no label lookups."""

    def __init__(self, metrics: PipelineMetrics, stage: str) -> None:
        self._metrics = metrics
        self._stage = stage
        self._retried = metrics.retried.labels(stage)
        self._duration = metrics.handler_duration.labels(stage)
        self._end_to_end = metrics.end_to_end.labels(stage)
        self._in_flight = metrics.in_flight.labels(stage)
        self._commits = metrics.committed.labels(stage)

    def taken(self, count: int, in_flight: int) -> None:
        """Update the in-flight gauge."""
        self._in_flight.set(in_flight)

    def handled(self, seconds: float, event: Any) -> None:
        """Count a success (the duration's observation counts it as processed); observe
        handler time and time since the event's creation."""
        self._duration.observe(seconds)
        occurred_at = _occurred_at(event)
        if occurred_at is not None:
            self._end_to_end.observe(time.time() - occurred_at.timestamp())

    def failed(self, error: BaseException, verdict: Verdict) -> None:
        """Count a failure by verdict and exception class."""
        self._metrics.failed.labels(self._stage, verdict.value, type(error).__name__).inc()

    def retried(self) -> None:
        """Count an attempt beyond the first."""
        self._retried.inc()

    def dead_lettered(self, error: BaseException) -> None:
        """Count a dead letter by exception class."""
        self._metrics.dead_lettered.labels(self._stage, type(error).__name__).inc()

    def finished(self, in_flight: int) -> None:
        """Update the in-flight gauge."""
        self._in_flight.set(in_flight)

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Count a commit."""
        self._commits.inc()

    def deduplicated(self) -> None:
        """Count a redelivered duplicate."""
        self._metrics.deduplicated.labels(self._stage).inc()

    def dropped(self) -> None:
        """Count a record consumed without output."""
        self._metrics.dropped.labels(self._stage).inc()

    def parked(self) -> None:
        """Count a parked record."""
        self._metrics.parked.labels(self._stage).inc()

    def holding(self, keys: int, oldest_since_ms: int | None) -> None:
        """Set the held keys and the oldest hold's time."""
        self._metrics.held_keys.labels(self._stage).set(keys)
        oldest = (oldest_since_ms or 0) / 1000
        self._metrics.oldest_hold.labels(self._stage).set(oldest)

    def lag(self, partition: TopicPartition, records: int) -> None:
        """Set the lag of one input partition."""
        self._metrics.lag.labels(self._stage, partition.topic, str(partition.partition)).set(
            records
        )

    def ready(self, is_ready: bool) -> None:
        """Set the readiness gauge."""
        self._metrics.ready.labels(self._stage).set(1 if is_ready else 0)


def _occurred_at(event: Any) -> datetime | None:
    """When the event behind ``event`` was created, if its model says so: an
    ``occurred_at`` field on it, or on the event it carries as ``event`` (the checkout's
    progress records carry their order event). Which of them is decided once per model:
    looking up a missing attribute of a pydantic model raises inside, on every record."""
    kind = type(event)
    path = _OCCURRED_AT.get(kind)
    if path is None:
        path = _OCCURRED_AT[kind] = _path_to_occurred_at(kind)
    value = event
    for name in path:
        value = getattr(value, name, None)
    return value if path and isinstance(value, datetime) else None


_OCCURRED_AT: dict[type, tuple[str, ...]] = {}


def _path_to_occurred_at(kind: type) -> tuple[str, ...]:
    fields = getattr(kind, "model_fields", {})
    if "occurred_at" in fields:
        return ("occurred_at",)
    if "event" in fields:
        return ("event", "occurred_at")  # the carried event's type is checked per record
    return ()
