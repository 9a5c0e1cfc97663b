"""KIP-447 on the real broker: TxnOffsetCommit v3 refuses a member of an old generation,
and OffsetFetch v7 with require_stable waits for an open transaction's offsets."""

from __future__ import annotations

import asyncio
import uuid

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition

from pipeline.kafka.connection import client_options, stop_consumer
from pipeline.kafka.group_fencing import (
    FencedByGroup,
    GroupFencedOffsets,
    OffsetsNotStable,
    fetch_stable_offsets,
)
from pipeline.kafka.internals import group_metadata
from pipeline.kafka.topology import Naming
from pipeline.settings import Settings


async def joined(settings: Settings, topic: str, group: str) -> AIOKafkaConsumer:
    """A consumer of ``group`` on ``topic`` that has been given its partitions."""
    consumer = AIOKafkaConsumer(
        topic, **client_options(settings.kafka), group_id=group, enable_auto_commit=False
    )
    await consumer.start()
    async with asyncio.timeout(30):
        while not consumer.assignment():
            await consumer.getmany(timeout_ms=100)
    return consumer


async def transactional(settings: Settings) -> AIOKafkaProducer:
    producer = AIOKafkaProducer(
        **client_options(settings.kafka), transactional_id=f"fence-{uuid.uuid4().hex[:8]}"
    )
    await producer.start()
    return producer


async def test_offsets_of_an_old_generation_are_refused(settings: Settings, topics: Naming) -> None:
    topic = topics.topic("orders.events")
    group = f"fence-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(topic, 0)
    first = await joined(settings, topic, group)
    producer = await transactional(settings)
    offsets = GroupFencedOffsets(producer)
    second: AIOKafkaConsumer | None = None
    try:
        old = group_metadata(first, group)
        assert old.generation_id > 0
        assert old.member_id

        await producer.begin_transaction()
        await offsets.send({tp: 5}, old)
        await producer.commit_transaction()
        assert await fetch_stable_offsets(producer.client, group, [tp], 10) == {tp: 5}

        # A second member joins: the group moves to a new generation.
        second = await joined(settings, topic, group)
        async with asyncio.timeout(30):
            while group_metadata(first, group).generation_id == old.generation_id:
                await first.getmany(timeout_ms=100)

        await producer.begin_transaction()
        await producer.send_and_wait(topic, b"from the zombie", key=b"k", partition=0)
        with pytest.raises(FencedByGroup, match="no longer current"):
            await offsets.send({tp: 10}, old)
        await producer.abort_transaction()
        assert await fetch_stable_offsets(producer.client, group, [tp], 10) == {tp: 5}

        # The member with the group's current metadata commits.
        await producer.begin_transaction()
        await offsets.send({tp: 10}, group_metadata(first, group))
        await producer.commit_transaction()
        assert await fetch_stable_offsets(producer.client, group, [tp], 10) == {tp: 10}
    finally:
        await producer.stop()
        await stop_consumer(first)
        if second is not None:
            await stop_consumer(second)


async def test_offsets_pending_in_an_open_transaction_are_not_stable(
    settings: Settings, topics: Naming
) -> None:
    topic = topics.topic("orders.events")
    group = f"stable-{uuid.uuid4().hex[:8]}"
    tp = TopicPartition(topic, 1)
    member = await joined(settings, topic, group)
    producer = await transactional(settings)
    try:
        await producer.begin_transaction()
        await GroupFencedOffsets(producer).send({tp: 20}, group_metadata(member, group))
        with pytest.raises(OffsetsNotStable):
            await fetch_stable_offsets(producer.client, group, [tp], timeout_s=1)

        waiting = asyncio.create_task(fetch_stable_offsets(producer.client, group, [tp], 30))
        await producer.commit_transaction()
        assert await waiting == {tp: 20}
    finally:
        await producer.stop()
        await stop_consumer(member)
