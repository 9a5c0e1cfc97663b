"""The HTTP ingress on a real broker: accepted events flow through every stage and their
status shows up; invalid bodies publish nothing; an Idempotency-Key publishes once. Every
request carries a customer's (or an operator's) bearer token, as in production."""

from __future__ import annotations

import asyncio
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from typing import Any, TypeVar

import httpx
import orjson

from pipeline.ingress import (
    IngressSettings,
    InMemoryProjectionStore,
    create_ingress,
    projection_store,
)
from pipeline.kafka.internals import faststream_producer, paced
from pipeline.kafka.topology import ORDERS_EVENTS, ORDERS_FULFILLED, Naming
from pipeline.settings import Settings
from pipeline.verify import read_topic
from pipeline.workload import invalid_records
from tests.integration.databases import fresh_sqlite_url
from tests.integration.helpers import drain_and_verify, produce, running
from tests.integration.tokens import customer, operator, trusting

T = TypeVar("T")

# A database of this session's own: keys and views of earlier runs must not answer.
API = trusting(IngressSettings(publish_timeout_s=30, database_url=fresh_sqlite_url()))
CUSTOMER = "cus-1"


def _every_order_goes_through(settings: Settings) -> Settings:
    """No declines or stock-outs: every valid order ends ``fulfilled``."""
    services = settings.services.model_copy(update={"decline_rate": 0, "out_of_stock_rate": 0})
    return settings.model_copy(update={"services": services})


def _placed(order_id: str, sequence: int = 1, **changes: Any) -> dict[str, Any]:
    body: dict[str, Any] = {
        "kind": "OrderPlaced",
        "event_id": f"{order_id}-{sequence}",
        "order_id": order_id,
        "sequence": sequence,
        "occurred_at": "2025-01-31T12:00:00Z",
        "customer_id": CUSTOMER,
        "currency": "EUR",
        "items": [{"sku": "book-1", "quantity": 2, "unit_price_cents": 1_250}],
    }
    return {**body, **changes}


def _amended(order_id: str, sequence: int) -> dict[str, Any]:
    return {
        "kind": "OrderAmended",
        "event_id": f"{order_id}-{sequence}",
        "order_id": order_id,
        "sequence": sequence,
        "occurred_at": "2025-01-31T12:05:00Z",
        "items": [{"sku": "book-2", "quantity": 1, "unit_price_cents": 990}],
    }


@asynccontextmanager
async def serving(
    app: Any, headers: dict[str, str] | None = None
) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan (its broker connected) and a client talking to it in-process,
    sending ``headers`` (by default: the token of the customer the bodies name)."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(
            transport=transport,
            base_url="http://ingress",
            headers=customer(CUSTOMER) if headers is None else headers,
        ) as client:
            yield client


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout_s: float = 90) -> T:
    """The first non-None result of ``probe``, polled until the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.1)  # polling a condition with a deadline


def _status_is(client: httpx.AsyncClient, order_id: str, **wanted: Any) -> Any:
    async def probe() -> dict[str, Any] | None:
        response = await client.get(f"/orders/{order_id}")
        if response.status_code != 200:
            return None
        view: dict[str, Any] = response.json()
        return view if all(view.get(k) == v for k, v in wanted.items()) else None

    return probe


async def _events(settings: Settings) -> list[Any]:
    return await read_topic(settings.kafka, Naming.of(settings.topics).topic(ORDERS_EVENTS))


async def test_a_posted_order_is_fulfilled_and_its_status_shows_it(
    settings: Settings, topics: Naming
) -> None:
    settings = _every_order_goes_through(settings)
    order_id = f"ord-{uuid.uuid4().hex[:8]}"
    app = create_ingress(settings, API)
    swapped = InMemoryProjectionStore()  # the store is a dependency: tests bring their own
    app.dependency_overrides[projection_store] = lambda: swapped
    async with running(settings), serving(app) as client:
        # its producer waits out a broker outage instead of spinning (test_broker_outage)
        assert paced(faststream_producer(app.state.broker))
        placed = await client.post("/orders", json=_placed(order_id))
        amended = await client.post("/orders", json=_amended(order_id, 2))
        assert placed.status_code == 202, placed.text
        assert placed.json() == {"event_id": f"{order_id}-1"}
        assert placed.headers["location"] == f"/orders/{order_id}"
        assert amended.json() == {"event_id": f"{order_id}-2"}
        view = await eventually(_status_is(client, order_id, status="fulfilled", sequence=2))
        report = await drain_and_verify(settings)
    assert view["event_id"] == f"{order_id}-2"
    assert view["kind"] == "OrderAmended"
    assert (await swapped.get(order_id)) is not None
    assert report.clean, report.as_dict()
    assert report.events == report.fulfilled == 2
    records = await _events(settings)
    assert {record.key for record in records} == {order_id.encode()}  # keyed by order id
    fulfilled = await read_topic(settings.kafka, topics.topic(ORDERS_FULFILLED))
    assert [orjson.loads(r.value)["event"]["sequence"] for r in fulfilled] == [1, 2]


async def test_invalid_bodies_get_422_and_publish_nothing(
    settings: Settings, topics: Naming
) -> None:
    async with serving(create_ingress(settings, API)) as client:
        missing = _placed("ord-1")
        del missing["customer_id"]
        refused = [
            await client.post("/orders", json=missing),
            await client.post("/orders", json=_placed("ord-1", kind="OrderShipped")),
            await client.post("/orders", json=_placed("ord-1", currency="euro")),
            await client.post("/orders", json=_placed("ord-1", sequence=0)),
            await client.post(
                "/orders", content=b"{not json", headers={"content-type": "application/json"}
            ),
        ]
        # A valid event after them: once it is on the topic, anything published
        # before it would be too.
        fence = await client.post("/orders", json=_placed("ord-fence"))
        docs = await client.get("/docs")
        asyncapi = await client.get("/asyncapi")
    assert [response.status_code for response in refused] == [422] * len(refused)
    first = refused[0].json()["detail"][0]
    assert first["loc"][-1] == "customer_id"
    assert first["msg"] == "Field required"
    assert "OrderShipped" in refused[1].text
    assert "OrderPlaced" in refused[1].text
    assert fence.status_code == 202
    assert [record.key for record in await _events(settings)] == [b"ord-fence"]
    assert docs.status_code == 200
    assert asyncapi.status_code == 200
    assert topics.dead_letter("pay") in asyncapi.text
    assert topics.retry("pay", 1) in asyncapi.text


async def test_the_same_idempotency_key_publishes_one_event_and_answers_the_same(
    settings: Settings, topics: Naming
) -> None:
    body = _placed("ord-idem")
    key = {"Idempotency-Key": f"client-{uuid.uuid4().hex}"}
    async with serving(create_ingress(settings, API)) as client:
        first = await client.post("/orders", json=body, headers=key)
        again = await client.post("/orders", json=body, headers=key)
        racing = await asyncio.gather(
            *(
                client.post("/orders", json=_placed("ord-race"), headers={"Idempotency-Key": "r"})
                for _ in range(5)
            )
        )
        reused = await client.post("/orders", json=_placed("ord-other"), headers=key)
    assert first.status_code == again.status_code == 202
    assert first.json() == again.json() == {"event_id": "ord-idem-1"}
    assert again.headers["idempotent-replayed"] == "true"
    assert {response.status_code for response in racing} == {202}
    assert reused.status_code == 409
    published = [orjson.loads(record.value)["event_id"] for record in await _events(settings)]
    assert sorted(published) == ["ord-idem-1", "ord-race-1"]


async def test_a_dead_lettered_order_shows_as_dead_lettered_and_unknown_ones_404(
    settings: Settings, topics: Naming
) -> None:
    # Bytes that are no event name no customer: only an operator can read their order.
    ingress = create_ingress(settings, API)
    async with running(settings), serving(ingress, headers=operator()) as client:
        await produce(settings, invalid_records("ord-broken"))  # bytes that are no event
        view = await eventually(_status_is(client, "ord-broken", status="dead_lettered"))
        unknown = await client.get("/orders/ord-never-seen")
    assert view["stage"] == "validate"
    assert view["sequence"] == 0
    assert view["event_id"] is None
    assert unknown.status_code == 404
