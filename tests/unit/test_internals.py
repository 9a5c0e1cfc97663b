"""The private aiokafka and FastStream internals the pipeline reads are still there.

No broker: these fail on an upgrade that moves an internal, before a stage does.
"""

from __future__ import annotations

import asyncio
import inspect
from typing import Any

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.producer.transaction_manager import TransactionManager, TransactionState
from aiokafka.structs import TopicPartition
from faststream.exceptions import IncorrectState
from faststream.kafka import KafkaBroker, KafkaRouter
from faststream.kafka.publisher.state import RealProducer

from pipeline.kafka.connection import new_producer
from pipeline.kafka.internals import (
    TRANSACTION_STATE_ERRORS,
    InternalsChanged,
    faststream_producer,
    fetch_position,
    group_metadata,
    open_connection,
    pace_metadata_updates,
    paced,
    route_txn_offset_commits,
    skip_decoding,
)
from pipeline.runtime.observer import NullObserver
from pipeline.runtime.ports import StageFailed
from pipeline.settings import KafkaSettings
from tests.unit.test_engine_accounting import Event, engine_for, record

pytestmark = pytest.mark.unit


async def test_fetch_position_reads_the_consumers_position_without_a_broker() -> None:
    consumer = AIOKafkaConsumer(bootstrap_servers="127.0.0.1:1")
    tp = TopicPartition("orders", 3)
    assert fetch_position(consumer, tp) is None  # nothing assigned
    consumer.assign([tp])
    assert fetch_position(consumer, tp) is None  # assigned, position not known yet
    # what the fetcher's seek does once started (the public seek needs a broker)
    consumer._subscription.subscription.assignment.state_value(tp).seek(42)
    assert fetch_position(consumer, tp) == 42
    assert fetch_position(consumer, TopicPartition("orders", 4)) is None


def test_a_consumer_without_the_internal_raises_a_clear_error() -> None:
    class Moved:
        pass

    with pytest.raises(InternalsChanged, match="pin aiokafka"):
        fetch_position(Moved(), TopicPartition("orders", 0))  # type: ignore[arg-type]


async def test_an_invalid_transaction_transition_raises_what_callers_catch() -> None:
    manager = TransactionManager("t-1", 60_000)
    with pytest.raises(TRANSACTION_STATE_ERRORS):
        manager._transition_to(TransactionState.COMMITTING_TRANSACTION)


def test_open_connection_takes_the_arguments_the_sasl_probe_passes() -> None:
    parameters = inspect.signature(open_connection).parameters
    for name in (
        "client_id",
        "request_timeout_ms",
        "ssl_context",
        "security_protocol",
        "sasl_mechanism",
        "sasl_plain_username",
        "sasl_plain_password",
    ):
        assert name in parameters, name


async def test_faststream_batch_subscribers_take_a_decoder_that_decodes_nothing() -> None:
    assert "decoder" in inspect.signature(KafkaRouter().subscriber).parameters
    assert await skip_decoding(object()) is None


class BrokenControl:
    """A consumer whose fetch positions cannot be read any more."""

    def position(self, partition: TopicPartition) -> int | None:
        raise InternalsChanged("moved")

    def describe(self) -> dict[str, Any]:
        return {}

    async def commit(self, offsets: dict[TopicPartition, int]) -> None:
        raise AssertionError("a failed stage commits nothing")


async def test_a_broken_position_read_fails_the_stage_and_makes_it_not_ready() -> None:
    readiness: list[bool] = []

    class Observer(NullObserver):
        def ready(self, is_ready: bool) -> None:
            readiness.append(is_ready)

    async def handler(event: Event, services: Any) -> Event:
        return event

    engine, _ = engine_for(handler)
    engine._observer = Observer()
    engine.start(BrokenControl())  # type: ignore[arg-type]
    with pytest.raises(StageFailed):
        await engine.submit([record(0, "a")])
    assert isinstance(engine.failure, InternalsChanged)
    assert readiness == [False]
    with pytest.raises(StageFailed):  # later batches: the same failure, not a new one
        await engine.submit([record(1, "a")])
    await engine.stop(timeout_s=0)


async def test_group_metadata_reads_the_consumers_generation_without_a_broker() -> None:
    consumer = AIOKafkaConsumer("orders", bootstrap_servers="127.0.0.1:1", group_id="pay")
    with pytest.raises(RuntimeError, match="not started"):
        group_metadata(consumer, "pay")

    class Coordinator:
        generation = 7
        member_id = "member-1"
        _group_instance_id = "pay-0"

    consumer._coordinator = Coordinator()
    metadata = group_metadata(consumer, "pay")
    assert (metadata.generation_id, metadata.member_id, metadata.group_instance_id) == (
        7,
        "member-1",
        "pay-0",
    )
    del Coordinator.member_id  # an aiokafka that keeps it elsewhere
    with pytest.raises(InternalsChanged, match="pin aiokafka"):
        group_metadata(consumer, "pay")


async def test_offset_commits_are_routed_through_the_given_request() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1", transactional_id="pay-0")
    before = producer._sender._do_txn_offset_commit
    route_txn_offset_commits(producer, lambda *args: args, lambda code: None)
    assert producer._sender._do_txn_offset_commit is not before

    class Moved:
        pass

    with pytest.raises(InternalsChanged, match="pin aiokafka"):
        route_txn_offset_commits(Moved(), lambda *args: args, lambda code: None)  # type: ignore[arg-type]


def answered(succeeded: bool) -> asyncio.Future[bool]:
    """A metadata update that has already answered, as one does with no broker to ask."""
    update: asyncio.Future[bool] = asyncio.get_running_loop().create_future()
    update.set_result(succeeded)
    return update


async def test_a_failed_metadata_update_is_retried_no_sooner_than_the_backoff() -> None:
    """Without a broker every update fails at once: aiokafka's sender would ask again in
    a loop. Paced, one update reaches the client per backoff, and its answer is every
    waiting caller's."""
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    asked = 0

    def fails_at_once() -> asyncio.Future[bool]:
        nonlocal asked
        asked += 1
        return answered(False)

    producer.client.force_metadata_update = fails_at_once
    pace_metadata_updates(producer, backoff_s=0.05)
    loop = asyncio.get_running_loop()
    until = loop.time() + 0.5
    answers = []
    while loop.time() < until:  # what the sender does while leaders are unknown
        answers.append(await producer.client.force_metadata_update())
    assert not any(answers)
    assert 2 <= asked <= 11  # at most 0.5 s / 0.05 s (+1): a late timer only lowers it
    assert len(answers) <= 2 * asked + 1  # each one asked, then one paced answer


async def test_a_successful_metadata_update_is_never_delayed() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    outcomes = iter([False, True, True])

    def update() -> asyncio.Future[bool]:
        return answered(next(outcomes))

    producer.client.force_metadata_update = update
    pace_metadata_updates(producer, backoff_s=0.05)
    loop = asyncio.get_running_loop()
    assert await producer.client.force_metadata_update() is False
    started = loop.time()
    assert await producer.client.force_metadata_update() is True  # made after the backoff
    assert loop.time() - started >= 0.04
    started = loop.time()
    assert await producer.client.force_metadata_update() is True  # after a success: at once
    assert loop.time() - started < 0.04


async def test_callers_within_the_backoff_share_one_update() -> None:
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    asked = 0

    def update() -> asyncio.Future[bool]:
        nonlocal asked
        asked += 1
        return answered(asked > 1)  # the first fails, the broker is back for the next

    producer.client.force_metadata_update = update
    assert not paced(producer)
    pace_metadata_updates(producer, backoff_s=0.05)
    pace_metadata_updates(producer, backoff_s=0.05)  # a second call changes nothing
    assert paced(producer)
    assert await producer.client.force_metadata_update() is False
    answers = await asyncio.gather(*(producer.client.force_metadata_update() for _ in range(3)))
    assert answers == [True, True, True]
    assert asked == 2


async def test_the_faststream_brokers_producer_is_found_once_it_started() -> None:
    broker = KafkaBroker("127.0.0.1:1")
    with pytest.raises(IncorrectState):  # not started: FastStream's own error
        faststream_producer(broker)
    producer = AIOKafkaProducer(bootstrap_servers="127.0.0.1:1")
    broker.config.producer._producer = RealProducer(producer)  # what starting it does
    assert faststream_producer(broker) is producer
    with pytest.raises(InternalsChanged, match="pin faststream"):
        faststream_producer(object())


async def test_the_pipelines_producers_are_built_idempotent_and_paced() -> None:
    producer = new_producer(KafkaSettings(bootstrap_servers="127.0.0.1:1"), linger_ms=7)
    assert paced(producer)
    assert producer._txn_manager is not None  # what enable_idempotence sets up
    assert producer._message_accumulator._linger_time == 0.007  # options passed on
