"""Exactly-once bookkeeping without a broker: which producer a record goes to, and which
transactions a commit touches with which offsets."""

from __future__ import annotations

import asyncio
from typing import Any

import pytest
from aiokafka.structs import TopicPartition

from pipeline.runtime.core.ledger import PartitionState
from pipeline.runtime.core.receipts import Receipt
from pipeline.runtime.transactions import PartitionTransactions

pytestmark = pytest.mark.unit


class FakeBatch:
    def __init__(self) -> None:
        self.records: list[bytes] = []

    def append(self, **record: Any) -> int:
        self.records.append(record["value"])
        return len(self.records)

    def close(self) -> None:
        pass


class FakeProducer:
    """Records the transaction calls a real producer would send to the broker."""

    def __init__(self, transactional_id: str) -> None:
        self.transactional_id = transactional_id
        self.calls: list[Any] = []
        self.sent: list[tuple[str, int, list[bytes]]] = []

    async def start(self) -> None:
        self.calls.append("start")

    async def stop(self) -> None:
        self.calls.append("stop")

    async def begin_transaction(self) -> None:
        self.calls.append("begin")

    async def commit_transaction(self) -> None:
        self.calls.append("commit")

    async def abort_transaction(self) -> None:
        self.calls.append("abort")

    async def send_offsets_to_transaction(
        self, offsets: dict[TopicPartition, int], group_id: str
    ) -> None:
        self.calls.append(("offsets", group_id, dict(offsets)))

    def create_batch(self) -> FakeBatch:
        return FakeBatch()

    async def send_batch(self, batch: FakeBatch, topic: str, *, partition: int) -> Any:
        self.sent.append((topic, partition, batch.records))
        delivery: asyncio.Future[None] = asyncio.get_running_loop().create_future()
        delivery.set_result(None)
        return delivery


async def transactions(numbers: list[int]) -> tuple[PartitionTransactions, dict[str, Any]]:
    made: dict[str, FakeProducer] = {}

    def make(transactional_id: str) -> Any:
        made[transactional_id] = FakeProducer(transactional_id)
        return made[transactional_id]

    txns = PartitionTransactions(make, "pay", {"orders.paid": 12})
    delivered: list[Any] = []
    txns.bind(lambda receipts, _delivery: delivered.extend(receipts))
    await txns.assign([TopicPartition("orders.reserved", n) for n in numbers])
    return txns, made


def test_a_receipt_names_its_input_partition() -> None:
    assert Receipt(PartitionState(("orders.reserved", 7)), 42).partition_number == 7


async def test_each_input_partition_has_a_producer_with_a_stable_transactional_id() -> None:
    txns, made = await transactions([0, 3])

    assert sorted(made) == ["pay-0", "pay-3"]
    assert txns.partitions == {0, 3}
    assert all(p.calls == ["start", "begin"] for p in made.values())


async def test_outputs_go_through_their_input_partitions_producer() -> None:
    txns, made = await transactions([0, 3])

    txns.append(
        "orders.paid",
        b"order-1",
        b"from 3",
        [],
        Receipt(PartitionState(("orders.reserved", 3)), 10),
    )
    await txns.commit({})

    assert [records for _, _, records in made["pay-3"].sent] == [[b"from 3"]]
    assert made["pay-0"].sent == []


async def test_a_commit_sends_each_partitions_offsets_in_its_own_transaction() -> None:
    txns, made = await transactions([0, 3])
    txns.append(
        "orders.paid", b"order-1", b"v", [], Receipt(PartitionState(("orders.reserved", 3)), 10)
    )
    offsets = {
        TopicPartition("orders.reserved", 3): 11,
        TopicPartition("pay.retry.1", 3): 5,
    }

    await txns.commit(offsets)

    assert made["pay-3"].calls[2:] == [("offsets", "pay", offsets), "commit", "begin"]
    # Partition 0 had neither records nor offsets: no empty transaction round trip.
    assert made["pay-0"].calls == ["start", "begin"]


async def test_an_offsets_only_commit_still_uses_the_transaction() -> None:
    txns, made = await transactions([0])
    offsets = {TopicPartition("orders.reserved", 0): 8}

    await txns.commit(offsets)

    assert made["pay-0"].calls[2:] == [("offsets", "pay", offsets), "commit", "begin"]


async def test_released_partitions_abort_what_is_open_and_drop_late_outputs() -> None:
    txns, made = await transactions([0, 3])

    await txns.release([3])
    txns.append(
        "orders.paid", b"order-1", b"late", [], Receipt(PartitionState(("orders.reserved", 3)), 10)
    )

    assert made["pay-3"].calls[-2:] == ["abort", "stop"]
    assert made["pay-3"].sent == []
    assert txns.partitions == {0}
