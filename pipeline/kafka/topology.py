"""The pipeline's topics, in one place: names, partitions, replication and retention.

``pipeline topics apply`` and the rendered Strimzi resources both come from
:func:`pipeline_topics`, so the code and the cluster cannot disagree silently.
"""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from dataclasses import dataclass, field
from typing import Protocol

from pipeline.settings import TopologySettings

ORDERS_EVENTS = "orders.events"
ORDERS_VALIDATED = "orders.validated"
ORDERS_RESERVED = "orders.reserved"
ORDERS_PAID = "orders.paid"
ORDERS_FULFILLED = "orders.fulfilled"

JOBS_TOPIC = "pipeline.jobs"
"""Ticks of the scheduled jobs (``pipeline schedule``)."""
JOBS_RETENTION_MS = 24 * 3600 * 1000

STAGE_NAMES = ("validate", "reserve", "pay", "fulfil")
"""The stages in flow order; each stage's consumer group id is its name."""

STAGE_TOPICS: dict[str, tuple[str, str]] = {
    "validate": (ORDERS_EVENTS, ORDERS_VALIDATED),
    "reserve": (ORDERS_VALIDATED, ORDERS_RESERVED),
    "pay": (ORDERS_RESERVED, ORDERS_PAID),
    "fulfil": (ORDERS_PAID, ORDERS_FULFILLED),
}
"""Stage name -> (input topic, output topic)."""


class StageTopics(Protocol):
    """What the flow needs of a stage: the topic it reads and the ones it writes."""

    @property
    def source(self) -> str:
        """The topic the stage reads."""
        ...

    @property
    def output_topics(self) -> tuple[str, ...]:
        """The topics the stage writes: its sink, then its other outputs."""
        ...


def flow_topics(stages: Iterable[StageTopics]) -> list[str]:
    """Every topic ``stages`` read or write, in declaration order (no duplicates)."""
    seen: dict[str, None] = {}
    for stage in stages:
        for topic in (stage.source, *stage.output_topics):
            seen.setdefault(topic, None)
    return list(seen)


def entry_topics(stages: Iterable[StageTopics]) -> list[str]:
    """Topics ``stages`` read that none of them writes: where events come in."""
    stages = list(stages)
    written = {topic for stage in stages for topic in stage.output_topics}
    return list(dict.fromkeys(s.source for s in stages if s.source not in written))


def terminal_topics(stages: Iterable[StageTopics]) -> list[str]:
    """Topics ``stages`` write that none of them reads: where events leave."""
    stages = list(stages)
    read = {stage.source for stage in stages}
    return [topic for topic in flow_topics(stages) if topic not in read]


def dead_letter_topic(stage: str) -> str:
    """Name of the stage's dead-letter topic."""
    return f"{stage}.dlq"


def retry_topic(stage: str, level: int) -> str:
    """Name of the stage's retry topic for ``level`` (1-based)."""
    return f"{stage}.retry.{level}"


def holds_topic(stage: str) -> str:
    """The stage's compacted journal of keys waiting behind a record on the ladder."""
    return f"{stage}.holds"


def parked_topic(stage: str) -> str:
    """Name of the topic holding the stage's parked events (later events of a key held
    behind its dead letter)."""
    return f"{stage}.parked"


def dead_letter_actions_topic(stage: str) -> str:
    """The stage's compacted log of operator actions on its dead letters."""
    return f"{stage}.dlq.actions"


def dead_letter_topics() -> list[str]:
    """Every stage's dead-letter topic, in flow order."""
    return [dead_letter_topic(stage) for stage in STAGE_NAMES]


@dataclass(frozen=True, slots=True)
class Naming:
    """Maps the pipeline's logical topic and group names into a namespace (a prefix), so
    several pipelines (or test runs) can share one cluster."""

    prefix: str = ""

    @classmethod
    def of(cls, settings: TopologySettings) -> Naming:
        """The naming the settings ask for."""
        return cls(settings.prefix)

    def topic(self, logical: str) -> str:
        """The real name of a logical topic."""
        return f"{self.prefix}{logical}"

    def group(self, stage: str) -> str:
        """The consumer group id of a stage."""
        return f"{self.prefix}{stage}"

    def source(self, stage: str) -> str:
        """The stage's input topic."""
        return self.topic(STAGE_TOPICS[stage][0])

    def dead_letter(self, stage: str) -> str:
        """The stage's dead-letter topic."""
        return self.topic(dead_letter_topic(stage))

    def retry(self, stage: str, level: int) -> str:
        """The stage's retry topic for ``level``."""
        return self.topic(retry_topic(stage, level))

    def dead_letter_actions(self, stage: str) -> str:
        """The stage's log of replayed and discarded dead letters."""
        return self.topic(dead_letter_actions_topic(stage))

    def holds(self, stage: str) -> str:
        """The stage's holds journal."""
        return self.topic(holds_topic(stage))

    def parked(self, stage: str) -> str:
        """The stage's parked events."""
        return self.topic(parked_topic(stage))


@dataclass(frozen=True, slots=True)
class TopicSpec:
    """A topic as the pipeline wants it to exist."""

    name: str
    partitions: int
    replication_factor: int
    config: dict[str, str] = field(default_factory=dict)


def pipeline_topics(
    settings: TopologySettings,
    flow: Sequence[str] | None = None,
    stages: Sequence[str] | None = None,
) -> list[TopicSpec]:
    """Every topic a pipeline reads or writes: its ``flow`` topics (the ones its stages
    read and write) and each of its ``stages``' retry, holds, dead-letter, parked and
    dead-letter-actions topics. ``None``: the checkout flow's."""
    stage_names = STAGE_NAMES if stages is None else tuple(stages)

    naming = Naming.of(settings)

    durability = (
        {}
        if settings.min_insync_replicas is None
        else {"min.insync.replicas": str(settings.min_insync_replicas)}
    )

    def topic(name: str, retention_ms: int) -> TopicSpec:
        return TopicSpec(
            name=naming.topic(name),
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            config={"retention.ms": str(retention_ms), "cleanup.policy": "delete", **durability},
        )

    if flow is None:
        flow = [ORDERS_EVENTS, ORDERS_VALIDATED, ORDERS_RESERVED, ORDERS_PAID, ORDERS_FULFILLED]
    ladder = [
        topic(retry_topic(stage, level), settings.retention_ms)
        for stage in stage_names
        for level in range(1, settings.retry_levels + 1)
    ]
    holds = [
        TopicSpec(
            name=naming.topic(holds_topic(stage)),
            partitions=settings.partitions,
            replication_factor=settings.replication_factor,
            config={"cleanup.policy": "compact", "min.compaction.lag.ms": "0", **durability},
        )
        for stage in stage_names
    ] + [
        TopicSpec(
            name=naming.topic(dead_letter_actions_topic(stage)),
            partitions=1,
            replication_factor=settings.replication_factor,
            config={"cleanup.policy": "compact", **durability},
        )
        for stage in stage_names
    ]
    jobs = TopicSpec(
        name=naming.topic(JOBS_TOPIC),
        partitions=1,  # ticks are few and ordered
        replication_factor=settings.replication_factor,
        config={
            "retention.ms": str(JOBS_RETENTION_MS),
            "cleanup.policy": "delete",
            **durability,
        },
    )
    return (
        [topic(name, settings.retention_ms) for name in flow]
        + ladder
        + holds
        + [topic(dead_letter_topic(stage), settings.dlq_retention_ms) for stage in stage_names]
        + [topic(parked_topic(stage), settings.dlq_retention_ms) for stage in stage_names]
        + [jobs]
    )
