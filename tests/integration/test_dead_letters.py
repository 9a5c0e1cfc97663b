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


async def test_redelivered_bad_input_is_dead_lettered_once(
    settings: Settings, topics: Naming
) -> None:
    from aiokafka import AIOKafkaConsumer
    from aiokafka.structs import TopicPartition

    from pipeline.kafka.connection import client_options, stop_consumer
    from tests.integration.helpers import produce_orders

    produced = await produce_orders(settings, 300)
    produced += await produce(settings, invalid_records("ord-bad-1") + invalid_records("ord-bad-2"))
    async with running(settings, ["validate"]):
        await drain_and_verify_stage(settings, "validate")
    first = await read_topic(settings.kafka, topics.dead_letter("validate"))
    assert first

    # As after a crash before any commit: the group's offsets go back to the start, and
    # the whole input is delivered again.
    group = AIOKafkaConsumer(
        **client_options(settings.kafka),
        group_id=topics.group("validate"),
        enable_auto_commit=False,
    )
    await group.start()
    try:
        source = topics.topic(ORDERS_EVENTS)
        start = {TopicPartition(source, p): 0 for p in range(settings.topics.partitions)}
        group.assign(list(start))
        await group.commit(start)
    finally:
        await stop_consumer(group)

    async with running(settings):
        report = await drain_and_verify(settings)
    assert report.clean, report.as_dict()
    assert report.events == produced
    assert report.duplicated == 0
    again = await read_topic(settings.kafka, topics.dead_letter("validate"))
    assert len(first) == 4
    assert len(again) == len(first)


async def drain_and_verify_stage(settings: Settings, stage: str) -> None:
    """Wait until ``stage`` alone committed all of its input."""
    from pipeline.kafka.lag import wait_until_drained

    await wait_until_drained(
        settings.kafka,
        [stage],
        naming=Naming.of(settings.topics),
        retry_levels=settings.topics.retry_levels,
        timeout_s=120,
    )
