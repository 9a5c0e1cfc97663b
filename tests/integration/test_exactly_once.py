"""Exactly-once hops on the real broker: transactions per input partition, and a zombie
fenced by the next owner of its partitions."""

from __future__ import annotations

import asyncio

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import ProducerFenced

from pipeline.app import create_app
from pipeline.kafka.connection import client_options, stop_consumer
from pipeline.kafka.lag import end_offsets
from pipeline.kafka.topology import Naming
from pipeline.settings import Settings
from tests.integration.helpers import drain_and_verify, produce_orders, running


def exactly_once(settings: Settings, **stage: object) -> Settings:
    """``settings`` with every stage in exactly-once mode."""
    update = {"processing_guarantee": "exactly_once", **stage}
    return settings.model_copy(update={"stage": settings.stage.model_copy(update=update)})


async def committed_records(settings: Settings, topic: str) -> int:
    """How many records of ``topic`` a read_committed reader sees."""
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka),
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = list(await end_offsets(settings.kafka, [topic]))
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            batch = await consumer.getmany(timeout_ms=500)
            seen += sum(len(records) for records in batch.values())
        return seen
    finally:
        await stop_consumer(consumer)


async def written_records(settings: Settings, topic: str) -> int:
    """Offsets used in ``topic`` (its high watermark, not the last stable offset):
    committed, aborted and open records and their markers."""
    consumer = AIOKafkaConsumer(**client_options(settings.kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = list(await end_offsets(settings.kafka, [topic]))
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await stop_consumer(consumer)


async def test_exactly_once_flow_is_clean_and_transactional(
    settings: Settings, topics: Naming
) -> None:
    settings = exactly_once(settings)
    async with running(settings) as pipeline:
        produced = await produce_orders(settings, 2_000)
        report = await drain_and_verify(settings)
        owned = [sorted(r.engine.transactions.partitions) for r in pipeline.runtimes]  # type: ignore[union-attr]
    assert report.clean, report.as_dict()
    assert report.duplicated == 0
    assert report.events == produced
    # One transactional producer per input partition in every stage.
    assert owned == [list(range(settings.topics.partitions))] * 4
    # Commit markers take offsets: a transactional topic has more offsets than records.
    validated = topics.topic("orders.validated")
    assert await written_records(settings, validated) > await committed_records(settings, validated)


async def test_a_fenced_zombie_commits_nothing_and_its_outputs_never_show(
    settings: Settings, topics: Naming
) -> None:
    # A long transaction interval keeps the zombie's transaction open while it is fenced.
    settings = exactly_once(settings, transaction_interval_ms=600_000)
    validated = topics.topic("orders.validated")
    produced = await produce_orders(settings, 500)

    zombie = create_app(settings, ["validate"], http=False)
    await zombie.start()
    engine = zombie.runtimes[0].engine
    dead_letters = topics.topic("validate.dlq")
    try:
        async with asyncio.timeout(60):
            # Polls the broker's offsets: the condition lives in Kafka, not in an event.
            while (  # noqa: ASYNC110
                await written_records(settings, validated)
                + await written_records(settings, dead_letters)
                < produced
            ):
                await asyncio.sleep(0.05)
        # Its outputs are written, inside transactions that are still open.
        assert await committed_records(settings, validated) == 0

        # The next owner of the partitions starts its producers: the zombie is fenced
        # and its open transactions are aborted.
        transactions = zombie.runtimes[0].engine.transactions
        assert transactions is not None
        successors = [
            AIOKafkaProducer(
                **client_options(settings.kafka),
                transactional_id=transactions.transactional_id(number),
            )
            for number in range(settings.topics.partitions)
        ]
        await asyncio.gather(*(producer.start() for producer in successors))
        await asyncio.gather(*(producer.stop() for producer in successors))

        await engine.commit()
        assert isinstance(engine.failure, ProducerFenced), engine.failure
    finally:
        await zombie.stop()
    assert await committed_records(settings, validated) == 0

    # The real successor processes everything once; the zombie's work never shows.
    async with running(exactly_once(settings, transaction_interval_ms=100)):
        report = await drain_and_verify(settings)
    assert report.clean, report.as_dict()
    assert report.duplicated == 0
    assert report.events == produced
    assert await committed_records(settings, validated) == produced - report.dead_lettered
