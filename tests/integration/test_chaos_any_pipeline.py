"""``pipeline chaos MODULE:ATTR --input FILE``: a user's pipeline (the sensor example)
under kill -9 and a scale-up and -down of one stage, on its own input file, checked by
the verifier derived from its stages — every reading accounted for once, in order."""

from __future__ import annotations

import json
from pathlib import Path

from pipeline.settings import Settings
from tests.integration.helpers import pipeline_command, stage_env
from tests.integration.test_sensors_example import PIPELINE_PATH, ROOT, workload


async def test_chaos_runs_a_users_pipeline_on_its_input_file(
    settings: Settings, tmp_path: Path
) -> None:
    readings = workload()
    input_file = tmp_path / "readings.jsonl"
    input_file.write_text(
        "".join(json.dumps({"key": r["device_id"], "value": r}) + "\n" for r in readings.readings)
    )
    env = stage_env(settings, PYTHONPATH="")

    code, out = await pipeline_command(
        ROOT,
        env,
        "chaos",
        PIPELINE_PATH,
        "--input",
        str(input_file),
        "--kills",
        "3",
        "--no-restart-broker",
        "--guarantee",
        "exactly_once",
        "--seed",
        "5",
        "--json",
    )

    assert code == 0, out
    result = json.loads(out.strip().splitlines()[-1])
    assert result["pipeline"] == "sensors"
    assert result["clean"], result
    assert result["loss_verified"], result
    assert result["events"] == len(readings.readings)
    assert result["dropped"] == len(readings.malformed)
    assert result["dead_lettered"] == len(readings.broken)
    assert (result["lost"], result["duplicated"], result["out_of_order"]) == (0, 0, 0)
    assert len(result["actions"]["kills"]) == 3
    assert result["actions"]["rebalances"] == 2
    assert set(result["actions"]["graceful_exits"]) == {0}


async def test_an_input_line_that_is_not_a_record_stops_chaos_before_anything_runs(
    settings: Settings, tmp_path: Path
) -> None:
    input_file = tmp_path / "readings.jsonl"
    input_file.write_text('{"key": "probe-1", "value": {}}\n["not", "a", "record"]\n')

    code, out = await pipeline_command(
        ROOT, stage_env(settings, PYTHONPATH=""), "chaos", PIPELINE_PATH, "--input", str(input_file)
    )

    assert code == 2
    assert f"{input_file}:2" in out
