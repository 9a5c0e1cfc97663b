"""Runs the periodic jobs of :mod:`pipeline.jobs` with taskiq-faststream.

taskiq-faststream's :class:`StreamScheduler` does one thing: on a timetable it
publishes a message through a FastStream broker. Here that message is a
:class:`JobTick` on the ``pipeline.jobs`` topic, and a FastStream subscriber of the
same broker (consumer group ``pipeline-jobs``) runs the job the tick names. So

* the timetable lives in one scheduler, the work in whichever job runner the group
  hands the partition to — running ``pipeline schedule`` twice runs each job once per
  tick per scheduler, never once per process;
* a tick that waited longer than its job's interval (the runner was down) is dropped
  as expired instead of piling up runs;
* job runs get FastStream's logging and Prometheus middleware like any handler.

The ``pipeline.jobs`` topic is created here at start (one partition, a day of
retention) until it is folded into :func:`pipeline.kafka.topology.pipeline_topics`.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import signal
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from enum import StrEnum
from typing import Any

from faststream import AckPolicy
from faststream.kafka import KafkaBroker
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from prometheus_client import CollectorRegistry, start_http_server
from pydantic import BaseModel
from taskiq.cli.scheduler.run import SchedulerLoop
from taskiq.schedule_sources import LabelScheduleSource
from taskiq_faststream import BrokerWrapper, StreamScheduler

from pipeline.jobs import JobMetrics, reconcile, redrive_dead_letters
from pipeline.kafka.admin import apply_topics
from pipeline.kafka.connection import broker_security
from pipeline.kafka.internals import faststream_producer, pace_metadata_updates
from pipeline.kafka.topology import JOBS_TOPIC, Naming, TopicSpec, pipeline_topics
from pipeline.settings import ScheduleSettings, Settings

log = logging.getLogger(__name__)


class Job(StrEnum):
    """The jobs the scheduler knows."""

    REDRIVE_DEAD_LETTERS = "redrive_dead_letters"
    RECONCILE = "reconcile"


class JobTick(BaseModel):
    """One scheduled run of a job."""

    job: Job
    scheduled_at: datetime
    expires_at: datetime


def jobs_topic(settings: Settings) -> TopicSpec:
    """The topic the ticks travel on, as the topology defines it."""
    wanted = Naming.of(settings.topics).topic(JOBS_TOPIC)
    return next(spec for spec in pipeline_topics(settings.topics) if spec.name == wanted)


@dataclass(slots=True)
class Schedule:
    """A scheduler and the job runner subscribed to its ticks, on one broker."""

    broker: KafkaBroker
    scheduler: StreamScheduler
    metrics: JobMetrics
    topic: TopicSpec


def create_schedule(
    settings: Settings,
    schedule: ScheduleSettings,
    registry: CollectorRegistry | None = None,
) -> Schedule:
    """The jobs' timetable and runner for ``settings``' cluster and namespace."""
    registry = registry or CollectorRegistry()
    metrics = JobMetrics(registry)
    naming = Naming.of(settings.topics)
    topic = jobs_topic(settings)
    broker = KafkaBroker(
        settings.kafka.bootstrap_hosts,
        security=broker_security(settings.kafka),
        client_id=f"{settings.kafka.client_id_prefix}-jobs",
        request_timeout_ms=settings.kafka.request_timeout_ms,
        middlewares=[KafkaPrometheusMiddleware(registry=registry, app_name="order-pipeline-jobs")],
    )
    jobs: dict[Job, Callable[[], Awaitable[Any]]] = {
        Job.REDRIVE_DEAD_LETTERS: lambda: redrive_dead_letters(settings, schedule, metrics),
        Job.RECONCILE: lambda: reconcile(settings, metrics),
    }

    @broker.subscriber(
        topic.name,
        group_id=naming.group(schedule.group),
        auto_offset_reset="earliest",
        # Committed after the run: a runner that dies mid-job runs the tick again on
        # restart (if not expired); both jobs are idempotent.
        ack_policy=AckPolicy.ACK,
        title=f"{topic.name}:run",
        description="Runs the job a scheduler tick names.",
    )
    async def run_job(tick: JobTick) -> None:
        if datetime.now(UTC) > tick.expires_at:
            metrics.runs.labels(tick.job, "expired").inc()
            log.info("dropped an expired %s tick of %s", tick.job, tick.scheduled_at)
            return
        try:
            await jobs[tick.job]()
        except Exception:
            metrics.runs.labels(tick.job, "failed").inc()
            raise  # FastStream logs it and counts it in its own metrics
        metrics.runs.labels(tick.job, "ok").inc()

    wrapper = BrokerWrapper(broker)
    intervals = {
        Job.REDRIVE_DEAD_LETTERS: schedule.redrive_interval_s,
        Job.RECONCILE: schedule.reconcile_interval_s,
    }
    for job, interval_s in intervals.items():
        wrapper.task(
            message=_ticker(job, interval_s),
            # taskiq 0.12 schedules by interval; taskiq-faststream's TypedDict predates it.
            schedule=[{"interval": interval_s}],  # type: ignore[typeddict-unknown-key]
            task_name=f"pipeline.{job}",
            topic=topic.name,
            key=job.value.encode(),
        )
    scheduler = StreamScheduler(broker=wrapper, sources=[LabelScheduleSource(wrapper)])
    return Schedule(broker=broker, scheduler=scheduler, metrics=metrics, topic=topic)


def _ticker(job: Job, interval_s: int) -> Callable[[], JobTick]:
    """A fresh tick each time the scheduler fires (taskiq-faststream calls it)."""

    def tick() -> JobTick:
        now = datetime.now(UTC)
        return JobTick(job=job, scheduled_at=now, expires_at=now + timedelta(seconds=interval_s))

    return tick


@asynccontextmanager
async def running_schedule(settings: Settings, schedule: Schedule) -> AsyncIterator[Schedule]:
    """The ticks topic ensured, the runner consuming and the timetable ticking; all
    stopped on exit."""
    await apply_topics(settings.kafka, [schedule.topic])
    scheduler = schedule.scheduler
    for source in scheduler.sources:
        await source.startup()
    await scheduler.startup()  # starts the broker: the runner subscribes, ticks can go
    pace_metadata_updates(faststream_producer(schedule.broker))  # an outage must not spin
    loop = asyncio.create_task(SchedulerLoop(scheduler).run(loop_interval=timedelta(seconds=1)))
    try:
        yield schedule
    finally:
        loop.cancel()
        with contextlib.suppress(asyncio.CancelledError):
            await loop
        await scheduler.shutdown()
        for source in scheduler.sources:
            await source.shutdown()


async def serve(settings: Settings, jobs: ScheduleSettings) -> int:
    """Run the scheduler and job runner until SIGTERM or SIGINT, with ``/metrics``."""
    registry = CollectorRegistry()
    server, _thread = start_http_server(jobs.metrics_port, jobs.metrics_host, registry=registry)
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    try:
        async with running_schedule(settings, create_schedule(settings, jobs, registry)):
            log.info(
                "jobs scheduled: re-drive every %ds, reconcile every %ds; metrics on %s:%d",
                jobs.redrive_interval_s,
                jobs.reconcile_interval_s,
                jobs.metrics_host,
                jobs.metrics_port,
            )
            await stop.wait()
    finally:
        server.shutdown()
    return 0
