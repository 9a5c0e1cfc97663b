"""Keys waiting behind a record on the retry ladder, journaled in a compacted topic.

While an order has an event on the ladder, its later events at that stage wait. The
waiting state lives in memory for speed and in ``<stage>.holds`` (compacted, keyed by
the record key, one partition per input partition) so that it survives a kill -9 and a
rebalance: whoever owns the partition next reads the journal before it processes
anything.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass

import orjson
from aiokafka.structs import ConsumerRecord, TopicPartition

from pipeline.kafka.connection import assign_from_beginning, stop_consumer, topic_reader
from pipeline.settings import KafkaSettings

PARKED = "parked"
"""A key held behind its dead letter: its later events are parked."""
RELEASING = "releasing"
"""A parked key whose dead letter was replayed (or discarded): its parked events are
being processed, in order, before anything newer of the key."""


@dataclass(frozen=True, slots=True)
class Hold:
    """A key held at ``level``: a retry rung, :data:`PARKED` or :data:`RELEASING`."""

    level: str
    head: str
    """Where the record the key waits for sits, as ``topic/partition/offset`` of origin
    (for a parked key: the hold's id, carried by its dead letter and parked events)."""
    released: int = 0
    """:data:`RELEASING`: how many of the parked events are processed already."""
    since_ms: int = 0
    """When the key was parked (epoch ms; 0 when not parked)."""

    @property
    def parked(self) -> bool:
        """Whether the key's new events are parked (not queued in memory)."""
        return self.level == PARKED


def encode_hold(hold: Hold) -> bytes:
    """The journal value of a hold."""
    fields: dict[str, object] = {"level": hold.level, "head": hold.head}
    if hold.released:
        fields["released"] = hold.released
    if hold.since_ms:
        fields["since_ms"] = hold.since_ms
    return orjson.dumps(fields)


def decode_hold(value: bytes) -> Hold:
    """A hold from its journal value."""
    fields = orjson.loads(value)
    return Hold(
        level=str(fields["level"]),
        head=str(fields["head"]),
        released=int(fields.get("released", 0)),
        since_ms=int(fields.get("since_ms", 0)),
    )


def parked_keys(journal: Iterable[ConsumerRecord]) -> dict[bytes, Hold]:
    """The keys a journal (read in full) holds behind dead letters, parked or releasing:
    the last value per key wins, a tombstone releases."""
    holds: dict[bytes, Hold] = {}
    for record in journal:
        if record.key is None:
            continue
        if record.value is None:
            holds.pop(record.key, None)
        else:
            holds[record.key] = decode_hold(record.value)
    return {key: hold for key, hold in holds.items() if hold.level in (PARKED, RELEASING)}


async def load_holds(
    settings: KafkaSettings, topic: str, partitions: list[int]
) -> dict[tuple[int, bytes], Hold]:
    """Every key held in the given journal partitions: the last value per key wins,
    a tombstone releases."""
    if not partitions:
        return {}
    consumer = topic_reader(settings)
    await consumer.start()
    holds: dict[tuple[int, bytes], Hold] = {}
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        ends = await assign_from_beginning(consumer, tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        while remaining:
            batch = await consumer.getmany(*remaining, timeout_ms=500)
            for tp, records in batch.items():
                for record in records:
                    if record.key is None or record.offset >= ends[tp]:
                        continue
                    lane = (tp.partition, record.key)
                    if record.value is None:
                        holds.pop(lane, None)
                    else:
                        holds[lane] = decode_hold(record.value)
            for tp in list(remaining):
                if await consumer.position(tp) >= ends[tp]:
                    remaining.discard(tp)
    finally:
        await stop_consumer(consumer)
    return holds
