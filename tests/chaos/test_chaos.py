"""The short chaos run, in both processing guarantees: kill -9 under full concurrency, a
broker restart, a rebalance and SIGTERM, and still nothing lost, duplicated or
reordered. The long run is `make chaos`."""

from __future__ import annotations

from pathlib import Path

import pytest

from pipeline.chaos import run_chaos
from pipeline.settings import Guarantee, Settings


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_kills_and_rebalances_lose_duplicate_and_reorder_nothing(
    settings: Settings, guarantee: Guarantee, tmp_path: Path
) -> None:
    services = settings.services.model_copy(
        update={"transient_failure_rate": 0.05, "latency_ms": 1.0}
    )
    stage = settings.stage.model_copy(
        update={"retry_delays_s": [0.5, 1.0, 2.0], "processing_guarantee": guarantee}
    )
    settings = settings.model_copy(update={"services": services, "stage": stage})
    result = await run_chaos(
        settings,
        orders=3_000,
        kills=4,
        restart_broker=True,
        seed=7,
        drain_timeout_s=300,
        log_dir=tmp_path,
    )
    summary = result.as_dict()
    assert result.report.lost == 0, summary
    assert result.report.out_of_order == 0, summary
    assert result.report.unknown == 0, summary
    assert len(result.log.kills) == 4, summary
    assert result.log.rebalances == 2, summary
    assert result.log.broker_restarts == 1, summary
    # Every SIGTERM (scale-down and the final stop) ended in a clean, timely exit.
    assert set(result.log.graceful_exits) == {0}, summary
    assert max(result.log.graceful_seconds) < settings.stage.shutdown_drain_timeout_s + 10
    assert result.guarantee == guarantee
    # Exactly-once by transactions; at-least-once by deduplication: no duplicate either way.
    assert result.report.duplicated == 0, summary
    # While the broker was away, no stage's producer asked for metadata in a loop
    # (unpaced, a stage holding outputs logged tens of thousands of these).
    failures = _metadata_failures_per_log(tmp_path)
    assert failures, "the stages' logs were not kept"
    assert max(failures.values()) < 1_000, failures


def _metadata_failures_per_log(logs: Path) -> dict[str, int]:
    return {
        log.name: log.read_text(errors="replace").count("Unable to update metadata")
        for log in logs.iterdir()
    }
