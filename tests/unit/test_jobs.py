"""Which dead letters the re-drive job picks, and how the job runner treats ticks."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import orjson
from faststream.kafka import TestKafkaBroker

from pipeline.failures.dead_letters import REPLAYED, DeadLetter
from pipeline.jobs import ScheduleSettings, choose_redrives, event_identity
from pipeline.schedule import Job, JobTick, create_schedule
from pipeline.settings import Settings


def _letter(offset: int, error: str, event_id: str | None, action: str | None = None) -> DeadLetter:
    value = orjson.dumps({"event": {"event_id": event_id}}) if event_id else b"\x00junk"
    return DeadLetter(
        stage="pay",
        partition=0,
        offset=offset,
        key=b"ord-1",
        value=value,
        timestamp_ms=0,
        headers={"pipeline.error.type": f"pipeline.errors.{error}"},
        raw_headers=[],
        action=action,
    )


def test_only_waiting_dead_letters_of_redrivable_types_are_chosen() -> None:
    letters = [
        _letter(0, "ServiceUnavailable", "e1"),
        _letter(1, "UndecodableRecord", None),
        _letter(2, "ServiceUnavailable", "e2", action="discarded"),
        _letter(3, "TimeoutError", "e3"),
    ]
    chosen = choose_redrives(letters, {"ServiceUnavailable", "TimeoutError"}, max_per_event=3)
    assert [letter.offset for letter in chosen.replayed] == [0, 3]
    assert chosen.not_redrivable == 1
    assert chosen.held_back == 0


def test_an_event_replayed_max_times_is_held_back() -> None:
    letters = [
        _letter(0, "ServiceUnavailable", "e1", action=REPLAYED),
        _letter(1, "ServiceUnavailable", "e1", action=REPLAYED),
        _letter(2, "ServiceUnavailable", "e1"),  # failed again after two replays
        _letter(3, "ServiceUnavailable", "e2", action=REPLAYED),
        _letter(4, "ServiceUnavailable", "e2"),
    ]
    chosen = choose_redrives(letters, {"ServiceUnavailable"}, max_per_event=2)
    assert [letter.offset for letter in chosen.replayed] == [4]
    assert chosen.held_back == 1


def test_an_undecodable_dead_letter_is_identified_by_its_position() -> None:
    assert event_identity(_letter(7, "UndecodableRecord", None)) == "pay@0/7"
    assert event_identity(_letter(7, "ServiceUnavailable", "e9")) == "pay/e9"


def test_the_redrivable_error_types_default_to_transient_faults() -> None:
    assert ScheduleSettings().redrivable_errors == ["ServiceUnavailable", "TimeoutError"]


async def test_an_expired_tick_is_dropped_without_running_its_job() -> None:
    schedule = create_schedule(Settings(), ScheduleSettings())
    past = datetime.now(UTC) - timedelta(hours=1)
    tick = JobTick(job=Job.RECONCILE, scheduled_at=past, expires_at=past + timedelta(minutes=5))
    async with TestKafkaBroker(schedule.broker) as broker:
        await broker.publish(tick, schedule.topic.name)
    registry = schedule.metrics.registry
    labels = {"job": "reconcile", "outcome": "expired"}
    assert registry.get_sample_value("pipeline_job_runs_total", labels) == 1.0
    assert registry.get_sample_value("pipeline_reconciliation_last_run_timestamp_seconds") == 0


def test_each_job_has_its_own_interval_schedule() -> None:
    jobs = ScheduleSettings(redrive_interval_s=60, reconcile_interval_s=600)
    tasks = create_schedule(Settings(), jobs).scheduler.broker.get_all_tasks()
    schedules = {name: task.labels["schedule"] for name, task in tasks.items()}
    assert schedules == {
        "pipeline.redrive_dead_letters": [{"interval": 60}],
        "pipeline.reconcile": [{"interval": 600}],
    }
