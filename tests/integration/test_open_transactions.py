"""An open transaction hides what is written after it from read_committed readers until
it ends; the chaos harness's drain and verifier wait for that instead of counting those
records as lost (a process killed mid-transaction leaves one open until the broker
aborts it)."""

from __future__ import annotations

import contextlib
from collections.abc import AsyncIterator
from typing import Any

import pytest
from aiokafka import AIOKafkaProducer
from aiokafka.errors import KafkaError

from pipeline.kafka.admin import apply_topics
from pipeline.kafka.connection import client_options, new_producer
from pipeline.kafka.internals import TRANSACTION_STATE_ERRORS
from pipeline.kafka.lag import TRANSACTION_ABORT_CHECK_S, wait_for_open_transactions
from pipeline.kafka.topology import TopicSpec
from pipeline.settings import Settings
from pipeline.verify import read_topic


@contextlib.asynccontextmanager
async def open_transaction_then_a_record(
    settings: Settings, topic: str, **transactional: Any
) -> AsyncIterator[AIOKafkaProducer]:
    """A transaction left open with one record on ``topic``, and one record written after
    it by another producer (key ``k`` both); yields the transaction's producer."""
    opener = AIOKafkaProducer(
        **client_options(settings.kafka), transactional_id=topic, **transactional
    )
    successor = new_producer(settings.kafka)
    await opener.start()
    await successor.start()
    try:
        await opener.begin_transaction()
        await opener.send_and_wait(topic, b"open", key=b"k")
        await successor.send_and_wait(topic, b"after", key=b"k")
        yield opener
    finally:
        await successor.stop()
        with contextlib.suppress(KafkaError, *TRANSACTION_STATE_ERRORS):
            await opener.stop()  # fenced if the broker aborted it: may not end cleanly


async def test_records_behind_an_open_transaction_are_waited_for_not_lost(
    settings: Settings,
) -> None:
    topic = f"{settings.topics.prefix}outputs"
    await apply_topics(settings.kafka, [TopicSpec(topic, 1, 1)])
    assert await wait_for_open_transactions(settings.kafka, [topic], timeout_s=5) == 0.0

    async with open_transaction_then_a_record(settings, topic) as zombie:
        assert await read_topic(settings.kafka, topic) == []  # both hidden behind it
        with pytest.raises(TimeoutError, match=r"outputs/0 readable to 0 of 2"):
            await wait_for_open_transactions(settings.kafka, [topic], timeout_s=1)
        await zombie.abort_transaction()  # what the broker does to a killed one, later
        # (its markers may land a moment after the abort returns)
        await wait_for_open_transactions(settings.kafka, [topic], timeout_s=10)

    assert [record.value for record in await read_topic(settings.kafka, topic)] == [b"after"]


async def test_the_broker_aborts_an_abandoned_transaction_and_the_wait_sees_it_end(
    settings: Settings,
) -> None:
    """What a killed process leaves: a transaction nobody ends. The broker aborts it once
    its timeout has passed (checking every TRANSACTION_ABORT_CHECK_S); the wait spans that
    and the records behind it become readable."""
    topic = f"{settings.topics.prefix}abandoned"
    await apply_topics(settings.kafka, [TopicSpec(topic, 1, 1)])
    async with open_transaction_then_a_record(settings, topic, transaction_timeout_ms=1_000):
        waited = await wait_for_open_transactions(
            settings.kafka, [topic], timeout_s=1 + TRANSACTION_ABORT_CHECK_S + 10
        )
    assert waited > 0.5  # it was open, then the broker ended it
    assert [record.value for record in await read_topic(settings.kafka, topic)] == [b"after"]
