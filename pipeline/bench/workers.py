"""Benchmark worker processes: one hop in one of three implementations, or the sink.

Run as ``python -m pipeline.bench.workers ROLE ...``; each prints ``READY`` once its
consumer owns partitions, and the sink prints one JSON line when it has seen everything.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import signal
import sys
import time
from typing import Any

import orjson
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer, ConsumerRebalanceListener
from aiokafka.structs import TopicPartition

from pipeline import loop
from pipeline.bench.model import (
    HOPS,
    BenchEvent,
    batched_bench_catalog,
    bench_catalog,
    hop_topic,
)
from pipeline.kafka.connection import stop_consumer
from pipeline.kafka.topology import STAGE_NAMES, Naming
from pipeline.settings import Settings


class _Assigned(ConsumerRebalanceListener):  # type: ignore[misc]
    def __init__(self) -> None:
        self.event = asyncio.Event()

    async def on_partitions_revoked(self, revoked: set[TopicPartition]) -> None:
        return None

    async def on_partitions_assigned(self, assigned: set[TopicPartition]) -> None:
        self.event.set()


def _ready() -> None:
    loop.tune_garbage_collector()  # as `pipeline run` does (there before its clients start)
    print("READY", flush=True)


async def _until_signal() -> None:
    stop = asyncio.Event()
    loop = asyncio.get_running_loop()
    for sig in (signal.SIGTERM, signal.SIGINT):
        loop.add_signal_handler(sig, stop.set)
    await stop.wait()


async def run_batched_pipeline_hop(settings: Settings, hop: int, delay_ms: float) -> None:
    """One hop on the stage engine with a batched handler (one wait per call)."""
    await run_pipeline_hop(settings, hop, delay_ms, batched=True)


async def run_pipeline_hop(
    settings: Settings, hop: int, delay_ms: float, *, batched: bool = False
) -> None:
    """One hop on the pipeline's own stage engine."""
    from pipeline.app import create_app

    catalog = batched_bench_catalog(delay_ms) if batched else bench_catalog(delay_ms)
    await _serve(create_app(settings, [f"hop{hop}"], http=False, catalog=catalog))


async def run_checkout_stage(settings: Settings, hop: int, delay_ms: float) -> None:
    """Checkout stage number ``hop`` on the runtime, as ``pipeline run STAGE`` runs it."""
    from pipeline.app import create_app

    await _serve(create_app(settings, [STAGE_NAMES[hop]], http=False))


async def _serve(pipeline: Any) -> None:
    """Start ``pipeline``'s one stage, say READY once it owns partitions, run until
    signalled."""
    await pipeline.start()
    engine = pipeline.runtimes[0].engine
    # Readiness probe for the orchestrator only; the engine has no event for it.
    while engine.assignment is None:  # noqa: ASYNC110
        await asyncio.sleep(0.05)
    _ready()
    await _until_signal()
    await pipeline.stop()


def _raw_clients(
    settings: Settings, group: str, topic: str
) -> tuple[AIOKafkaConsumer, AIOKafkaProducer, _Assigned]:
    """The framework-free loops' consumer (subscribed to ``topic``), producer and
    assignment listener, unstarted."""
    listener = _Assigned()
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_hosts,
        group_id=group,
        enable_auto_commit=False,
        auto_offset_reset="earliest",
    )
    consumer.subscribe([topic], listener=listener)
    producer = AIOKafkaProducer(
        bootstrap_servers=settings.kafka.bootstrap_hosts,
        enable_idempotence=True,
        linger_ms=settings.stage.producer_linger_ms,
        max_batch_size=settings.stage.producer_max_batch_bytes,
    )
    return consumer, producer, listener


async def run_raw_checkout_stage(settings: Settings, hop: int, delay_ms: float) -> None:
    """Checkout stage number ``hop`` with no framework: the stage's own handler and
    models in the smallest batched aiokafka loop that keeps per-key order."""
    from pipeline.runtime.stage import encode
    from pipeline.stages import checkout, checkout_services
    from pipeline.stages.services import simulated_services

    spec = checkout.stages[STAGE_NAMES[hop]]
    services = simulated_services(settings.services)
    call = spec.call(None, {checkout_services: lambda: services})
    decode = spec.decoder()
    naming = Naming.of(settings.topics)
    consumer, producer, listener = _raw_clients(
        settings, naming.group(f"raw-{spec.name}"), naming.topic(spec.source)
    )
    await consumer.start()
    await producer.start()
    sink = naming.topic(spec.sink)
    stop = asyncio.ensure_future(_until_signal())
    first = True
    while not stop.done():
        batch = await consumer.getmany(timeout_ms=100, max_records=settings.stage.fetch_max_records)
        if first and listener.event.is_set():
            _ready()
            first = False
        pending = []
        for records in batch.values():
            for record in records:  # one partition in order: each key's order is kept
                result = await call(decode(record.value))
                pending.append(await producer.send(sink, encode(result), key=record.key))
        if pending:
            await asyncio.gather(*pending)
            await consumer.commit()
    await producer.stop()
    await stop_consumer(consumer)


async def run_raw_hop(settings: Settings, hop: int, delay_ms: float) -> None:
    """One hop as small as raw aiokafka allows: fetch a batch, transform, send all
    without awaiting each, await the batch, commit."""
    naming = Naming.of(settings.topics)
    consumer, producer, listener = _raw_clients(
        settings, naming.group(f"raw-hop{hop}"), naming.topic(hop_topic(hop))
    )
    await consumer.start()
    await producer.start()
    sink = naming.topic(hop_topic(hop + 1))
    stop = asyncio.ensure_future(_until_signal())
    first = True
    while not stop.done():
        batch = await consumer.getmany(timeout_ms=100, max_records=settings.stage.fetch_max_records)
        if first and listener.event.is_set():
            _ready()
            first = False
        pending = []
        for records in batch.values():
            for record in records:
                value = orjson.dumps(orjson.loads(record.value))
                pending.append(await producer.send(sink, value, key=record.key))
        if pending:
            await asyncio.gather(*pending)
            await consumer.commit()
    await producer.stop()
    await stop_consumer(consumer)


async def run_faststream_hop(settings: Settings, hop: int, delay_ms: float) -> None:
    """One hop written as FastStream's documentation shows: a subscriber, a publisher,
    a model in and a model out (with the key kept, or per-key order is lost)."""
    from faststream.kafka import KafkaBroker, KafkaResponse
    from faststream.kafka.annotations import KafkaMessage

    naming = Naming.of(settings.topics)
    listener = _Assigned()
    broker = KafkaBroker(settings.kafka.bootstrap_hosts, log_level=10)
    delay_s = delay_ms / 1000

    @broker.subscriber(
        naming.topic(hop_topic(hop)),
        group_id=naming.group(f"faststream-hop{hop}"),
        auto_offset_reset="earliest",
        listener=listener,
    )
    @broker.publisher(naming.topic(hop_topic(hop + 1)))
    async def handle(event: BenchEvent, message: KafkaMessage) -> KafkaResponse:
        if delay_s:
            await asyncio.sleep(delay_s)
        record: Any = message.raw_message
        return KafkaResponse(event, key=record.key)

    await broker.start()
    await listener.event.wait()
    _ready()
    await _until_signal()
    await broker.stop()


async def run_sink(settings: Settings, expected: int) -> None:
    """Read the last topic until ``expected`` events arrived; print rate, latency and
    per-key order violations as JSON."""
    naming = Naming.of(settings.topics)
    consumer = AIOKafkaConsumer(
        bootstrap_servers=settings.kafka.bootstrap_hosts,
        enable_auto_commit=False,
        isolation_level="read_committed",  # what a downstream service sees
    )
    await consumer.start()
    topic = naming.topic(hop_topic(HOPS))
    partitions = [TopicPartition(topic, p) for p in range(settings.topics.partitions)]
    consumer.assign(partitions)
    await consumer.seek_to_beginning(*partitions)
    _ready()
    latencies: list[float] = []
    last_seq: dict[str, int] = {}
    violations = 0
    first_at = last_at = 0.0
    while len(latencies) < expected:
        batch = await consumer.getmany(timeout_ms=200, max_records=5_000)
        now = time.time()
        for records in batch.values():
            for record in records:
                event = orjson.loads(record.value)
                if not first_at:
                    first_at = now
                last_at = now
                latencies.append(now - event["created"])
                key, seq = event["key"], event["seq"]
                if seq <= last_seq.get(key, -1):
                    violations += 1
                last_seq[key] = seq
    await stop_consumer(consumer)
    latencies.sort()
    print(
        json.dumps(
            {
                "received": len(latencies),
                "last_at": last_at,
                "p50_ms": latencies[len(latencies) // 2] * 1000,
                "p99_ms": latencies[int(len(latencies) * 0.99) - 1] * 1000,
                "order_violations": violations,
            }
        ),
        flush=True,
    )


def main(argv: list[str] | None = None) -> None:
    """Entry point of a worker process."""
    parser = argparse.ArgumentParser()
    parser.add_argument(
        "role",
        choices=[
            "pipeline",
            "pipeline-batched",
            "raw",
            "faststream",
            "checkout-pipeline",
            "checkout-raw",
            "sink",
        ],
    )
    parser.add_argument("--hop", type=int, default=0)
    parser.add_argument("--delay-ms", type=float, default=0.0)
    parser.add_argument("--expected", type=int, default=0)
    parser.add_argument("--loop", choices=["asyncio", "uvloop"], default="uvloop")
    args = parser.parse_args(argv)
    settings = Settings()
    runners: dict[str, Any] = {
        "pipeline": run_pipeline_hop,
        "pipeline-batched": run_batched_pipeline_hop,
        "checkout-pipeline": run_checkout_stage,
        "checkout-raw": run_raw_checkout_stage,
        "raw": run_raw_hop,
        "faststream": run_faststream_hop,
    }
    run = loop.run if args.loop == "uvloop" else asyncio.run
    if args.role == "sink":
        run(run_sink(settings, args.expected))
    else:
        run(runners[args.role](settings, args.hop, args.delay_ms))
    sys.exit(0)


if __name__ == "__main__":
    main()
