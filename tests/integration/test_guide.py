"""The guide's pipeline, built from docs/guide.md's code only, in a package outside
``pipeline/``, run with ``pipeline run sensors:pipeline --all`` on the real broker.

Every reading is accounted for once: stored, dropped by the filter, or dead-lettered
with provenance; hot readings raised one alert each, under the site's key; each
device's readings and alerts keep their order. The operating commands take the same
``sensors:pipeline``: ``pipeline verify`` finds it clean (fully, once its stages declare
``identify``), ``pipeline dlq list`` shows the broken devices' dead letters and
``pipeline asyncapi`` documents its topics.
"""

from __future__ import annotations

import asyncio
import json
import re
import signal
import subprocess
from pathlib import Path

import pytest

from pipeline.settings import Settings
from pipeline.verify import read_topic
from tests.integration.helpers import (
    PIPELINE_BIN,
    assert_in_seq_order_per_device,
    pipeline_command,
    stage_env,
)

GUIDE = Path(__file__).parents[2] / "docs" / "guide.md"
DEVICES = [f"dev-{n}" for n in range(12)] + ["broken-1", "broken-2"]
READINGS_PER_DEVICE = 40


IDENTIFY = 'identify=lambda r: f"{r.device_id}/{r.seq}", '
"""What the guide's stages declare to be verified for loss too."""


def guide_module(directory: Path, *, identified: bool = False) -> Path:
    """Write the guide's ``sensors.py`` block to ``directory`` (``identified``: each
    stage naming its readings by device and sequence)."""
    [code] = re.findall(r"```python sensors\.py\n(.*?)```", GUIDE.read_text(), re.DOTALL)
    if identified:
        code = code.replace("@pipeline.stage(", f"@pipeline.stage({IDENTIFY}")
    path = directory / "sensors.py"
    path.write_text(code)
    return path


def celsius(device: str, seq: int) -> float:
    """Every 7th reading impossible (dropped), every 5th hot (alerted)."""
    if seq % 7 == 3:
        return 999.0
    return 95.0 if seq % 5 == 0 else 20.0 + (hash(device) % 10)


async def produce_readings(directory: Path, env: dict[str, str]) -> list[dict[str, object]]:
    """The readings, written as the guide says: a JSON-lines file and ``pipeline produce
    sensors:pipeline --input``."""
    readings = [
        {"device_id": d, "site": f"site-{i % 3}", "celsius": celsius(d, s), "seq": s}
        for s in range(READINGS_PER_DEVICE)
        for i, d in enumerate(DEVICES)
    ]
    lines = (json.dumps({"key": r["device_id"], "value": r}) + "\n" for r in readings)
    (directory / "readings.jsonl").write_text("".join(lines))
    code, out = await pipeline_command(
        directory, env, "produce", "sensors:pipeline", "--input", "readings.jsonl"
    )
    assert code == 0, out
    assert f"produced {len(readings)} records to readings.raw" in out
    return readings


async def until_counts(settings: Settings, wanted: dict[str, int], timeout_s: float = 120) -> None:
    """Wait until each topic holds at least ``wanted`` records."""
    async with asyncio.timeout(timeout_s):
        while True:
            counts = {t: len(await read_topic(settings.kafka, t)) for t in wanted}
            if all(counts[t] >= n for t, n in wanted.items()):
                return
            await asyncio.sleep(0.5)


@pytest.mark.parametrize("identified", [False, True], ids=["as-written", "identified"])
async def test_the_guides_pipeline_runs_from_its_own_package(
    settings: Settings, tmp_path: Path, identified: bool
) -> None:
    guide_module(tmp_path, identified=identified)
    env = {**stage_env(settings), "PYTHONPATH": ""}
    code, out = await pipeline_command(tmp_path, env, "topics", "apply", "sensors:pipeline")
    assert code == 0, out
    prefix = settings.topics.prefix
    process = await asyncio.create_subprocess_exec(
        str(PIPELINE_BIN),
        "run",
        "sensors:pipeline",
        "--all",
        cwd=tmp_path,
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
    )
    try:
        readings = await produce_readings(tmp_path, env)
        valid = [r for r in readings if -50 <= float(r["celsius"]) <= 150]  # type: ignore[arg-type]
        broken = [r for r in valid if str(r["device_id"]).startswith("broken")]
        hot = [r for r in valid if float(r["celsius"]) > 90]  # type: ignore[arg-type]
        await until_counts(
            settings,
            {
                f"{prefix}readings.stored": len(valid) - len(broken),
                f"{prefix}store.dlq": len(broken),
                f"{prefix}alerts": len(hot),
            },
        )
    finally:
        process.send_signal(signal.SIGTERM)
        output, _ = await asyncio.wait_for(process.communicate(), 60)
    assert process.returncode == 0, output.decode()[-3000:]
    # the workload has something for every path
    assert len(readings) > len(valid) > len(hot) > 0
    assert broken

    stored = await read_topic(settings.kafka, f"{prefix}readings.stored")
    dead = await read_topic(settings.kafka, f"{prefix}store.dlq")
    alerts = await read_topic(settings.kafka, f"{prefix}alerts")
    checked = await read_topic(settings.kafka, f"{prefix}readings.checked")
    for stage in ("clean", "check"):  # dropped readings are not dead letters
        assert await read_topic(settings.kafka, f"{prefix}{stage}.dlq") == []

    def ids(records: list) -> list[tuple[str, int]]:  # type: ignore[type-arg]
        return [(json.loads(r.value)["device_id"], json.loads(r.value)["seq"]) for r in records]

    # every valid reading is stored or dead-lettered exactly once; dropped ones nowhere
    assert sorted(ids(stored) + ids(dead)) == sorted(
        (str(r["device_id"]), int(r["seq"]))
        for r in valid  # type: ignore[call-overload]
    )
    assert len(ids(checked)) == len(set(ids(checked))) == len(valid)
    # the dead letters say where they came from and why
    for record in dead:
        headers = dict(record.headers)
        assert headers["pipeline.origin.topic"] == f"{prefix}readings.checked".encode()
        assert headers["pipeline.stage"] == b"store"
        assert b"known to be broken" in headers["pipeline.error.message"]
    # alerts: one per hot reading, keyed by site
    assert len(alerts) == len(hot)
    assert all(r.key.decode() == json.loads(r.value)["site"] for r in alerts)
    # per-key order: each device's stored readings and alerts in seq order
    for records in (stored, alerts):
        assert_in_seq_order_per_device(records)

    # the operating commands, on the same pipeline
    code, out = await pipeline_command(
        tmp_path, env, "verify", "sensors:pipeline", "--drain", "60", "--json"
    )
    verified = json.loads(out)
    assert code == 0, out
    assert verified["clean"] is True
    assert verified["events"] == len(readings)
    assert verified["delivered"] == len(stored) + len(alerts)
    assert verified["dead_lettered"] == len(broken)
    assert verified["duplicated"] == verified["out_of_order"] == verified["lost"] == 0
    stages = {stage["stage"]: stage for stage in verified["stages"]}
    assert stages["check"]["outputs"] == len(valid) + len(hot)
    if identified:
        assert verified["loss_verified"] is True
        assert verified["unverified"] == []
        assert stages["clean"]["dropped"] == len(readings) - len(valid)
        assert stages["check"]["passed"] == len(valid)
        assert stages["store"]["passed"] == len(valid) - len(broken)
        assert stages["store"]["dropped"] == 0  # a batch outcome is never None
    else:
        assert verified["loss_verified"] is False
        assert verified["unverified"] == ["clean", "check", "store"]
        assert all("declares no identify" in note for note in verified["notes"])

    code, out = await pipeline_command(tmp_path, env, "dlq", "list", "sensors:pipeline", "--json")
    letters = json.loads(out)
    assert code == 0, out
    assert sorted((letter["key"], letter["stage"]) for letter in letters) == sorted(
        (str(r["device_id"]), "store") for r in broken
    )
    assert all(letter["error_type"] == "FatalError" for letter in letters)
    code, out = await pipeline_command(
        tmp_path, env, "dlq", "list", "sensors:pipeline", "--stage", "validate"
    )
    assert code == 2  # the checkout's stage is no stage of this pipeline
    assert "unknown stage(s) ['validate'] of sensors" in out

    code, out = await pipeline_command(tmp_path, env, "asyncapi", "sensors:pipeline")
    document = json.loads(out)
    assert code == 0, out
    assert document["info"]["title"] == "sensors"
    addresses = {channel["address"] for channel in document["channels"].values()}
    for topic in ("readings.raw", "readings.clean", "readings.checked", "readings.stored"):
        assert f"{prefix}{topic}" in addresses
    assert {f"{prefix}alerts", f"{prefix}store.dlq", f"{prefix}clean.retry.1"} <= addresses
    assert "Reading" in document["components"]["schemas"]
