"""The sensor feed's stages.

``sensors.readings`` (keyed by device) -> ``screen_readings`` drops readings no sensor
can produce -> ``sensors.valid`` -> ``raise_alerts`` passes every reading on and sends
hot ones to ``sensors.alerts`` under their site -> ``sensors.checked`` ->
``store_readings`` writes them in batches -> ``sensors.stored``; a known-broken device's
readings go to ``store_readings.dlq`` instead.

Every stage identifies a reading by its ``reading_id``: after a crash, a redelivered
reading whose output already exists is not written again (at-least-once).
"""

from __future__ import annotations

from examples.sensors.models import Alert, Reading
from examples.sensors.store import ReadingStore, get_store
from pipeline import Depends, FatalError, Output, Pipeline

LOWEST_CELSIUS = -60.0
HIGHEST_CELSIUS = 200.0
"""Outside this range a reading is a fault of the probe, not a temperature."""
HOT_CELSIUS = 90.0

READINGS = "sensors.readings"
VALID = "sensors.valid"
CHECKED = "sensors.checked"
ALERTS = "sensors.alerts"
STORED = "sensors.stored"


def reading_id(reading: Reading) -> str:
    """A reading's identity, for deduplicating redeliveries."""
    return reading.reading_id


pipeline = Pipeline("sensors", description="Screen, alert on and store sensor readings.")


@pipeline.stage(source=READINGS, sink=VALID, identify=reading_id)
async def screen_readings(reading: Reading) -> Reading | None:
    """Drop readings no sensor can produce (counted as dropped, not dead-lettered)."""
    plausible = LOWEST_CELSIUS <= reading.celsius <= HIGHEST_CELSIUS and reading.site != ""
    return reading if plausible else None


@pipeline.stage(source=VALID, sink=CHECKED, outputs=[ALERTS], identify=reading_id)
async def raise_alerts(reading: Reading) -> list[Output]:
    """Pass every reading on; alert on hot ones, re-keyed by site."""
    outputs = [Output(CHECKED, reading)]
    if reading.celsius > HOT_CELSIUS:
        outputs.append(Output(ALERTS, Alert(**reading.model_dump()), key=reading.site))
    return outputs


@pipeline.stage(source=CHECKED, sink=STORED, identify=reading_id, max_batch_size=200)
async def store_readings(
    readings: list[Reading], store: ReadingStore = Depends(get_store)
) -> list[Reading | Exception]:
    """Store a batch in one write; a known-broken device's readings are dead-lettered."""
    outcomes: list[Reading | Exception] = [
        FatalError(f"device {r.device_id} is known to be broken")
        if r.device_id in store.known_broken
        else r
        for r in readings
    ]
    await store.write_many([r for r in outcomes if isinstance(r, Reading)])
    return outcomes
