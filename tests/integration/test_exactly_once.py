"""Exactly-once hops on the real broker: one transaction per stage process, a zombie the
group moved on from fenced by its generation; and the per-partition scheme of brokers
without KIP-447, its zombie fenced by the next owner's transactional ids."""

from __future__ import annotations

import asyncio
import signal
import subprocess
from pathlib import Path

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.errors import ProducerFenced

from pipeline.app import create_app
from pipeline.kafka.connection import client_options, stop_consumer
from pipeline.kafka.lag import end_offsets
from pipeline.kafka.topology import Naming
from pipeline.runtime.process_transactions import ProcessTransactions
from pipeline.runtime.transactions import PartitionTransactions
from pipeline.settings import Settings
from tests.integration.helpers import (
    PIPELINE_BIN,
    drain_and_verify,
    produce_orders,
    running,
    stage_env,
)


def exactly_once(settings: Settings, **stage: object) -> Settings:
    """``settings`` with every stage in exactly-once mode."""
    update = {"processing_guarantee": "exactly_once", **stage}
    return settings.model_copy(update={"stage": settings.stage.model_copy(update=update)})


async def committed_records(settings: Settings, topic: str) -> int:
    """How many records of ``topic`` a read_committed reader sees."""
    consumer = AIOKafkaConsumer(
        **client_options(settings.kafka),
        enable_auto_commit=False,
        isolation_level="read_committed",
        auto_offset_reset="earliest",
    )
    await consumer.start()
    try:
        tps = list(await end_offsets(settings.kafka, [topic]))
        consumer.assign(tps)
        ends = await consumer.end_offsets(tps)
        await consumer.seek_to_beginning(*tps)
        seen = 0
        while any([await consumer.position(tp) < ends[tp] for tp in tps]):
            batch = await consumer.getmany(timeout_ms=500)
            seen += sum(len(records) for records in batch.values())
        return seen
    finally:
        await stop_consumer(consumer)


async def written_records(settings: Settings, topic: str) -> int:
    """Offsets used in ``topic`` (its high watermark, not the last stable offset):
    committed, aborted and open records and their markers."""
    consumer = AIOKafkaConsumer(**client_options(settings.kafka), enable_auto_commit=False)
    await consumer.start()
    try:
        tps = list(await end_offsets(settings.kafka, [topic]))
        return sum((await consumer.end_offsets(tps)).values())
    finally:
        await stop_consumer(consumer)


async def test_exactly_once_flow_is_clean_and_transactional(
    settings: Settings, topics: Naming
) -> None:
    settings = exactly_once(settings)
    async with running(settings) as pipeline:
        produced = await produce_orders(settings, 2_000)
        report = await drain_and_verify(settings)
        owned = [sorted(r.engine.transactions.partitions) for r in pipeline.runtimes]  # type: ignore[union-attr]
        schemes = {type(r.engine.transactions) for r in pipeline.runtimes}
    assert report.clean, report.as_dict()
    assert report.duplicated == 0
    assert report.events == produced
    # One transactional producer per stage process, writing for every input partition.
    assert schemes == {ProcessTransactions}
    assert owned == [list(range(settings.topics.partitions))] * 4
    # Commit markers take offsets: a transactional topic has more offsets than records.
    validated = topics.topic("orders.validated")
    assert await written_records(settings, validated) > await committed_records(settings, validated)


async def wait_for_written(settings: Settings, topics: Naming, produced: int) -> None:
    """Until validate has written an output or dead letter for every produced record
    (counting open transactions' records)."""
    validated = topics.topic("orders.validated")
    dead_letters = topics.topic("validate.dlq")
    async with asyncio.timeout(60):
        # Polls the broker's offsets: the condition lives in Kafka, not in an event.
        while (  # noqa: ASYNC110
            await written_records(settings, validated)
            + await written_records(settings, dead_letters)
            < produced
        ):
            await asyncio.sleep(0.05)


def start_zombie(settings: Settings, log_path: Path) -> subprocess.Popen[bytes]:
    """``pipeline run validate`` whose transaction stays open (a long interval), with a
    short session timeout, logging to ``log_path``."""
    with log_path.open("wb") as log_file:
        return subprocess.Popen(
            [str(PIPELINE_BIN), "run", "validate"],
            env=stage_env(
                settings,
                PIPELINE_PROCESSING_GUARANTEE="exactly_once",
                PIPELINE_STAGE_TRANSACTION_INTERVAL_MS="600000",
                PIPELINE_STAGE_SESSION_TIMEOUT_MS="6000",
            ),
            stdout=log_file,
            stderr=subprocess.STDOUT,
        )


async def test_a_member_the_group_moved_on_from_commits_nothing(
    settings: Settings, topics: Naming, tmp_path: Path
) -> None:
    validated = topics.topic("orders.validated")
    produced = await produce_orders(settings, 500)
    # The zombie: its transaction stays open (a long interval), then it freezes past its
    # session timeout while a successor takes its partitions.
    log_path = tmp_path / "zombie.log"
    zombie = start_zombie(settings, log_path)
    try:
        await wait_for_written(settings, topics, produced)
        assert await committed_records(settings, validated) == 0
        zombie.send_signal(signal.SIGSTOP)

        async with running(exactly_once(settings)) as pipeline:
            validate = pipeline.runtimes[0]
            async with asyncio.timeout(60):
                # the group dropped the frozen member and gave its partitions on
                while validate.readiness() != "assigned":  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            # Woken, the zombie learns it is out of the group; its offsets are refused and
            # its open transaction aborted, which also lets readers past its records.
            zombie.send_signal(signal.SIGCONT)
            async with asyncio.timeout(60):
                while zombie.poll() is None:  # noqa: ASYNC110
                    await asyncio.sleep(0.05)
            report = await drain_and_verify(settings)
    finally:
        if zombie.poll() is None:
            zombie.send_signal(signal.SIGCONT)
            zombie.kill()
        zombie.wait()
    assert report.clean, report.as_dict()
    assert report.duplicated == 0
    assert report.events == produced
    assert await committed_records(settings, validated) == produced - report.dead_lettered
    assert "not a member" in log_path.read_text() or "no longer current" in log_path.read_text()


async def test_per_partition_scheme_fences_a_zombie_by_transactional_id(
    settings: Settings, topics: Naming
) -> None:
    # A long transaction interval keeps the zombie's transaction open while it is fenced.
    settings = exactly_once(settings, transaction_interval_ms=600_000, transactions="per_partition")
    validated = topics.topic("orders.validated")
    produced = await produce_orders(settings, 500)

    zombie = create_app(settings, ["validate"], http=False)
    await zombie.start()
    engine = zombie.runtimes[0].engine
    try:
        await wait_for_written(settings, topics, produced)
        # Its outputs are written, inside transactions that are still open.
        assert await committed_records(settings, validated) == 0

        # The next owner of the partitions starts its producers: the zombie is fenced
        # and its open transactions are aborted.
        transactions = zombie.runtimes[0].engine.transactions
        assert isinstance(transactions, PartitionTransactions)
        successors = [
            AIOKafkaProducer(
                **client_options(settings.kafka),
                transactional_id=transactions.transactional_id(number),
            )
            for number in range(settings.topics.partitions)
        ]
        await asyncio.gather(*(producer.start() for producer in successors))
        await asyncio.gather(*(producer.stop() for producer in successors))

        await engine.commit()
        assert isinstance(engine.failure, ProducerFenced), engine.failure
    finally:
        await zombie.stop()
    assert await committed_records(settings, validated) == 0

    # The real successor processes everything once; the zombie's work never shows.
    async with running(exactly_once(settings, transaction_interval_ms=100)):  # per_partition
        report = await drain_and_verify(settings)
    assert report.clean, report.as_dict()
    assert report.duplicated == 0
    assert report.events == produced
    assert await committed_records(settings, validated) == produced - report.dead_lettered
