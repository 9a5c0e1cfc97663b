"""Every reach into aiokafka's and FastStream's private internals, in one place.

The pipeline needs a few things neither library offers publicly. Each is wrapped here,
and ``tests/unit/test_internals.py`` checks, without a broker, that the installed
versions still have what these wrappers read — so an upgrade that moves them fails a
unit test loudly instead of a running stage quietly. The dependency ranges in
``pyproject.toml`` and the lock file pin versions known to work.

- :func:`fetch_position`: the consumer's next fetch offset, past transaction markers,
  without the network round trip of ``AIOKafkaConsumer.position()`` (which also waits
  for a position that a rebalance is resetting); read from ``consumer._subscription``.
- :data:`TRANSACTION_STATE_ERRORS`: aiokafka's transaction manager ``assert``s on a
  state change that is not allowed (aborting a transaction that a fence already
  ended); callers that give a producer up treat it as "already ended".
- :func:`open_connection`: one raw connection (``aiokafka.conn.create_conn``), to tell
  a SASL refusal from a missing broker.
- :func:`skip_decoding`: a FastStream batch decoder that returns ``None``, so FastStream
  does not build a message object per record the engine decodes itself.
- :func:`group_metadata`: the consumer's group generation, member id and group instance
  id (``consumer._coordinator``), which KIP-447's offset commits carry.
- :func:`route_txn_offset_commits`: a transactional producer's ``TxnOffsetCommit``
  built by the caller (v3, with group metadata) instead of aiokafka's v0, by replacing
  its sender's one step that sends it (``sender._do_txn_offset_commit``).
- :func:`pace_metadata_updates`: a producer's metadata updates, after one failed, no
  sooner than a backoff (``client.force_metadata_update`` wrapped on the instance).
- :func:`faststream_producer`: the aiokafka producer a started FastStream broker
  publishes with (``broker.config.producer._producer.producer``), to pace it as well.
"""

from __future__ import annotations

import asyncio
from collections import defaultdict
from collections.abc import Callable
from functools import partial
from types import SimpleNamespace
from typing import TYPE_CHECKING, Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.client import CoordinationType
from aiokafka.conn import create_conn
from aiokafka.errors import GroupAuthorizationFailedError, KafkaError
from aiokafka.producer.sender import TxnOffsetCommitHandler
from aiokafka.structs import TopicPartition

from pipeline.errors import ConfigurationError

if TYPE_CHECKING:
    from pipeline.kafka.group_fencing import ConsumerGroupMetadata

__all__ = [
    "TRANSACTION_STATE_ERRORS",
    "InternalsChanged",
    "faststream_producer",
    "fetch_position",
    "group_metadata",
    "open_connection",
    "pace_metadata_updates",
    "paced",
    "route_txn_offset_commits",
    "skip_decoding",
]


class InternalsChanged(ConfigurationError):
    """An installed aiokafka or FastStream no longer has an internal the pipeline reads:
    the stage stops (and reports not ready) instead of guessing."""


TRANSACTION_STATE_ERRORS: tuple[type[BaseException], ...] = (AssertionError,)
"""What aiokafka raises for a transaction state change it does not allow."""

open_connection = create_conn
"""``aiokafka.conn.create_conn``: one connection to one broker."""


def fetch_position(consumer: AIOKafkaConsumer, partition: TopicPartition) -> int | None:
    """The offset ``consumer`` fetches next for ``partition`` (past transaction
    markers), or ``None`` when it is not assigned or its position is being reset."""
    try:
        subscription = consumer._subscription.subscription
        if subscription is None or subscription.assignment is None:
            return None
        assignment = subscription.assignment
        if partition not in assignment.tps:
            return None
        state = assignment.state_value(partition)
        return int(state.position) if state.has_valid_position else None
    except AttributeError as exc:
        raise InternalsChanged(
            f"aiokafka's consumer no longer exposes fetch positions as this pipeline "
            f"reads them ({exc}); pin aiokafka to the range in pyproject.toml"
        ) from exc


async def skip_decoding(message: Any) -> None:
    """A FastStream decoder that decodes nothing (the engine decodes each record)."""
    return


def group_metadata(consumer: AIOKafkaConsumer, group_id: str) -> ConsumerGroupMetadata:
    """``consumer``'s place in ``group_id`` now: generation, member id, instance id."""
    from pipeline.kafka.group_fencing import ConsumerGroupMetadata

    try:
        coordinator = consumer._coordinator
        if coordinator is None:
            raise RuntimeError(f"the consumer of {group_id} has not started")
        return ConsumerGroupMetadata(
            group_id=group_id,
            generation_id=int(coordinator.generation),
            member_id=str(coordinator.member_id),
            group_instance_id=coordinator._group_instance_id,
        )
    except AttributeError as exc:
        raise InternalsChanged(
            f"aiokafka's consumer no longer exposes its group generation as this pipeline "
            f"reads it ({exc}); pin aiokafka to the range in pyproject.toml"
        ) from exc


BuildOffsetCommit = Callable[[str, int, int, list[tuple[str, list[tuple[int, int, str]]]]], Any]
"""``(transactional id, producer id, epoch, offsets by topic)`` → the request to send."""


def route_txn_offset_commits(
    producer: AIOKafkaProducer,
    build: BuildOffsetCommit,
    refusal: Callable[[int], KafkaError | None],
) -> None:
    """Send ``producer``'s ``TxnOffsetCommit`` as ``build`` makes it; a partition error
    that ``refusal`` turns into an exception fails the transaction (abortable) with it.

    The rest (coordinator lookup, retries, the other error codes) is aiokafka's own
    handler; responses are given to it in v0's shape.
    """
    try:
        sender = producer._sender
        sender._do_txn_offset_commit  # noqa: B018 - the step replaced below must exist
    except AttributeError as exc:
        raise InternalsChanged(
            f"aiokafka's producer no longer sends offset commits as this pipeline "
            f"replaces them ({exc}); pin aiokafka to the range in pyproject.toml"
        ) from exc

    class Handler(TxnOffsetCommitHandler):  # type: ignore[misc]
        def create_request(self) -> Any:
            manager = self._sender._txn_manager
            by_topic: defaultdict[str, list[tuple[int, int, str]]] = defaultdict(list)
            for tp, offset in sorted(self._offsets.items()):
                by_topic[tp.topic].append((tp.partition, offset.offset, offset.metadata))
            return build(
                manager.transactional_id,
                manager.producer_id,
                manager.producer_epoch,
                list(by_topic.items()),
            )

        def handle_response(self, response: Any) -> Any:
            rows = [
                (topic, [(row[0], row[1]) for row in partitions])
                for topic, partitions, *_tags in response.errors
            ]
            for _topic, partitions in rows:
                for _number, code in partitions:
                    exc = refusal(code)
                    if exc is not None:
                        self._sender._txn_manager.error_transaction(exc)
                        return None
            return super().handle_response(SimpleNamespace(errors=rows))

    async def commit(offsets: dict[TopicPartition, Any], group_id: str) -> None:
        if not offsets:
            return
        try:
            node_id = await sender._find_coordinator(CoordinationType.GROUP, group_id)
        except GroupAuthorizationFailedError as exc:
            sender._txn_manager.error_transaction(exc)
            return
        await Handler(sender, offsets, group_id).do(node_id)

    sender._do_txn_offset_commit = commit


METADATA_RETRY_BACKOFF_S = 0.1
"""Between a failed metadata update and the next (aiokafka's default ``retry_backoff_ms``)."""


def pace_metadata_updates(
    producer: AIOKafkaProducer, backoff_s: float = METADATA_RETRY_BACKOFF_S
) -> None:
    """After a failed metadata update, ``producer`` asks for the next one no sooner than
    ``backoff_s`` later. Producers only: some consumer and admin paths assume an update
    they asked for has happened.

    aiokafka's sender, holding records for a partition whose leader it does not know,
    asks for a metadata update and waits for nothing else. While no broker accepts
    connections (an outage, a restart), the update fails at once and the sender asks
    again: measured on the local broker, an idempotent producer with records to send
    used a whole core and logged about 8,000 "Unable to update metadata" errors a
    second until the broker was back. Here every update asked for within ``backoff_s``
    of a failed one is made once, when that time has passed, and all of them get its
    answer; after a successful update nothing is paced.
    """
    try:
        client = producer.client
        force = client.force_metadata_update
    except AttributeError as exc:
        raise InternalsChanged(
            f"aiokafka's producer no longer asks for metadata as this pipeline paces it "
            f"({exc}); pin aiokafka to the range in pyproject.toml"
        ) from exc
    if paced(producer):
        return
    failed_at = float("-inf")
    deferred: asyncio.Future[bool] | None = None

    def noted(update: asyncio.Future[bool]) -> None:
        nonlocal failed_at
        if update.cancelled() or update.exception() is not None:
            return
        failed_at = float("-inf") if update.result() else asyncio.get_running_loop().time()

    def ask(answer: asyncio.Future[bool]) -> None:
        update = asked()
        update.add_done_callback(partial(_pass_on, answer))

    def asked() -> asyncio.Future[bool]:
        update: asyncio.Future[bool] = force()
        if update.done():
            noted(update)  # an awaiter would not yield to a done-callback first
        else:
            update.add_done_callback(noted)
        return update

    def paced_update() -> asyncio.Future[bool]:
        nonlocal deferred
        loop = asyncio.get_running_loop()
        wait = failed_at + backoff_s - loop.time()
        if wait <= 0:
            return asked()
        if deferred is None or deferred.done():
            deferred = loop.create_future()
            loop.call_later(wait, ask, deferred)
        return asyncio.shield(deferred)  # one waiter's cancellation is not the others'

    paced_update.paced = True  # type: ignore[attr-defined]
    client.force_metadata_update = paced_update


def paced(producer: AIOKafkaProducer) -> bool:
    """Whether :func:`pace_metadata_updates` paces ``producer``."""
    return bool(getattr(producer.client.force_metadata_update, "paced", False))


def _pass_on(answer: asyncio.Future[bool], update: asyncio.Future[bool]) -> None:
    if answer.done():
        return
    if update.cancelled() or update.exception() is not None:
        answer.set_result(False)
    else:
        answer.set_result(update.result())


def faststream_producer(broker: Any) -> AIOKafkaProducer:
    """The aiokafka producer that ``broker`` (a started FastStream ``KafkaBroker``)
    publishes with."""
    try:
        producer = broker.config.producer._producer.producer
    except AttributeError as exc:
        raise InternalsChanged(
            f"FastStream's Kafka broker no longer keeps its producer where this pipeline "
            f"reads it ({exc}); pin faststream to the range in pyproject.toml"
        ) from exc
    if not isinstance(producer, AIOKafkaProducer):
        raise InternalsChanged(
            f"FastStream's Kafka broker publishes with {type(producer).__name__}, not "
            "aiokafka's producer; pin faststream to the range in pyproject.toml"
        )
    return producer
