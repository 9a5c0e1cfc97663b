"""A producer that holds records while the broker is away waits for it: it neither spins
nor floods the log, and every record arrives once, in order, when the broker is back.

aiokafka's sender asks for a metadata update whenever it holds records for a partition
with no known leader; with no broker to connect to, the update fails at once and, left
alone, it asks again in a loop (a core and thousands of log lines a second). Every
producer the pipeline builds comes from ``new_producer``, paced (``pace_metadata_updates``).
"""

from __future__ import annotations

import asyncio
import logging
import resource
import time
from typing import Any

from pipeline.kafka.admin import apply_topics
from pipeline.kafka.connection import new_producer
from pipeline.kafka.local import LocalKafka
from pipeline.kafka.topology import TopicSpec
from pipeline.settings import Settings
from pipeline.verify import read_topic

KEYS = 20


class _Count(logging.Handler):
    def __init__(self) -> None:
        super().__init__()
        self.metadata_failures = 0

    def emit(self, record: logging.LogRecord) -> None:
        self.metadata_failures += record.getMessage().startswith("Unable to update metadata")


def _cpu_s() -> float:
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


async def test_a_producer_waits_out_a_broker_restart_without_spinning(
    settings: Settings,
) -> None:
    topic = f"{settings.topics.prefix}outage"
    await apply_topics(settings.kafka, [TopicSpec(topic, 6, 1)])
    producer = new_producer(settings.kafka)  # as every producer of the pipeline is built
    await producer.start()
    counted = _Count()
    logging.getLogger("aiokafka").addHandler(counted)
    sent: list[asyncio.Future[Any]] = []
    warmed_up = asyncio.Event()
    try:
        number = 0

        async def send_steadily() -> None:
            # a stage's pace of outputs: a record every few milliseconds, not awaited
            nonlocal number
            while True:
                key = str(number % KEYS).encode()
                sent.append(await producer.send(topic, str(number).encode(), key=key))
                number += 1
                if number == 100:
                    warmed_up.set()
                await asyncio.sleep(0.005)

        pump = asyncio.create_task(send_steadily())
        await warmed_up.wait()
        cpu_before, started = _cpu_s(), time.monotonic()
        await asyncio.to_thread(LocalKafka(settings.local_kafka).restart)
        cpu_s, outage_s = _cpu_s() - cpu_before, time.monotonic() - started
        pump.cancel()
        await asyncio.gather(pump, return_exceptions=True)
        await asyncio.wait_for(asyncio.gather(*sent), timeout=60)
    finally:
        logging.getLogger("aiokafka").removeHandler(counted)
        await producer.stop()

    # Unpaced: ~8,000 failures and a whole core per second of outage (measured).
    assert counted.metadata_failures > 0  # the sender did wait for a leader
    assert counted.metadata_failures <= 15 * outage_s + 5, (counted.metadata_failures, outage_s)
    assert cpu_s < 0.3 * outage_s, (cpu_s, outage_s)
    records = await read_topic(settings.kafka, topic)
    values = [int(record.value) for record in records if record.value is not None]
    assert sorted(values) == list(range(len(sent)))  # all of them, once each
    for key in range(KEYS):
        mine = [int(r.value) for r in records if r.key == str(key).encode() and r.value]
        assert mine == sorted(mine)
