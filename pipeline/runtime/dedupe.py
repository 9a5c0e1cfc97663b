"""Recently emitted event ids, so at-least-once redelivery does not emit twice.

After a crash, a stage re-reads the records after its last committed offset; some of
them already produced their output. On assignment the stage reads the tail of its own
output, retry and dead-letter partitions and remembers the event ids there; a
redelivered record whose id it remembers is finished without a second output (and
without a second side effect).
"""

from __future__ import annotations

from collections import OrderedDict

import orjson
from aiokafka.structs import ConsumerRecord, TopicPartition

from pipeline.failures.provenance import EVENT_ID, ORIGIN_OFFSET, ORIGIN_PARTITION, ORIGIN_TOPIC
from pipeline.kafka.connection import stop_consumer, topic_reader
from pipeline.settings import KafkaSettings


class RecentIds:
    """A bounded set that forgets the oldest ids first."""

    __slots__ = ("_ids", "_limit")

    def __init__(self, limit: int) -> None:
        self._limit = limit
        self._ids: OrderedDict[str, None] = OrderedDict()

    def add(self, event_id: str) -> None:
        """Remember ``event_id``."""
        ids = self._ids
        ids[event_id] = None
        if len(ids) > self._limit:
            ids.popitem(last=False)

    def __contains__(self, event_id: object) -> bool:
        return event_id in self._ids

    def __len__(self) -> int:
        return len(self._ids)


def record_identity(record: ConsumerRecord) -> str:
    """What a record stands for: the input identity its stage stamped on it (the
    ``pipeline.event.id`` header), else the event id in its value (records written
    before the header), or, when it has none (undecodable bytes), the position it was
    first read from (the origin headers of a retried or dead-lettered record, else its
    own)."""
    origin = dict(record.headers or ())
    stamped = origin.get(EVENT_ID)
    if stamped is not None:
        return str(stamped.decode())
    event_id = event_id_of(record.value)
    if event_id is not None:
        return event_id
    if ORIGIN_OFFSET in origin:
        return "/".join(
            origin.get(name, b"").decode()
            for name in (ORIGIN_TOPIC, ORIGIN_PARTITION, ORIGIN_OFFSET)
        )
    return f"{record.topic}/{record.partition}/{record.offset}"


def event_id_of(value: bytes | None) -> str | None:
    """The event id inside a pipeline record (an order event or an order in progress)."""
    if not value:
        return None
    try:
        fields = orjson.loads(value)
        event = fields.get("event", fields)
        return str(event["event_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError):
        return None


async def recent_event_ids(
    settings: KafkaSettings, partitions: list[TopicPartition], per_partition: int
) -> list[str]:
    """Identities (:func:`record_identity`) of the last ``per_partition`` records of each
    partition, oldest first."""
    if not partitions or per_partition <= 0:
        return []
    consumer = topic_reader(settings)
    await consumer.start()
    found: list[str] = []
    try:
        # offsets before assigning: see pipeline.kafka.connection.assign_from_beginning
        starts = await consumer.beginning_offsets(partitions)
        ends = await consumer.end_offsets(partitions)
        firsts = {tp: max(starts[tp], ends[tp] - per_partition) for tp in partitions}
        remaining = {tp for tp, first in firsts.items() if first < ends[tp]}
        if remaining:
            consumer.assign(list(remaining))
        for tp in remaining:
            consumer.seek(tp, firsts[tp])
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=10_000)
            for tp, records in batch.items():
                for record in records:
                    if record.offset < ends[tp]:
                        found.append(record_identity(record))
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await stop_consumer(consumer)
    return found
