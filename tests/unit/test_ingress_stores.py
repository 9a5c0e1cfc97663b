"""The ingress's projection, owner and idempotency stores, without a broker: one
contract, run against the in-process stores and the SQLite ones (a real database file).
The PostgreSQL ones run it in tests/integration/test_ingress_database.py."""

from __future__ import annotations

import asyncio
import uuid
from collections.abc import AsyncIterator, Callable
from datetime import UTC, datetime, timedelta
from pathlib import Path

import orjson
import pytest
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.ingress import (
    InMemoryIdempotencyStore,
    InMemoryProjectionStore,
    OrderView,
    SqlIdempotencyStore,
    SqlProjectionStore,
)
from pipeline.ingress.database import SqlOrderOwners, open_engine, upgrade
from pipeline.ingress.idempotency import (
    IdempotencyStore,
    KeyInUse,
    KeyReused,
    publish_once,
)
from pipeline.ingress.owners import InMemoryOrderOwners, OrderOwners, read_placements
from pipeline.ingress.projection import ProjectionStore
from pipeline.settings import IngressSettings
from tests.unit.records import consumer_record

T0 = datetime(2025, 1, 31, tzinfo=UTC)
TTL_S = 100.0
LEASE_S = 10.0


def _view(sequence: int, status: str, at: datetime = T0) -> OrderView:
    return OrderView.model_validate(
        {
            "order_id": "ord-1",
            "status": status,
            "event_id": f"ord-1-{sequence}",
            "sequence": sequence,
            "updated_at": at,
        }
    )


@pytest.fixture
async def engine(tmp_path: Path) -> AsyncIterator[AsyncEngine]:
    """A migrated SQLite database in the test's directory."""
    engine = open_engine(IngressSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/db"))
    await upgrade(engine)
    yield engine
    await engine.dispose()


@pytest.fixture(params=["memory", "sqlite"])
def projection_of(
    request: pytest.FixtureRequest, tmp_path: Path
) -> Callable[[], AsyncIterator[ProjectionStore]]:
    """A factory of fresh projection stores of one kind."""
    kind: str = request.param

    async def make() -> AsyncIterator[ProjectionStore]:
        if kind == "memory":
            yield InMemoryProjectionStore()
            return
        engine = open_engine(
            IngressSettings(database_url=f"sqlite+aiosqlite:///{tmp_path}/{uuid.uuid4().hex}.db")
        )
        await upgrade(engine)
        yield SqlProjectionStore(engine)
        await engine.dispose()

    return make


@pytest.fixture(params=["memory", "sqlite"])
def owners(request: pytest.FixtureRequest, engine: AsyncEngine) -> OrderOwners:
    """An owner store of one kind."""
    if request.param == "memory":
        return InMemoryOrderOwners()
    return SqlOrderOwners(engine)


@pytest.fixture(params=["memory", "sqlite"])
async def keys_with_clock(
    request: pytest.FixtureRequest, engine: AsyncEngine
) -> tuple[IdempotencyStore, list[float]]:
    """An idempotency store of one kind, and the clock it reads (moved by the test)."""
    now = [1_000.0]
    if request.param == "memory":
        return InMemoryIdempotencyStore(TTL_S, 1_000, LEASE_S, clock=lambda: now[0]), now
    return SqlIdempotencyStore(engine, TTL_S, LEASE_S, clock=lambda: now[0]), now


async def test_the_newest_event_wins_whatever_order_the_topics_are_read_in(
    projection_of: Callable[[], AsyncIterator[ProjectionStore]],
) -> None:
    views = [
        _view(2, "fulfilled"),
        _view(1, "fulfilled"),
        _view(3, "dead_lettered"),
        _view(3, "fulfilled", T0 + timedelta(seconds=5)),  # replayed, then fulfilled
    ]
    orderings = [views, views[::-1], [views[2], views[0], views[3], views[1]]]
    for ordering in orderings:
        async for store in projection_of():
            for view in ordering:  # one view per batch
                await store.apply([view], {})
            latest = await store.get("ord-1")
            assert latest is not None
            assert (latest.sequence, latest.status) == (3, "fulfilled")
            assert latest.updated_at == T0 + timedelta(seconds=5)
    for ordering in orderings:
        async for store in projection_of():
            await store.apply(ordering, {})  # the whole batch at once
            latest = await store.get("ord-1")
            assert latest is not None
            assert (latest.sequence, latest.status) == (3, "fulfilled")


async def test_applied_offsets_only_move_forward_and_are_per_partition(
    projection_of: Callable[[], AsyncIterator[ProjectionStore]],
) -> None:
    async for store in projection_of():
        assert await store.applied_offsets({"a"}) == {}
        await store.apply([_view(1, "fulfilled")], {("a", 0): 10, ("a", 1): 3, ("b", 0): 7})
        await store.apply([], {("a", 0): 4, ("a", 1): 5})  # a replica behind: 0 stays
        assert await store.applied_offsets({"a"}) == {("a", 0): 10, ("a", 1): 5}
        assert await store.get("ord-2") is None


async def test_a_claimed_key_publishes_once_and_replays_the_answer(
    keys_with_clock: tuple[IdempotencyStore, list[float]],
) -> None:
    store, _ = keys_with_clock
    published: list[str] = []

    async def publish() -> None:
        published.append("e-1")

    first = await publish_once(store, "k", "fp", "e-1", publish, wait_s=1)
    again = await publish_once(store, "k", "fp", "e-2", publish, wait_s=1)
    assert (first.event_id, first.replayed) == ("e-1", False)
    assert (again.event_id, again.replayed) == ("e-1", True)
    assert published == ["e-1"]
    with pytest.raises(KeyReused):
        await publish_once(store, "k", "other body", "e-3", publish, wait_s=1)


async def test_concurrent_requests_with_one_key_publish_once(
    keys_with_clock: tuple[IdempotencyStore, list[float]],
) -> None:
    store, _ = keys_with_clock
    published: list[int] = []

    async def publish() -> None:
        published.append(1)
        await asyncio.sleep(0.2)  # the others find the key held meanwhile

    answers = await asyncio.gather(
        *(publish_once(store, "k", "fp", "e-1", publish, wait_s=5) for _ in range(5))
    )
    assert published == [1]
    assert {answer.event_id for answer in answers} == {"e-1"}
    assert sorted(answer.replayed for answer in answers) == [False, True, True, True, True]


async def test_a_request_waiting_too_long_for_the_holder_gets_key_in_use(
    keys_with_clock: tuple[IdempotencyStore, list[float]],
) -> None:
    store, _ = keys_with_clock
    await store.claim("k", "fp", "a-holder-that-hangs")

    async def publish() -> None:
        raise AssertionError("the key is held: nothing may publish")

    with pytest.raises(KeyInUse):
        await publish_once(store, "k", "fp", "e-1", publish, wait_s=0.2)


async def test_a_failed_publish_frees_the_key_for_the_retry(
    keys_with_clock: tuple[IdempotencyStore, list[float]],
) -> None:
    store, _ = keys_with_clock

    async def fail() -> None:
        raise TimeoutError("no ack")

    async def succeed() -> None:
        return

    with pytest.raises(TimeoutError):
        await publish_once(store, "k", "fp", "e-1", fail, wait_s=1)
    retried = await publish_once(store, "k", "fp", "e-1", succeed, wait_s=0.1)
    assert retried.replayed is False


async def test_a_dead_holders_lease_lapses_and_an_answer_expires(
    keys_with_clock: tuple[IdempotencyStore, list[float]],
) -> None:
    store, now = keys_with_clock
    assert (await store.claim("k", "fp", "dead")).holder == "dead"
    now[0] += LEASE_S - 1
    assert (await store.claim("k", "fp", "second")).holder == "dead"  # lease still live
    now[0] += 2
    assert (await store.claim("k", "fp", "second")).holder == "second"  # taken over
    await store.accept("k", "dead", "too-late")  # the old holder lost the key
    await store.accept("k", "second", "e-2")
    now[0] += LEASE_S * 2
    answered = await store.claim("k", "other", "third")
    assert (answered.holder, answered.event_id) == ("second", "e-2")  # remembered
    now[0] += TTL_S
    expired = await store.claim("k", "other", "third")
    assert (expired.holder, expired.fingerprint, expired.event_id) == ("third", "other", None)


async def test_the_in_process_store_forgets_the_oldest_key_beyond_its_bound() -> None:
    store = InMemoryIdempotencyStore(ttl_s=10, max_keys=2)
    for key in ("a", "b", "c"):
        await store.claim(key, key, key)
    assert (await store.claim("a", "a", "again")).holder == "again"  # was forgotten
    assert (await store.claim("c", "c", "again")).holder == "c"


async def test_expired_keys_are_purged_from_the_database(engine: AsyncEngine) -> None:
    now = [1_000.0]
    store = SqlIdempotencyStore(engine, TTL_S, LEASE_S, clock=lambda: now[0])
    await store.claim("old", "fp", "h")
    now[0] += TTL_S / 2
    await store.claim("new", "fp", "h")
    await store.accept("new", "h", "e-new")
    now[0] += TTL_S / 2 + 1
    assert await store.purge_expired() == 1
    assert (await store.claim("new", "fp", "other")).holder == "h"


async def test_the_first_owner_of_an_order_stays(owners: OrderOwners) -> None:
    assert await owners.owner_of("ord-1") is None
    await owners.claim("ord-1", "cus-1")
    await owners.claim("ord-1", "cus-2")  # a later claim, or the same placement read again
    await owners.apply({"ord-1": "cus-3", "ord-2": "cus-2"}, {})
    assert await owners.owner_of("ord-1") == "cus-1"
    assert await owners.owner_of("ord-2") == "cus-2"


async def test_owner_offsets_only_move_forward_apart_from_the_status_projection(
    owners: OrderOwners, engine: AsyncEngine
) -> None:
    assert await owners.applied_offsets({"e"}) == {}
    await owners.apply({}, {("e", 0): 10, ("e", 1): 3, ("f", 0): 1})
    await owners.apply({"ord-1": "cus-1"}, {("e", 0): 4, ("e", 1): 5})  # a replica behind
    assert await owners.applied_offsets({"e"}) == {("e", 0): 10, ("e", 1): 5}
    # The status projection's offsets of the same partitions are rows of their own.
    assert await SqlProjectionStore(engine).applied_offsets({"e"}) == {}


def test_a_batch_names_the_first_placement_of_each_order_and_every_offset_read() -> None:
    def placed(order_id: str, customer_id: str) -> bytes:
        event = {
            "kind": "OrderPlaced",
            "event_id": f"{order_id}-{customer_id}",
            "order_id": order_id,
            "sequence": 1,
            "occurred_at": "2025-01-31T12:00:00Z",
            "customer_id": customer_id,
            "currency": "EUR",
            "items": [{"sku": "a", "quantity": 1, "unit_price_cents": 1}],
        }
        return orjson.dumps(event)

    cancelled = orjson.dumps(
        {
            "kind": "OrderCancelled",
            "event_id": "ord-1-2",
            "order_id": "ord-1",
            "sequence": 2,
            "occurred_at": "2025-01-31T12:00:00Z",
        }
    )
    records = [
        consumer_record("e", 7, b"ord-1", placed("ord-1", "cus-1")),
        consumer_record("e", 3, b"ord-2", placed("ord-2", "cus-2"), partition=1),
        consumer_record("e", 8, b"ord-1", placed("ord-1", "cus-9")),
        consumer_record("e", 4, b"ord-1", cancelled, partition=1),
        consumer_record("e", 9, b"x", b"not an event"),
    ]
    batch = read_placements(records)
    assert batch.owners == {"ord-1": "cus-1", "ord-2": "cus-2"}
    assert batch.applied == {("e", 0): 9, ("e", 1): 4}
