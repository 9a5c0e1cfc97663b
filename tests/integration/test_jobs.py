"""The scheduled jobs on a real broker, run through the scheduler and its Kafka ticks:
the re-drive job brings a fixed fault's dead letters through once, and the
reconciliation job exports what the verifier finds."""

from __future__ import annotations

import asyncio
import inspect
import time
from collections.abc import Awaitable, Callable

from prometheus_client import CollectorRegistry

from pipeline.failures.dead_letters import DeadLetterFilter, list_dead_letters
from pipeline.kafka.admin import apply_topics
from pipeline.kafka.internals import faststream_producer, paced
from pipeline.kafka.topology import Naming, pipeline_topics
from pipeline.schedule import Job, create_schedule, running_schedule
from pipeline.settings import ScheduleSettings, Settings
from pipeline.stages.services import Services, simulated_services
from pipeline.workload import invalid_records
from tests.integration.helpers import drain_and_verify, produce, produce_orders, running
from tests.integration.test_retry_ladder import BrokenPayment

RARELY = 3_600  # an interval that fires once, at start, within a test


async def until(condition: Callable[[], bool | Awaitable[bool]], timeout_s: float = 120) -> None:
    """Poll ``condition`` (plain or async) until it holds or the deadline passes."""
    deadline = time.monotonic() + timeout_s
    while True:
        holds = condition()
        if inspect.isawaitable(holds):
            holds = await holds
        if holds:
            return
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.1)  # polling a condition with a deadline


def _redriven(registry: CollectorRegistry, stage: str = "pay") -> float:
    value = registry.get_sample_value("pipeline_dead_letters_redriven_total", {"stage": stage})
    return value or 0.0


def _runs(registry: CollectorRegistry, job: Job, outcome: str = "ok") -> float:
    value = registry.get_sample_value(
        "pipeline_job_runs_total", {"job": job.value, "outcome": outcome}
    )
    return value or 0.0


async def _short_ladder(settings: Settings) -> Settings:
    """One quick retry rung and one in-process attempt, so faults dead-letter fast."""
    stage = settings.stage.model_copy(update={"retry_delays_s": [0.1], "in_process_attempts": 1})
    topology = settings.topics.model_copy(update={"retry_levels": 1})
    settings = settings.model_copy(update={"stage": stage, "topics": topology})
    await apply_topics(settings.kafka, pipeline_topics(settings.topics))
    return settings


def _payment_down(settings: Settings) -> Services:
    return Services(
        inventory=simulated_services(settings.services).inventory,
        payment=BrokenPayment(settings.services, broken="*"),
    )


async def test_redrive_brings_a_fixed_faults_dead_letters_through_once(
    settings: Settings, topics: Naming
) -> None:
    settings = await _short_ladder(settings)
    async with running(settings, services=_payment_down(settings)):
        await produce_orders(settings, 20, invalid_every=0)
        await produce(settings, invalid_records("ord-garbage"))  # never re-drivable
        before = await drain_and_verify(settings)
    assert before.clean, before.as_dict()
    unavailable = before.dead_letter_reasons["pay: ServiceUnavailable"]
    assert unavailable > 0
    assert before.dead_lettered > unavailable

    registry = CollectorRegistry()
    jobs = ScheduleSettings(redrive_interval_s=1, reconcile_interval_s=RARELY)
    schedule = create_schedule(settings, jobs, registry)
    async with running(settings), running_schedule(settings, schedule):  # the gateway is back
        assert paced(faststream_producer(schedule.broker))  # ticks wait out an outage
        # Two runs at least: the second finds the first's dead letters handled.
        await until(lambda: _runs(registry, Job.REDRIVE_DEAD_LETTERS) >= 2)
        after = await drain_and_verify(settings)

    assert after.clean, after.as_dict()
    assert after.replayed == unavailable
    assert after.dead_lettered == before.dead_lettered - unavailable
    assert _redriven(registry) == unavailable
    letters = await list_dead_letters(
        settings.kafka, topics, DeadLetterFilter(include_handled=True)
    )
    pay = [letter for letter in letters if letter.stage == "pay"]
    assert len(pay) == unavailable
    assert all(letter.action == "replayed" for letter in pay)
    waiting = [letter for letter in letters if letter.action is None]
    assert {letter.stage for letter in waiting} == {"validate"}  # the garbage stays put


async def test_redrive_leaves_an_event_alone_after_its_replays_keep_failing(
    settings: Settings, topics: Naming
) -> None:
    settings = await _short_ladder(settings)
    registry = CollectorRegistry()
    jobs = ScheduleSettings(
        redrive_interval_s=1, redrive_max_per_event=1, reconcile_interval_s=RARELY
    )
    schedule = create_schedule(settings, jobs, registry)
    async with running(settings, services=_payment_down(settings)):
        await produce_orders(settings, 3, invalid_every=0)
        before = await drain_and_verify(settings)
        dead = before.dead_letter_reasons["pay: ServiceUnavailable"]

        async def failed_again() -> bool:
            letters = await list_dead_letters(
                settings.kafka, topics, DeadLetterFilter(stages=("pay",), include_handled=True)
            )
            return len(letters) == 2 * dead

        async with running_schedule(settings, schedule):  # the gateway is still down
            await until(lambda: _redriven(registry) == dead)
            await until(failed_again, timeout_s=60)  # each replay failed, dead-lettered anew
            ran = _runs(registry, Job.REDRIVE_DEAD_LETTERS)
            await until(lambda: _runs(registry, Job.REDRIVE_DEAD_LETTERS) >= ran + 2)
            after = await drain_and_verify(settings)
    letters = await list_dead_letters(
        settings.kafka, topics, DeadLetterFilter(stages=("pay",), include_handled=True)
    )
    assert _redriven(registry) == dead  # each event replayed once, then held back
    assert sum(letter.action == "replayed" for letter in letters) == dead
    assert sum(letter.action is None for letter in letters) == dead  # left to an operator
    assert after.clean, after.as_dict()
    assert after.replayed == dead


async def test_reconciliation_job_exports_what_the_verifier_finds(
    settings: Settings, topics: Naming
) -> None:
    registry = CollectorRegistry()
    jobs = ScheduleSettings(reconcile_interval_s=1, redrive_interval_s=RARELY)
    schedule = create_schedule(settings, jobs, registry)

    def gauge(name: str) -> float:
        return registry.get_sample_value(f"pipeline_reconciliation_{name}") or 0.0

    produced = await produce_orders(settings, 5, invalid_every=0)  # no stage runs yet
    started = time.time()
    async with running_schedule(settings, schedule):
        await until(lambda: gauge("last_run_timestamp_seconds") >= started)
        unprocessed = gauge("lost")
        async with running(settings):
            report = await drain_and_verify(settings)
            ran = _runs(registry, Job.RECONCILE)
            await until(lambda: _runs(registry, Job.RECONCILE) > ran)  # a run after the drain
    assert unprocessed == produced  # nothing had left the pipeline yet
    assert report.clean, report.as_dict()
    assert gauge("lost") == gauge("duplicated") == gauge("out_of_order") == 0
    assert started <= gauge("last_run_timestamp_seconds") <= time.time()
