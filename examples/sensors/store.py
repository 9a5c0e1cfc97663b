"""Where stored readings go: a bulk-writing store, and the devices it refuses."""

from __future__ import annotations

from examples.sensors.models import Reading

KNOWN_BROKEN = frozenset({"boiler-7", "roof-3"})
"""Devices whose readings are wrong by construction (a failed probe): never stored."""


class ReadingStore:
    """A store written in one round trip per batch; in memory here, a database table in
    a deployment (return it from :func:`get_store` instead)."""

    def __init__(self, known_broken: frozenset[str] = KNOWN_BROKEN) -> None:
        self.known_broken = known_broken
        self.rows: dict[str, Reading] = {}

    async def write_many(self, readings: list[Reading]) -> None:
        """Upsert ``readings`` by ``reading_id``: a rewrite after a redelivery is harmless."""
        self.rows.update((reading.reading_id, reading) for reading in readings)


_STORE = ReadingStore()


def get_store() -> ReadingStore:
    """The process's store; tests replace it with ``pipeline.handler(stage, {get_store: ...})``."""
    return _STORE
