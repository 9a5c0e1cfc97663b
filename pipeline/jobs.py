"""Periodic jobs: re-drive dead letters of transient faults, and reconcile the topics.

* :func:`redrive_dead_letters` replays (with :func:`~pipeline.failures.dead_letters.
  replay`, so each dead letter at most once) the dead letters whose error type is
  listed as re-drivable — faults that heal by themselves, like an unavailable payment
  gateway. An event whose replays keep failing is held back after
  ``redrive_max_per_event`` replays and left to an operator.
* :func:`reconcile` runs :func:`pipeline.verify.verify` and exports its counts as
  Prometheus gauges. The verifier counts an event still travelling through the stages
  as lost, so under constant traffic ``pipeline_reconciliation_lost`` is the backlog
  plus what is really lost: alert on it staying above the expected backlog, and read
  ``duplicated`` and ``out_of_order``, which in-flight events do not inflate, as is.

Both are idempotent: running one twice, or concurrently with the stages, is harmless.
:mod:`pipeline.schedule` runs them on a timetable.
"""

from __future__ import annotations

import logging
import time
from collections import Counter as Tally
from collections.abc import Callable
from dataclasses import dataclass, field

import orjson
from prometheus_client import CollectorRegistry, Counter, Gauge

from pipeline.failures.dead_letters import (
    REPLAYED,
    DeadLetter,
    DeadLetterFilter,
    list_dead_letters,
    replay,
)
from pipeline.kafka.topology import Naming
from pipeline.settings import ScheduleSettings, Settings
from pipeline.verify import VerifyReport, verify

log = logging.getLogger(__name__)


class JobMetrics:
    """What the jobs export; labels are job names, outcomes and stage names only."""

    def __init__(self, registry: CollectorRegistry) -> None:
        self.registry = registry
        self.lost = Gauge(
            "pipeline_reconciliation_lost",
            "Input events neither fulfilled nor dead-lettered at the last reconciliation "
            "(events still in flight included).",
            registry=registry,
        )
        self.duplicated = Gauge(
            "pipeline_reconciliation_duplicated",
            "Extra copies of input events among the outputs at the last reconciliation.",
            registry=registry,
        )
        self.out_of_order = Gauge(
            "pipeline_reconciliation_out_of_order",
            "Fulfilled events of an order whose sequence went backwards.",
            registry=registry,
        )
        self.last_run = Gauge(
            "pipeline_reconciliation_last_run_timestamp_seconds",
            "When the last reconciliation finished (Unix time).",
            registry=registry,
        )
        self.runs = Counter(
            "pipeline_job_runs",
            "Job runs by outcome: ok, failed, or expired (a tick that waited too long).",
            ["job", "outcome"],
            registry=registry,
        )
        self.redriven = Counter(
            "pipeline_dead_letters_redriven",
            "Dead letters replayed by the re-drive job.",
            ["stage"],
            registry=registry,
        )


@dataclass(slots=True)
class RedriveResult:
    """What one re-drive run did."""

    replayed: list[DeadLetter] = field(default_factory=list)
    not_redrivable: int = 0
    """Waiting dead letters whose error type is not listed as re-drivable."""
    held_back: int = 0
    """Re-drivable ones whose event was replayed ``redrive_max_per_event`` times already."""


def event_identity(letter: DeadLetter) -> str:
    """The event a dead letter stands for: its event id, else its position."""
    try:
        body = orjson.loads(letter.value)
        event = body.get("event", body)
        return f"{letter.stage}/{event['event_id']}"
    except (orjson.JSONDecodeError, AttributeError, KeyError, TypeError):
        return f"{letter.stage}@{letter.position}"


def choose_redrives(
    letters: list[DeadLetter], redrivable: set[str], max_per_event: int
) -> RedriveResult:
    """Which waiting dead letters to replay now (pure; ``letters`` include handled ones)."""
    replays = Tally(event_identity(letter) for letter in letters if letter.action == REPLAYED)
    result = RedriveResult()
    for letter in letters:
        if letter.action is not None:
            continue
        if letter.error_type not in redrivable:
            result.not_redrivable += 1
        elif replays[event_identity(letter)] >= max_per_event:
            result.held_back += 1
        else:
            result.replayed.append(letter)
    return result


async def redrive_dead_letters(
    settings: Settings, schedule: ScheduleSettings, metrics: JobMetrics | None = None
) -> RedriveResult:
    """Replay every waiting dead letter of a re-drivable error type, once."""
    naming = Naming.of(settings.topics)
    letters = await list_dead_letters(
        settings.kafka, naming, DeadLetterFilter(include_handled=True)
    )
    chosen = choose_redrives(
        letters, set(schedule.redrivable_errors), schedule.redrive_max_per_event
    )
    chosen.replayed = await replay(settings.kafka, naming, chosen.replayed)
    for letter in chosen.replayed:
        if metrics is not None:
            metrics.redriven.labels(letter.stage).inc()
    if chosen.replayed or chosen.held_back:
        log.info(
            "re-drove %d dead letters; %d held back after %d replays; %d not re-drivable",
            len(chosen.replayed),
            chosen.held_back,
            schedule.redrive_max_per_event,
            chosen.not_redrivable,
        )
    return chosen


async def reconcile(
    settings: Settings, metrics: JobMetrics, clock: Callable[[], float] = time.time
) -> VerifyReport:
    """Run the verifier over the topics and publish its counts as gauges."""
    report = await verify(settings.kafka, Naming.of(settings.topics))
    metrics.lost.set(report.lost)
    metrics.duplicated.set(report.duplicated)
    metrics.out_of_order.set(report.out_of_order)
    metrics.last_run.set(clock())
    if report.duplicated or report.out_of_order or report.unknown:  # in-flight can't cause these
        log.warning("reconciliation found problems: %s", report.as_dict())
    return report
