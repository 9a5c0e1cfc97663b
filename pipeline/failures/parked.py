"""Parked events: the later events of a key held behind its dead letter.

With ``on_dead_letter="hold"``, a stage writes each later event of a held key to
``<stage>.parked`` (keyed as the input, with its origin and the hold's id in headers),
and its input offset finishes, so the partition's commit moves on and other keys never
wait. When the operator replays the dead letter (or discards it), the stage reads the
hold's parked events back, in their original order, and processes them before anything
newer of the key.
"""

from __future__ import annotations

from collections import Counter
from collections.abc import Iterable

from aiokafka.structs import ConsumerRecord, TopicPartition

from pipeline.failures import provenance
from pipeline.kafka.connection import assign_from_beginning, stop_consumer, topic_reader
from pipeline.settings import KafkaSettings


def origin_of(record: ConsumerRecord) -> str:
    """``topic/partition/offset`` where ``record`` first entered the stage (its origin
    headers when it travelled already, else its own position)."""
    headers = dict(record.headers or ())
    return "/".join(
        (
            headers.get(provenance.ORIGIN_TOPIC, record.topic.encode()).decode(),
            headers.get(provenance.ORIGIN_PARTITION, str(record.partition).encode()).decode(),
            headers.get(provenance.ORIGIN_OFFSET, str(record.offset).encode()).decode(),
        )
    )


def hold_of(record: ConsumerRecord) -> str | None:
    """The hold a parked event (or a dead letter) belongs to."""
    for name, value in record.headers or ():
        if name == provenance.HOLD:
            return bytes(value).decode()
    return None


async def read_parked(
    settings: KafkaSettings, topic: str, partition: int, key: bytes | None, hold: str
) -> list[ConsumerRecord]:
    """The events parked under ``hold`` for ``key`` in one partition, in parked order,
    each once (a record parked again after a crash keeps its first place)."""
    consumer = topic_reader(settings)
    await consumer.start()
    found: list[ConsumerRecord] = []
    seen: set[str] = set()
    try:
        tp = TopicPartition(topic, partition)
        end = (await assign_from_beginning(consumer, [tp]))[tp]
        while end and await consumer.position(tp) < end:
            for record in (await consumer.getmany(tp, timeout_ms=500)).get(tp, []):
                if record.offset >= end or record.key != key or hold_of(record) != hold:
                    continue
                origin = origin_of(record)
                if origin not in seen:
                    seen.add(origin)
                    found.append(record)
    finally:
        await stop_consumer(consumer)
    return found


def parked_per_hold(
    records: Iterable[ConsumerRecord], holds: set[str]
) -> tuple[Counter[str], dict[str, int]]:
    """Per hold in ``holds``: how many of ``records`` (a parked topic) are parked under
    it, each event once, and the timestamp (epoch ms) of the oldest."""
    counts: Counter[str] = Counter()
    oldest: dict[str, int] = {}
    seen: set[str] = set()
    for record in records:
        hold = hold_of(record)
        origin = origin_of(record)
        if hold in holds and origin not in seen:
            seen.add(origin)
            counts[hold] += 1
            oldest[hold] = min(oldest.get(hold, record.timestamp), record.timestamp)
    return counts, oldest
