"""The ingress's projection and idempotency stores, without a broker."""

from __future__ import annotations

import asyncio
from datetime import UTC, datetime, timedelta

from pipeline.ingress import InMemoryIdempotencyStore, InMemoryProjectionStore, OrderView
from pipeline.ingress.idempotency import Accepted

T0 = datetime(2025, 1, 31, tzinfo=UTC)


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


async def test_the_newest_event_wins_whatever_order_the_topics_are_read_in() -> None:
    views = [
        _view(2, "fulfilled"),
        _view(1, "fulfilled"),
        _view(3, "dead_lettered"),
        _view(3, "fulfilled", T0 + timedelta(seconds=5)),  # replayed, then fulfilled
    ]
    for ordering in (views, views[::-1], [views[2], views[0], views[3], views[1]]):
        store = InMemoryProjectionStore()
        for view in ordering:
            await store.apply(view)
        latest = await store.get("ord-1")
        assert latest is not None
        assert (latest.sequence, latest.status) == (3, "fulfilled")


async def test_an_idempotency_key_expires_and_the_oldest_is_forgotten_first() -> None:
    now = [0.0]
    store = InMemoryIdempotencyStore(ttl_s=10, max_keys=2, clock=lambda: now[0])
    for key in ("a", "b", "c"):
        await store.put(key, Accepted(event_id=key, fingerprint=key))
    assert await store.get("a") is None  # beyond max_keys
    assert await store.get("b") == Accepted("b", "b")
    now[0] = 11
    assert await store.get("c") is None  # expired


async def test_holding_a_key_serialises_requests_with_it() -> None:
    store = InMemoryIdempotencyStore(ttl_s=10, max_keys=10)
    inside: list[int] = []
    overlaps: list[int] = []

    async def request(n: int) -> None:
        async with store.hold("k"):
            inside.append(n)
            overlaps.append(len(inside))
            await asyncio.sleep(0)  # let the others try to enter
            inside.remove(n)

    await asyncio.gather(*(request(n) for n in range(5)))
    assert overlaps == [1] * 5
    assert not store._locks  # released keys leave nothing behind
