"""An open transaction hides what is written after it from read_committed readers until
it ends; the chaos harness's drain and verifier wait for that instead of counting those
records as lost (a process killed mid-transaction leaves one open until the broker
aborts it)."""

from __future__ import annotations

import contextlib

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline.kafka.admin import apply_topics
from pipeline.kafka.connection import client_options
from pipeline.kafka.internals import TRANSACTION_STATE_ERRORS
from pipeline.kafka.lag import TRANSACTION_ABORT_CHECK_S, wait_for_open_transactions
from pipeline.kafka.topology import TopicSpec
from pipeline.settings import Settings
from pipeline.verify import read_topic


async def test_records_behind_an_open_transaction_are_waited_for_not_lost(
    settings: Settings,
) -> None:
    topic = f"{settings.topics.prefix}outputs"
    await apply_topics(settings.kafka, [TopicSpec(topic, 1, 1)])
    assert await wait_for_open_transactions(settings.kafka, [topic], timeout_s=5) == 0.0

    zombie = AIOKafkaProducer(**client_options(settings.kafka), transactional_id=topic)
    successor = AIOKafkaProducer(**client_options(settings.kafka), enable_idempotence=True)
    await zombie.start()
    await successor.start()
    try:
        await zombie.begin_transaction()
        await zombie.send_and_wait(topic, b"open", key=b"k")
        await successor.send_and_wait(topic, b"after", key=b"k")

        assert await read_topic(settings.kafka, topic) == []  # both hidden behind it
        with pytest.raises(TimeoutError, match=r"outputs/0 readable to 0 of 2"):
            await wait_for_open_transactions(settings.kafka, [topic], timeout_s=1)

        await zombie.abort_transaction()  # what the broker does to a killed one, later
        # (its markers may land a moment after the abort returns)
        await wait_for_open_transactions(settings.kafka, [topic], timeout_s=10)
    finally:
        await zombie.stop()
        await successor.stop()

    assert [record.value for record in await read_topic(settings.kafka, topic)] == [b"after"]


async def test_the_broker_aborts_an_abandoned_transaction_and_the_wait_sees_it_end(
    settings: Settings,
) -> None:
    """What a killed process leaves: a transaction nobody ends. The broker aborts it once
    its timeout has passed (checking every TRANSACTION_ABORT_CHECK_S); the wait spans that
    and the records behind it become readable."""
    topic = f"{settings.topics.prefix}abandoned"
    await apply_topics(settings.kafka, [TopicSpec(topic, 1, 1)])
    abandoned = AIOKafkaProducer(
        **client_options(settings.kafka), transactional_id=topic, transaction_timeout_ms=1_000
    )
    successor = AIOKafkaProducer(**client_options(settings.kafka), enable_idempotence=True)
    await abandoned.start()
    await successor.start()
    try:
        await abandoned.begin_transaction()
        await abandoned.send_and_wait(topic, b"never committed", key=b"k")
        await successor.send_and_wait(topic, b"after", key=b"k")
        waited = await wait_for_open_transactions(
            settings.kafka, [topic], timeout_s=1 + TRANSACTION_ABORT_CHECK_S + 10
        )
    finally:
        await successor.stop()
        with contextlib.suppress(KafkaError, *TRANSACTION_STATE_ERRORS):
            await abandoned.stop()  # fenced by the abort: it may refuse to end cleanly
    assert waited > 0.5  # it was open, then the broker ended it
    assert [record.value for record in await read_topic(settings.kafka, topic)] == [b"after"]
