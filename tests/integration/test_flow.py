"""The four-stage flow on a real broker, checked by the verifier the CLI uses."""

from __future__ import annotations

import signal
import subprocess

from pipeline.kafka.admin import group_members
from pipeline.kafka.topology import Naming
from pipeline.settings import Settings
from tests.integration.helpers import (
    drain_and_verify,
    produce_orders,
    running,
    start_stage_process,
)


async def test_two_thousand_orders_flow_through_four_stages_in_order(
    settings: Settings, topics: Naming
) -> None:
    async with running(settings):
        produced = await produce_orders(settings, 2_000)
        report = await drain_and_verify(settings)
    assert report.clean, report.as_dict()
    assert report.events == produced
    assert report.fulfilled + report.dead_lettered == produced
    assert report.dead_lettered == 8  # 4 pairs of invalid records in 2,000 orders
    assert {"fulfilled", "cancelled", "declined", "out_of_stock"} <= set(report.statuses)


async def test_two_validate_processes_share_the_input_as_one_group(
    settings: Settings, topics: Naming
) -> None:
    processes = [start_stage_process(settings, "validate") for _ in range(2)]
    try:
        async with running(settings, ["reserve", "pay", "fulfil"]):
            await produce_orders(settings, 2_000)
            report = await drain_and_verify(settings)
            members = await group_members(settings.kafka, topics.group("validate"))
    finally:
        for process in processes:
            process.send_signal(signal.SIGTERM)
        outputs = [process.communicate(timeout=60)[0].decode() for process in processes]
    assert members == 2, outputs
    assert all(process.returncode == 0 for process in processes), outputs
    assert report.clean, report.as_dict()


def test_pipeline_demo_cli_exits_zero_with_a_clean_verify(settings: Settings) -> None:
    from tests.integration.helpers import PIPELINE_BIN, stage_env

    result = subprocess.run(
        [str(PIPELINE_BIN), "demo", "--orders", "3000"],
        env=stage_env(settings),
        capture_output=True,
        timeout=300,
        check=False,
    )
    assert result.returncode == 0, result.stdout.decode()[-3000:] + result.stderr.decode()[-3000:]
    assert b"lost" in result.stdout
