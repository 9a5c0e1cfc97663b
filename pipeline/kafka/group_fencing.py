"""KIP-447 for aiokafka: transactional offset commits fenced by the consumer group.

aiokafka's ``send_offsets_to_transaction`` sends ``TxnOffsetCommit`` v0, which names the
group but not the member: the broker cannot tell a live member from a zombie of an
older generation, so fencing has to rest on transactional ids (one producer per input
partition). KIP-447 (Kafka 2.5) added the consumer's generation, member id and group
instance id to ``TxnOffsetCommit`` v3, and ``require_stable`` to ``OffsetFetch`` v7:

- a member of an old generation has its offsets refused (``ILLEGAL_GENERATION``,
  ``UNKNOWN_MEMBER_ID``, ``FENCED_INSTANCE_ID``), so its transaction can only abort;
- a new owner asks for *stable* offsets and is told to wait while a transaction that
  commits offsets for its partitions is still open.

With both, one transactional producer per process is enough. This module has the two
protocol requests, :class:`GroupFencedOffsets` (sends a producer's offsets as v3
through aiokafka's own transaction state machine) and :func:`fetch_stable_offsets`.
It depends on aiokafka only; the one private hook it needs is in
:mod:`pipeline.kafka.internals`.
"""

from __future__ import annotations

import asyncio
import time
from collections import defaultdict
from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, TypeAlias

from aiokafka import AIOKafkaProducer
from aiokafka.client import AIOKafkaClient, ConnectionGroup, CoordinationType
from aiokafka.errors import KafkaError
from aiokafka.protocol.api import Request, RequestStruct, Response
from aiokafka.protocol.types import (
    Boolean,
    CompactArray,
    CompactString,
    Int16,
    Int32,
    Int64,
    Schema,
    TaggedFields,
)
from aiokafka.structs import TopicPartition

from pipeline.kafka.internals import route_txn_offset_commits

__all__ = [
    "FENCING_ERRORS",
    "ConsumerGroupMetadata",
    "FencedByGroup",
    "GroupFencedOffsets",
    "OffsetsNotStable",
    "StableOffsetFetchRequest",
    "TxnOffsetCommitV3Request",
    "fetch_stable_offsets",
]

ILLEGAL_GENERATION = 22
UNKNOWN_MEMBER_ID = 25
FENCED_INSTANCE_ID = 82
UNSTABLE_OFFSET_COMMIT = 88
FENCING_ERRORS = frozenset({ILLEGAL_GENERATION, UNKNOWN_MEMBER_ID, FENCED_INSTANCE_ID})
"""Error codes with which the broker refuses a zombie's transactional offsets."""

_RETRIABLE_FETCH_ERRORS = frozenset({14, 15, 16, UNSTABLE_OFFSET_COMMIT})
"""Coordinator loading, not available, moved; offsets pending in an open transaction."""


@dataclass(frozen=True, slots=True)
class ConsumerGroupMetadata:
    """Who commits: the group and this member's place in its current generation (Java's
    ``ConsumerGroupMetadata``)."""

    group_id: str
    generation_id: int
    member_id: str
    group_instance_id: str | None = None


# -- TxnOffsetCommit v3 (api key 28, the first flexible version) ---------------------


class TxnOffsetCommitResponse_v3(Response):  # type: ignore[misc]
    """Per partition, whether its offset joined the transaction."""

    API_KEY = 28
    API_VERSION = 3
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            # named like v0's field, so aiokafka's response handling reads both
            "errors",
            CompactArray(
                ("topic", CompactString("utf-8")),
                (
                    "partition_errors",
                    CompactArray(
                        ("partition", Int32), ("error_code", Int16), ("tags", TaggedFields)
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


class TxnOffsetCommitRequest_v3(RequestStruct):  # type: ignore[misc]
    """Offsets into a transaction, with the committing member's group metadata."""

    FLEXIBLE_VERSION = True
    API_KEY = 28
    API_VERSION = 3
    RESPONSE_TYPE = TxnOffsetCommitResponse_v3
    SCHEMA = Schema(
        ("transactional_id", CompactString("utf-8")),
        ("group_id", CompactString("utf-8")),
        ("producer_id", Int64),
        ("producer_epoch", Int16),
        ("generation_id", Int32),
        ("member_id", CompactString("utf-8")),
        ("group_instance_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("committed_offset", Int64),
                        ("committed_leader_epoch", Int32),
                        ("committed_metadata", CompactString("utf-8")),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("tags", TaggedFields),
    )


OffsetsByTopic: TypeAlias = list[tuple[str, list[tuple[int, int, str]]]]
"""``[(topic, [(partition, offset, metadata), ...]), ...]``, aiokafka's layout."""


class TxnOffsetCommitV3Request(Request[TxnOffsetCommitRequest_v3]):  # type: ignore[misc]
    """``TxnOffsetCommit`` at v3 only: a broker without it (Kafka < 2.5) cannot fence by
    generation, and aiokafka refuses to send it there (``IncompatibleBrokerVersion``)."""

    API_KEY = 28

    def __init__(
        self,
        transactional_id: str,
        producer_id: int,
        producer_epoch: int,
        metadata: ConsumerGroupMetadata,
        topics: OffsetsByTopic,
    ) -> None:
        self._transactional_id = transactional_id
        self._producer_id = producer_id
        self._producer_epoch = producer_epoch
        self._metadata = metadata
        self._topics = topics

    def build(
        self, request_struct_class: type[TxnOffsetCommitRequest_v3]
    ) -> TxnOffsetCommitRequest_v3:
        """The v3 struct (leader epochs unknown: -1)."""
        meta = self._metadata
        topics: list[Any] = [
            (topic, [(p, offset, -1, metadata, {}) for p, offset, metadata in partitions], {})
            for topic, partitions in self._topics
        ]
        return request_struct_class(
            self._transactional_id,
            meta.group_id,
            self._producer_id,
            self._producer_epoch,
            meta.generation_id,
            meta.member_id,
            meta.group_instance_id,
            topics,
            {},
        )


# -- OffsetFetch v7 (api key 9): require_stable --------------------------------------


class OffsetFetchResponse_v7(Response):  # type: ignore[misc]
    """Committed offsets per partition, or ``UNSTABLE_OFFSET_COMMIT`` while pending."""

    API_KEY = 9
    API_VERSION = 7
    SCHEMA = Schema(
        ("throttle_time_ms", Int32),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                (
                    "partitions",
                    CompactArray(
                        ("partition_index", Int32),
                        ("committed_offset", Int64),
                        ("committed_leader_epoch", Int32),
                        ("metadata", CompactString("utf-8")),
                        ("error_code", Int16),
                        ("tags", TaggedFields),
                    ),
                ),
                ("tags", TaggedFields),
            ),
        ),
        ("error_code", Int16),
        ("tags", TaggedFields),
    )


class OffsetFetchRequest_v7(RequestStruct):  # type: ignore[misc]
    """A group's committed offsets; with ``require_stable``, none that a transaction
    still holds open."""

    FLEXIBLE_VERSION = True
    API_KEY = 9
    API_VERSION = 7
    RESPONSE_TYPE = OffsetFetchResponse_v7
    SCHEMA = Schema(
        ("group_id", CompactString("utf-8")),
        (
            "topics",
            CompactArray(
                ("name", CompactString("utf-8")),
                ("partition_indexes", CompactArray(Int32)),
                ("tags", TaggedFields),
            ),
        ),
        ("require_stable", Boolean),
        ("tags", TaggedFields),
    )


class StableOffsetFetchRequest(Request[OffsetFetchRequest_v7]):  # type: ignore[misc]
    """``OffsetFetch`` v7 with ``require_stable`` set."""

    API_KEY = 9

    def __init__(self, group_id: str, partitions: Iterable[TopicPartition]) -> None:
        self._group_id = group_id
        self._by_topic: defaultdict[str, list[int]] = defaultdict(list)
        for tp in partitions:
            self._by_topic[tp.topic].append(tp.partition)

    def build(self, request_struct_class: type[OffsetFetchRequest_v7]) -> OffsetFetchRequest_v7:
        """The v7 struct."""
        topics: list[Any] = [
            (topic, sorted(numbers), {}) for topic, numbers in self._by_topic.items()
        ]
        return request_struct_class(self._group_id, topics, True, {})


class FencedByGroup(KafkaError):  # type: ignore[misc]
    """The consumer group has moved on from the member committing: its transaction can
    only abort (another member owns its partitions now)."""


class OffsetsNotStable(KafkaError):  # type: ignore[misc]
    """A transaction holding offsets for the partitions did not end in time."""


async def fetch_stable_offsets(
    client: AIOKafkaClient,
    group_id: str,
    partitions: Iterable[TopicPartition],
    timeout_s: float,
    backoff_s: float = 0.1,
) -> dict[TopicPartition, int]:
    """The group's committed offsets of ``partitions`` once no open transaction holds
    offsets for them (partitions without a committed offset are left out).

    A new owner calls this before it processes anything, so the offsets a previous
    owner's still-open transaction commits are seen, not read around.
    """
    wanted = list(partitions)
    deadline = time.monotonic() + timeout_s
    while True:
        node_id = await client.coordinator_lookup(CoordinationType.GROUP, group_id)
        response: Any = await client.send(
            node_id, StableOffsetFetchRequest(group_id, wanted), group=ConnectionGroup.COORDINATION
        )
        pending = response.error_code in _RETRIABLE_FETCH_ERRORS
        if response.error_code and not pending:
            raise KafkaError(f"OffsetFetch for {group_id} failed: error {response.error_code}")
        offsets: dict[TopicPartition, int] = {}
        for topic, partition_rows, _topic_tags in response.topics:
            for number, offset, _epoch, _metadata, error, _tags in partition_rows:
                if error in _RETRIABLE_FETCH_ERRORS:
                    pending = True
                elif error:
                    raise KafkaError(f"OffsetFetch of {topic}-{number} failed: error {error}")
                elif offset >= 0:
                    offsets[TopicPartition(topic, number)] = offset
        if not pending:
            return offsets
        if time.monotonic() >= deadline:
            raise OffsetsNotStable(f"offsets of {group_id} still pending after {timeout_s} s")
        await asyncio.sleep(backoff_s)


# -- sending a producer's offsets as v3 ----------------------------------------------


class GroupFencedOffsets:
    """Sends ``producer``'s transactional offset commits as ``TxnOffsetCommit`` v3.

    Everything else about the transaction (``AddOffsetsToTxn``, coordinator lookups,
    retries, ``EndTxn``) stays aiokafka's; only the offset commit request carries the
    group metadata. A refusal for an old generation fails the transaction (it must be
    aborted), not the producer.
    """

    def __init__(self, producer: AIOKafkaProducer) -> None:
        self._producer = producer
        self._metadata: ConsumerGroupMetadata | None = None
        route_txn_offset_commits(producer, self._request, self._refusal)

    async def send(
        self, offsets: dict[TopicPartition, int], metadata: ConsumerGroupMetadata
    ) -> None:
        """Add ``offsets`` to the open transaction as ``metadata``'s member.

        Raises :class:`FencedByGroup` when the group has moved on
        to another generation, or ``metadata`` has none (the caller aborts).
        """
        if metadata.generation_id < 0 or not metadata.member_id:
            # The broker skips its generation check for a request without a member (the
            # v0-compatible default), so a member that lost its place — aiokafka resets
            # the generation before it rejoins — must not send one at all.
            raise FencedByGroup(
                f"offsets not sent: not a member of {metadata.group_id}'s current generation"
            )
        self._metadata = metadata
        try:
            await self._producer.send_offsets_to_transaction(offsets, metadata.group_id)
        finally:
            self._metadata = None

    def _request(
        self, transactional_id: str, producer_id: int, producer_epoch: int, topics: OffsetsByTopic
    ) -> TxnOffsetCommitV3Request:
        if self._metadata is None:
            raise RuntimeError("offsets sent without group metadata")
        return TxnOffsetCommitV3Request(
            transactional_id, producer_id, producer_epoch, self._metadata, topics
        )

    def _refusal(self, error_code: int) -> KafkaError | None:
        if error_code not in FENCING_ERRORS:
            return None
        meta = self._metadata
        generation = meta.generation_id if meta is not None else "?"
        return FencedByGroup(
            f"offsets refused (error {error_code}): generation {generation} of the group "
            "is no longer current"
        )
