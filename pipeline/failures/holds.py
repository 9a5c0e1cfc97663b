"""Keys waiting behind a record on the retry ladder, journaled in a compacted topic.

While an order has an event on the ladder, its later events at that stage wait. The
waiting state lives in memory for speed and in ``<stage>.holds`` (compacted, keyed by
the record key, one partition per input partition) so that it survives a kill -9 and a
rebalance: whoever owns the partition next reads the journal before it processes
anything.
"""

from __future__ import annotations

from dataclasses import dataclass

import orjson
from aiokafka import AIOKafkaConsumer
from aiokafka.structs import TopicPartition

from pipeline.kafka.connection import client_options, stop_consumer
from pipeline.settings import KafkaSettings


@dataclass(frozen=True, slots=True)
class Hold:
    """A key held at ``level`` (a retry rung, or ``dlq`` when diverted)."""

    level: str
    head: str
    """Where the record the key waits for sits, as ``topic/partition/offset`` of origin."""


def encode_hold(hold: Hold) -> bytes:
    """The journal value of a hold."""
    return orjson.dumps({"level": hold.level, "head": hold.head})


def decode_hold(value: bytes) -> Hold:
    """A hold from its journal value."""
    fields = orjson.loads(value)
    return Hold(level=str(fields["level"]), head=str(fields["head"]))


async def load_holds(
    settings: KafkaSettings, topic: str, partitions: list[int]
) -> dict[tuple[int, bytes], Hold]:
    """Every key held in the given journal partitions: the last value per key wins,
    a tombstone releases."""
    if not partitions:
        return {}
    consumer = AIOKafkaConsumer(
        **client_options(settings), enable_auto_commit=False, isolation_level="read_committed"
    )
    await consumer.start()
    holds: dict[tuple[int, bytes], Hold] = {}
    try:
        tps = [TopicPartition(topic, p) for p in partitions]
        consumer.assign(tps)
        await consumer.seek_to_beginning(*tps)
        ends = await consumer.end_offsets(tps)
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
