"""The order API's state in a real database, on a real broker: a restarted API answers
from the database at once and replays nothing, order owners included; two replicas in
one consumer group share the partitions and both answer every order, and both authorize
every customer's orders whichever replica learnt the owner; one Idempotency-Key sent to
both at once publishes one event; the database stopped mid-run makes the API unready and
answer 503, and when it returns nothing was lost, owners included. The SQLite default
keeps status and keys across a restart too.

PostgreSQL is a local server (:mod:`pipeline.ingress.database.local_postgres`, Debian's
binaries) started once per session; each test gets a database of its own. Its absence
fails the session: these tests are never skipped.
"""

from __future__ import annotations

import asyncio
import logging
import shutil
import socket
import time
import uuid
from collections.abc import AsyncIterator, Awaitable, Callable, Collection, Iterator, Mapping
from collections.abc import Sequence as SequenceOf
from contextlib import asynccontextmanager
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import httpx
import orjson
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from pipeline.ingress import IngressSettings, OrderView, SqlProjectionStore, create_ingress
from pipeline.ingress.database import open_engine, upgrade
from pipeline.ingress.database.local_postgres import LocalPostgres, LocalPostgresError
from pipeline.ingress.owners import OrderOwners
from pipeline.ingress.probes import DATABASE_DOWN
from pipeline.ingress.projection import Partition, ProjectionStore
from pipeline.kafka.lag import end_offsets
from pipeline.kafka.produce import produce_records
from pipeline.kafka.topology import ORDERS_EVENTS, ORDERS_FULFILLED, STAGE_NAMES, Naming
from pipeline.settings import Settings
from pipeline.verify import read_topic
from pipeline.workload import WorkloadRecord
from schemas import OrderProgress
from tests.integration.databases import POSTGRES_HOME, fresh_postgres_database, sqlite_url
from tests.integration.tokens import customer, trusting

T = TypeVar("T")


@pytest.fixture(scope="session")
def postgres_server() -> Iterator[LocalPostgres]:
    """The session's PostgreSQL server (left running if it already was)."""
    # A free port, unless the server already runs: other checkouts on this machine may
    # run their own.
    port = LocalPostgres(POSTGRES_HOME).running_port() or _free_port()
    server = LocalPostgres(POSTGRES_HOME, port)
    was_running = server.running()
    try:
        server.up()
    except LocalPostgresError as exc:
        pytest.fail(f"no PostgreSQL for the ingress tests: {exc} (run `make install`)", False)
    yield server
    if not was_running:
        server.down()


@pytest.fixture
async def postgres_url(postgres_server: LocalPostgres) -> AsyncIterator[SecretStr]:
    """A fresh database of this test on the session's server."""
    async with fresh_postgres_database(postgres_server.url()) as url:
        yield url


def _api(database_url: SecretStr | str) -> IngressSettings:
    # Authentication and rate limits are other tests' subject: these requests act as an
    # operator, and polling must not be throttled.
    return IngressSettings(
        database_url=database_url,
        auth_disabled=True,
        rate_limit_per_s=100_000,
        rate_limit_burst=100_000,
        publish_timeout_s=10,
        database_timeout_s=2,
    )


@asynccontextmanager
async def serving(app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    """The app's lifespan (database, then broker) and an in-process client."""
    async with app.router.lifespan_context(app):
        transport = httpx.ASGITransport(app=app)
        async with httpx.AsyncClient(transport=transport, base_url="http://ingress") as client:
            yield client


async def eventually(probe: Callable[[], Awaitable[T | None]], timeout_s: float = 60) -> T:
    """The first non-None result of ``probe``, polled until the deadline."""
    deadline = time.monotonic() + timeout_s
    while True:
        found = await probe()
        if found is not None:
            return found
        if time.monotonic() > deadline:
            raise AssertionError(f"condition not met within {timeout_s}s")
        await asyncio.sleep(0.1)  # polling a condition with a deadline


def _placed(order_id: str, sequence: int = 1, customer_id: str = "cus-1") -> dict[str, Any]:
    return {
        "kind": "OrderPlaced",
        "event_id": f"{order_id}-{sequence}",
        "order_id": order_id,
        "sequence": sequence,
        "occurred_at": "2025-01-31T12:00:00Z",
        "customer_id": customer_id,
        "currency": "EUR",
        "items": [{"sku": "book-1", "quantity": 1, "unit_price_cents": 990}],
    }


async def _fulfil(settings: Settings, order_ids: SequenceOf[str]) -> None:
    """Write each order's outcome to ``orders.fulfilled``, as the last stage would."""
    records = [
        WorkloadRecord(
            key=order_id.encode(),
            value=OrderProgress.model_validate({"event": _placed(order_id), "status": "fulfilled"})
            .model_dump_json()
            .encode(),
        )
        for order_id in order_ids
    ]
    await produce_records(
        settings.kafka, Naming.of(settings.topics).topic(ORDERS_FULFILLED), records
    )


async def _place_elsewhere(
    settings: Settings, customer_id: str, order_ids: SequenceOf[str]
) -> None:
    """Write each order's ``OrderPlaced`` to ``orders.events``, as another producer would:
    the API learns these owners from the topic only."""
    records = [
        WorkloadRecord(order_id.encode(), orjson.dumps(_placed(order_id, customer_id=customer_id)))
        for order_id in order_ids
    ]
    await produce_records(settings.kafka, Naming.of(settings.topics).topic(ORDERS_EVENTS), records)


def _all_known(
    client: httpx.AsyncClient, order_ids: SequenceOf[str], headers: Mapping[str, str] | None = None
) -> Any:
    async def probe() -> bool | None:
        for order_id in order_ids:
            response = await client.get(f"/orders/{order_id}", headers=headers)
            if response.status_code != 200:
                return None
        return True

    return probe


def _owners_caught_up(settings: Settings, owners: OrderOwners) -> Any:
    """True once ``owners`` applied every record ``orders.events`` holds."""
    topic = Naming.of(settings.topics).topic(ORDERS_EVENTS)

    async def probe() -> bool | None:
        ends = await end_offsets(settings.kafka, [topic])
        applied = await owners.applied_offsets({topic})
        behind = [
            tp for tp, end in ends.items() if end > applied.get((tp.topic, tp.partition), -1) + 1
        ]
        return None if behind else True

    return probe


def _orders(count: int) -> list[str]:
    run = uuid.uuid4().hex[:6]
    return [f"ord-{run}-{n}" for n in range(count)]


async def _published(settings: Settings) -> list[str]:
    topic = Naming.of(settings.topics).topic(ORDERS_EVENTS)
    return [
        orjson.loads(record.value)["event_id"] for record in await read_topic(settings.kafka, topic)
    ]


class CountingStore:
    """A projection store that counts the views the consumer hands it."""

    def __init__(self, store: ProjectionStore) -> None:
        self.store = store
        self.applied = 0

    async def get(self, order_id: str) -> OrderView | None:
        return await self.store.get(order_id)

    async def apply(self, views: SequenceOf[OrderView], applied: Mapping[Partition, int]) -> None:
        self.applied += len(views)
        await self.store.apply(views, applied)

    async def applied_offsets(self, topics: Collection[str]) -> dict[Partition, int]:
        return await self.store.applied_offsets(topics)


class CountingOwners:
    """An owner store that keeps the orders whose owners the consumer hands it."""

    def __init__(self, owners: OrderOwners) -> None:
        self.owners = owners
        self.applied: list[str] = []

    async def owner_of(self, order_id: str) -> str | None:
        return await self.owners.owner_of(order_id)

    async def claim(self, order_id: str, customer_id: str) -> None:
        await self.owners.claim(order_id, customer_id)

    async def apply(self, owners: Mapping[str, str], applied: Mapping[Partition, int]) -> None:
        self.applied.extend(owners)
        await self.owners.apply(owners, applied)

    async def applied_offsets(self, topics: Collection[str]) -> dict[Partition, int]:
        return await self.owners.applied_offsets(topics)


async def test_a_restarted_api_answers_from_the_database_at_once_and_replays_nothing(
    settings: Settings, topics: Naming, postgres_url: SecretStr, caplog: pytest.LogCaptureFixture
) -> None:
    caplog.set_level(logging.INFO)
    api = _api(postgres_url)
    orders = _orders(30)
    await _fulfil(settings, orders)
    async with serving(create_ingress(settings, api)) as client:
        await eventually(_all_known(client, orders))

    restarted = create_ingress(settings, api)
    counting = CountingStore(restarted.state.projection)
    restarted.state.projection = counting
    async with serving(restarted) as client:
        # Before its consumer joined the group, the new process knows every order.
        answers = [await client.get(f"/orders/{order_id}") for order_id in orders]
        assert [answer.status_code for answer in answers] == [200] * len(orders)
        assignment = restarted.state.projection_assignment
        await eventually(lambda: _true(bool(assignment.assigned)))
        await _fulfil(settings, ["ord-after-restart"])
        await eventually(_all_known(client, ["ord-after-restart"]))
    assert counting.applied == 1  # the new record only: nothing was read twice
    password = postgres_url.get_secret_value().split(":")[2].split("@")[0]
    assert "pipeline:***@127.0.0.1" in caplog.text  # the URL is logged masked
    assert password not in caplog.text


async def test_two_replicas_in_one_group_share_the_partitions_and_answer_every_order(
    settings: Settings, topics: Naming, postgres_url: SecretStr
) -> None:
    api = _api(postgres_url)
    replicas = [create_ingress(settings, api), create_ingress(settings, api)]
    every_partition = settings.topics.partitions * (1 + len(STAGE_NAMES))
    async with serving(replicas[0]) as first, serving(replicas[1]) as second:
        owned = [replica.state.projection_assignment for replica in replicas]

        async def shared() -> bool | None:
            mine, theirs = owned[0].assigned, owned[1].assigned
            split = mine and theirs and not mine & theirs
            return True if split and len(mine | theirs) == every_partition else None

        await eventually(shared)
        orders = _orders(40)
        await _fulfil(settings, orders)
        for client in (first, second):
            await eventually(_all_known(client, orders))


async def test_a_restarted_api_authorizes_every_owner_at_once_and_reads_no_placement_again(
    settings: Settings, topics: Naming, postgres_url: SecretStr
) -> None:
    api = trusting(_api(postgres_url))
    accepted, elsewhere, after = _orders(3)
    first = create_ingress(settings, api)
    async with serving(first) as client:
        posted = await client.post(
            "/orders", json=_placed(accepted, customer_id="cus-a"), headers=customer("cus-a")
        )
        await _place_elsewhere(settings, "cus-c", [elsewhere])
        await _fulfil(settings, [accepted, elsewhere])
        await eventually(_all_known(client, [elsewhere], customer("cus-c")))
        await eventually(_owners_caught_up(settings, first.state.owners))
    assert posted.status_code == 202, posted.text

    restarted = create_ingress(settings, api)
    counting = CountingOwners(restarted.state.owners)
    restarted.state.owners = counting
    async with serving(restarted) as client:
        # Before its owner consumer joined its group, the new process knows every owner.
        known = [
            await client.get(f"/orders/{accepted}", headers=customer("cus-a")),
            await client.get(f"/orders/{elsewhere}", headers=customer("cus-c")),
        ]
        foreign = [
            await client.get(f"/orders/{accepted}", headers=customer("cus-b")),
            await client.get(f"/orders/{elsewhere}", headers=customer("cus-a")),
        ]
        squatting = await client.post(
            "/orders", json=_placed(elsewhere, customer_id="cus-b"), headers=customer("cus-b")
        )
        assignment = restarted.state.owner_assignment
        await eventually(lambda: _true(bool(assignment.assigned)))
        await _place_elsewhere(settings, "cus-c", [after])
        await _fulfil(settings, [after])
        await eventually(_all_known(client, [after], customer("cus-c")))
    assert [answer.status_code for answer in known] == [200, 200]
    assert [answer.status_code for answer in foreign] == [404, 404]
    assert squatting.status_code == 403
    assert counting.applied == [after]  # the new placement only: nothing was read twice


async def test_two_replicas_share_the_owners_whichever_one_learnt_them(
    settings: Settings, topics: Naming, postgres_url: SecretStr
) -> None:
    api = trusting(_api(postgres_url))
    replicas = [create_ingress(settings, api), create_ingress(settings, api)]
    accepted, *elsewhere = _orders(30)
    async with serving(replicas[0]) as first, serving(replicas[1]) as second:
        owned = [replica.state.owner_assignment for replica in replicas]

        async def shared() -> bool | None:
            mine, theirs = owned[0].assigned, owned[1].assigned
            split = mine and theirs and not mine & theirs
            return True if split and len(mine | theirs) == settings.topics.partitions else None

        await eventually(shared)
        posted = await first.post(
            "/orders", json=_placed(accepted, customer_id="cus-a"), headers=customer("cus-a")
        )
        # Spread over every partition: each replica's owner consumer writes its share.
        await _place_elsewhere(settings, "cus-c", elsewhere)
        await _fulfil(settings, [accepted, *elsewhere])
        await eventually(_all_known(second, [accepted], customer("cus-a")))
        for client in (first, second):
            await eventually(_all_known(client, elsewhere, customer("cus-c")))
        refused = [
            await second.get(f"/orders/{accepted}", headers=customer("cus-b")),
            await second.get(f"/orders/{elsewhere[0]}", headers=customer("cus-b")),
            await first.get(f"/orders/{elsewhere[-1]}", headers=customer("cus-a")),
        ]
    assert posted.status_code == 202, posted.text
    assert [answer.status_code for answer in refused] == [404, 404, 404]


async def test_one_idempotency_key_sent_to_two_replicas_at_once_publishes_one_event(
    settings: Settings, topics: Naming, postgres_url: SecretStr
) -> None:
    api = _api(postgres_url)
    body = _placed(f"ord-{uuid.uuid4().hex[:8]}")
    key = {"Idempotency-Key": f"client-{uuid.uuid4().hex}"}
    replicas = [create_ingress(settings, api), create_ingress(settings, api)]
    async with serving(replicas[0]) as first, serving(replicas[1]) as second:
        answers = await asyncio.gather(
            *(client.post("/orders", json=body, headers=key) for client in (first, second) * 4)
        )
        reused = await second.post("/orders", json=_placed("ord-other"), headers=key)
    assert [answer.status_code for answer in answers] == [202] * 8, [a.text for a in answers]
    assert {answer.json()["event_id"] for answer in answers} == {body["event_id"]}
    assert sum("idempotent-replayed" in answer.headers for answer in answers) == 7
    assert reused.status_code == 409
    assert await _published(settings) == [body["event_id"]]


async def test_the_database_stopped_mid_run_makes_the_api_unready_and_loses_nothing(
    settings: Settings, topics: Naming, caplog: pytest.LogCaptureFixture
) -> None:
    # A server of this test alone: it is stopped and started again.
    server = LocalPostgres(
        POSTGRES_HOME.with_name(f"postgres-{uuid.uuid4().hex[:8]}"), _free_port()
    )
    app = create_ingress(settings, _api(server.up()))
    before, during = _orders(10), _orders(10)
    key = {"Idempotency-Key": f"client-{uuid.uuid4().hex}"}
    body = _placed(f"ord-{uuid.uuid4().hex[:8]}")
    try:
        async with serving(app) as client:
            await _fulfil(settings, before)
            await eventually(_all_known(client, before))
            assert (await client.get("/ready")).status_code == 200

            server.down()
            ready = await client.get("/ready")
            status = await client.get(f"/orders/{before[0]}")
            posted = await client.post("/orders", json=body, headers=key)
            # Consumed while the database is away.
            await _place_elsewhere(settings, "cus-2", during)
            await _fulfil(settings, during)
            await eventually(lambda: _true(_paused(caplog, "owner projection")))
            await eventually(lambda: _true(_paused(caplog, "projection")))

            server.up()
            await eventually(lambda: _ok(client.get("/ready")))
            await eventually(_all_known(client, before + during))
            await eventually(_owners_caught_up(settings, app.state.owners))
            owners = [await app.state.owners.owner_of(order_id) for order_id in during]
            retried = await client.post("/orders", json=body, headers=key)
    finally:
        server.down()
        shutil.rmtree(server.home, ignore_errors=True)
    assert (ready.status_code, ready.json()["database"]) == (503, "unavailable")
    assert (status.status_code, status.json()) == (503, {"detail": DATABASE_DOWN})
    assert status.headers["retry-after"]
    assert posted.status_code == 503
    assert owners == ["cus-2"] * len(during)
    assert retried.status_code == 202
    published = await _published(settings)
    assert published.count(body["event_id"]) == 1  # the refused request sent nothing


async def test_the_sqlite_default_keeps_status_and_keys_across_a_restart(
    settings: Settings, topics: Naming, tmp_path: Path
) -> None:
    api = _api(sqlite_url(tmp_path))
    assert (
        IngressSettings.model_fields["database_url"]
        .default.get_secret_value()
        .startswith("sqlite+aiosqlite:///")
    )
    body = _placed(f"ord-{uuid.uuid4().hex[:8]}")
    key = {"Idempotency-Key": f"client-{uuid.uuid4().hex}"}
    async with serving(create_ingress(settings, api)) as client:
        first = await client.post("/orders", json=body, headers=key)
        await _fulfil(settings, [body["order_id"]])
        await eventually(_all_known(client, [body["order_id"]]))
    async with serving(create_ingress(settings, api)) as client:
        known = await client.get(f"/orders/{body['order_id']}")
        again = await client.post("/orders", json=body, headers=key)
    assert first.status_code == again.status_code == 202
    assert again.headers["idempotent-replayed"] == "true"
    assert known.status_code == 200
    assert known.json()["status"] == "fulfilled"
    assert await _published(settings) == [body["event_id"]]


async def test_the_postgres_store_converges_whatever_the_order_and_offsets_only_advance(
    postgres_url: SecretStr,
) -> None:
    engine = open_engine(_api(postgres_url))
    await upgrade(engine)
    await upgrade(engine)  # a second replica starting finds nothing to do
    store = SqlProjectionStore(engine)
    t0 = datetime(2025, 1, 31, tzinfo=UTC)

    def view(sequence: int, status: str, at: datetime = t0) -> OrderView:
        return OrderView.model_validate(
            {
                "order_id": "o",
                "status": status,
                "sequence": sequence,
                "event_id": None,
                "updated_at": at,
            }
        )

    try:
        await asyncio.gather(
            store.apply([view(3, "dead_lettered")], {("t", 0): 5}),
            store.apply([view(3, "fulfilled", t0 + timedelta(seconds=1))], {("t", 0): 9}),
            store.apply([view(2, "fulfilled", t0 + timedelta(seconds=9))], {("t", 0): 2}),
        )
        latest = await store.get("o")
        assert latest is not None
        assert (latest.sequence, latest.status) == (3, "fulfilled")
        assert await store.applied_offsets({"t"}) == {("t", 0): 9}
    finally:
        await engine.dispose()


def _paused(caplog: pytest.LogCaptureFixture, consumer: str) -> bool:
    """Whether ``consumer`` (the status or the owner projection) logged a pause."""
    return any(r.getMessage().startswith(f"{consumer} paused") for r in caplog.records)


async def _true(condition: bool) -> bool | None:
    return True if condition else None


async def _ok(request: Awaitable[httpx.Response]) -> bool | None:
    return True if (await request).status_code == 200 else None


def _free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        port: int = probe.getsockname()[1]
        return port
