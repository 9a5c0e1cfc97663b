"""Bulk producing of workload records (the CLI's ``produce`` and the benchmark)."""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterable, Mapping
from typing import Any

from pipeline.kafka.connection import new_producer
from pipeline.kafka.topology import Naming
from pipeline.settings import KafkaSettings
from pipeline.workload import WorkloadRecord


async def produce_records(
    settings: KafkaSettings,
    topic: str,
    records: Iterable[WorkloadRecord],
    *,
    on_progress: Callable[[int], None] | None = None,
    chunk: int = 2_000,
) -> int:
    """Send ``records`` to ``topic`` keyed as given; returns how many were acknowledged."""
    producer = new_producer(settings, linger_ms=10, max_batch_size=256 * 1024)
    await producer.start()
    sent = 0
    try:
        pending: list[asyncio.Future[Any]] = []
        for record in records:
            pending.append(await producer.send(topic, record.value, key=record.key))
            if len(pending) >= chunk:
                await asyncio.gather(*pending)
                sent += len(pending)
                if on_progress:
                    on_progress(len(pending))
                pending.clear()
        if pending:
            await asyncio.gather(*pending)
            sent += len(pending)
            if on_progress:
                on_progress(len(pending))
    finally:
        await producer.stop()
    return sent


async def produce_by_topic(
    settings: KafkaSettings, naming: Naming, records: Mapping[str, Iterable[WorkloadRecord]]
) -> dict[str, int]:
    """Each (logical) topic's records to its topic in ``naming``, the topics side by side;
    how many each acknowledged."""
    topics = list(records)
    sent = await asyncio.gather(
        *(produce_records(settings, naming.topic(topic), records[topic]) for topic in topics)
    )
    return dict(zip(topics, sent, strict=True))
