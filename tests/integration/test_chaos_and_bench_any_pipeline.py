"""``pipeline chaos|bench MODULE:ATTR --input FILE``: a user's pipeline (the sensor
example) on its own input file — under kill -9 and a scale-up and -down of one stage,
checked by the verifier derived from its stages (every reading accounted for once, in
order); and drained from a backlog, one process per stage, measured and verified."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from examples.sensors import flow
from pipeline.settings import Settings
from tests.integration.helpers import pipeline_command, stage_env
from tests.integration.test_sensors_example import PIPELINE_PATH, ROOT, Workload, workload


def input_file(directory: Path, readings: Workload) -> Path:
    path = directory / "readings.jsonl"
    lines = (json.dumps({"key": r["device_id"], "value": r}) + "\n" for r in readings.readings)
    path.write_text("".join(lines))
    return path


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_chaos_runs_a_users_pipeline_on_its_input_file(
    settings: Settings, tmp_path: Path, guarantee: str
) -> None:
    readings = workload()
    env = stage_env(settings, PYTHONPATH="")

    code, out = await pipeline_command(
        ROOT,
        env,
        "chaos",
        PIPELINE_PATH,
        "--input",
        str(input_file(tmp_path, readings)),
        "--kills",
        "3",
        "--no-restart-broker",
        "--guarantee",
        guarantee,
        "--seed",
        "5",
        "--json",
    )

    assert code == 0, out  # nothing lost or reordered (exactly-once: nor duplicated)
    result = json.loads(out.strip().splitlines()[-1])
    assert result["pipeline"] == "sensors"
    assert result["loss_verified"], result
    assert result["events"] == len(readings.readings)
    assert (result["lost"], result["out_of_order"], result["unknown"]) == (0, 0, 0)
    if guarantee == "exactly_once":
        assert result["clean"], result
        assert result["duplicated"] == 0
        assert result["dropped"] == len(readings.malformed)
        assert result["dead_lettered"] == len(readings.broken)
    assert len(result["actions"]["kills"]) == 3
    assert result["actions"]["rebalances"] == 2
    assert set(result["actions"]["graceful_exits"]) == {0}


async def test_bench_drains_a_users_pipeline_from_its_input_file(
    settings: Settings, tmp_path: Path
) -> None:
    readings = workload()

    code, out = await pipeline_command(
        ROOT,
        stage_env(settings, PYTHONPATH=""),
        "bench",
        PIPELINE_PATH,
        "--input",
        str(input_file(tmp_path, readings)),
        "--json",
        str(tmp_path / "bench.json"),
    )

    assert code == 0, out
    result = json.loads((tmp_path / "bench.json").read_text())
    assert result["clean"], result
    assert result["events"] == len(readings.readings)
    assert set(result["cpu_s_per_stage"]) == set(flow.pipeline.stages)
    assert all(cpu > 0 for cpu in result["cpu_s_per_stage"].values())
    assert all(rss > 0 for rss in result["rss_mb_per_stage"].values())
    drain_eps = len(readings.readings) / result["drain_s"]
    assert result["drain_eps"] == pytest.approx(drain_eps, rel=1e-3)


async def test_an_input_line_that_is_not_a_record_stops_chaos_before_anything_runs(
    settings: Settings, tmp_path: Path
) -> None:
    bad_file = tmp_path / "readings.jsonl"
    bad_file.write_text('{"key": "probe-1", "value": {}}\n["not", "a", "record"]\n')

    code, out = await pipeline_command(
        ROOT, stage_env(settings, PYTHONPATH=""), "chaos", PIPELINE_PATH, "--input", str(bad_file)
    )

    assert code == 2
    assert f"{bad_file}:2" in out
