"""The seam through which the engine reports what happens to records.

The engine calls these hooks on its hot path; the Prometheus implementation lives in
:mod:`pipeline.telemetry.metrics`, and :class:`NullObserver` costs nothing.
"""

from __future__ import annotations

from typing import Any, Protocol

from aiokafka.structs import TopicPartition

from pipeline.failures.classify import Verdict


class StageObserver(Protocol):
    """Receives the engine's events for one stage."""

    def taken(self, count: int, in_flight: int) -> None:
        """``count`` records were taken from Kafka."""

    def handled(self, seconds: float, event: Any) -> None:
        """The handler succeeded for ``event`` after ``seconds``."""

    def failed(self, error: BaseException, verdict: Verdict) -> None:
        """The handler raised ``error`` and the policy answered ``verdict``."""

    def retried(self) -> None:
        """A record is being attempted again."""

    def dead_lettered(self, error: BaseException) -> None:
        """A record went to the dead-letter topic because of ``error``."""

    def finished(self, in_flight: int) -> None:
        """A record's output was acknowledged by the broker."""

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Offsets were committed for the stage's group."""

    def deduplicated(self) -> None:
        """A redelivered record was finished without a second output."""

    def dropped(self) -> None:
        """The handler returned nothing: the record is consumed with no output."""

    def parked(self) -> None:
        """A record of a key held behind its dead letter was parked."""

    def holding(self, keys: int, oldest_since_ms: int | None) -> None:
        """``keys`` are parked behind dead letters, the oldest since ``oldest_since_ms``."""

    def lag(self, partition: TopicPartition, records: int) -> None:
        """``records`` of ``partition`` are behind the group's committed offset."""

    def ready(self, is_ready: bool) -> None:
        """The stage's consumer became ready (owns partitions or is idle) or not."""


class NullObserver:
    """Observes nothing."""

    def taken(self, count: int, in_flight: int) -> None:
        """Ignored."""

    def handled(self, seconds: float, event: Any) -> None:
        """Ignored."""

    def failed(self, error: BaseException, verdict: Verdict) -> None:
        """Ignored."""

    def retried(self) -> None:
        """Ignored."""

    def dead_lettered(self, error: BaseException) -> None:
        """Ignored."""

    def finished(self, in_flight: int) -> None:
        """Ignored."""

    def committed(self, offsets: dict[TopicPartition, int]) -> None:
        """Ignored."""

    def deduplicated(self) -> None:
        """Ignored."""

    def dropped(self) -> None:
        """Ignored."""

    def parked(self) -> None:
        """Ignored."""

    def holding(self, keys: int, oldest_since_ms: int | None) -> None:
        """Ignored."""

    def lag(self, partition: TopicPartition, records: int) -> None:
        """Ignored."""

    def ready(self, is_ready: bool) -> None:
        """Ignored."""
