"""Bad input lands in the stage's dead-letter topic with its reason; the rest flows on."""

from __future__ import annotations

from pipeline.failures import provenance
from pipeline.kafka.topology import ORDERS_EVENTS, Naming
from pipeline.settings import Settings
from pipeline.verify import read_topic
from pipeline.workload import WorkloadRecord, invalid_records, order_lifecycle
from tests.integration.helpers import drain_and_verify, produce, running


async def test_garbage_and_schema_invalid_events_are_dead_lettered_and_orders_behind_flow(
    settings: Settings, topics: Naming
) -> None:
    import random

    good = order_lifecycle("ord-behind", random.Random(1))
    bad = invalid_records("ord-behind")  # same key first: same partition, ahead of the order
    records = bad + [
        WorkloadRecord(b"ord-behind", event.__pydantic_serializer__.to_json(event))
        for event in good
    ]
    async with running(settings):
        await produce(settings, records)
        report = await drain_and_verify(settings)
    dead = await read_topic(settings.kafka, topics.dead_letter("validate"))
    assert report.clean, report.as_dict()
    assert report.fulfilled == len(good)
    assert sorted(record.value for record in dead) == sorted(r.value for r in bad)
    for record in dead:
        headers = dict(record.headers)
        assert headers[provenance.ORIGIN_TOPIC] == topics.topic(ORDERS_EVENTS).encode()
        assert headers[provenance.ERROR_TYPE].endswith(b"UndecodableRecord")
        assert headers[provenance.ERROR_MESSAGE]
        assert int(headers[provenance.ORIGIN_OFFSET]) >= 0
