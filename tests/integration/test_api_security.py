"""The order API lets no one in where they do not belong, on a real broker: a token is
required and checked, a customer places and reads only its own orders, an operator reads
all, a rotated key is fetched without a restart, bodies and request rates are bounded,
every answer is hardened, and the token leaks nowhere."""

from __future__ import annotations

import json
import logging
import threading
import time
import uuid
from collections.abc import Awaitable, Callable, Iterator
from contextlib import contextmanager
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from typing import Any

import httpx
import orjson
import prometheus_client
import pytest
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline.app import create_app
from pipeline.ingress import IngressSettings, create_ingress
from pipeline.ingress.local_issuer import LocalIssuer
from pipeline.kafka.topology import ORDERS_EVENTS, ORDERS_FULFILLED, Naming
from pipeline.settings import Settings
from pipeline.verify import read_topic
from pipeline.workload import WorkloadRecord
from tests.integration.databases import fresh_sqlite_url
from tests.integration.helpers import produce, running
from tests.integration.test_ingress import (
    _every_order_goes_through,
    _placed,
    eventually,
    serving,
)
from tests.integration.test_secure_kafka import capturing_every_logger
from tests.integration.tokens import (
    AUDIENCE,
    ISSUER,
    TEST_ISSUER,
    bearer,
    customer,
    operator,
    trusting,
)

API = trusting(IngressSettings(publish_timeout_s=30, database_url=fresh_sqlite_url()))


def _placed_for(customer_id: str, order_id: str | None = None) -> dict[str, Any]:
    return _placed(order_id or f"ord-{uuid.uuid4().hex[:8]}", customer_id=customer_id)


async def _published_order_ids(settings: Settings) -> list[str]:
    records = await read_topic(settings.kafka, Naming.of(settings.topics).topic(ORDERS_EVENTS))
    return [orjson.loads(record.value)["order_id"] for record in records]


async def test_no_token_or_a_bad_one_gets_401_with_a_bearer_challenge_and_publishes_nothing(
    settings: Settings, topics: Naming
) -> None:
    stranger = LocalIssuer.generate(ISSUER, AUDIENCE)  # right names, key nobody trusts
    elsewhere = LocalIssuer("https://other-issuer.test/", AUDIENCE, TEST_ISSUER.private_key)
    other_api = LocalIssuer(ISSUER, "billing-api", TEST_ISSUER.private_key)
    refused_headers = [
        {},
        {"Authorization": "Basic Y3VzLTE6cGFzc3dvcmQ="},
        bearer("not-a-jwt"),
        customer("cus-1", issuer=stranger),
        customer("cus-1", issuer=elsewhere),
        customer("cus-1", issuer=other_api),
    ]
    async with serving(create_ingress(settings, API), headers={}) as client:
        refused = [
            await client.post("/orders", json=_placed_for("cus-1", f"ord-refused-{n}"), headers=h)
            for n, h in enumerate(refused_headers)
        ]
        unread = await client.get("/orders/ord-refused-0")
        # Once this one is on the topic, anything published before it would be too.
        fence = await client.post(
            "/orders", json=_placed_for("cus-1", "ord-fence"), headers=customer("cus-1")
        )
    assert [response.status_code for response in refused] == [401] * len(refused)
    assert unread.status_code == 401
    for response in [*refused, unread]:
        assert response.headers["www-authenticate"].startswith('Bearer realm="orders"')
    assert 'error="invalid_token"' in refused[2].headers["www-authenticate"]
    assert "unknown key" in refused[3].json()["detail"]
    assert "another issuer" in refused[4].json()["detail"]
    assert "another audience" in refused[5].json()["detail"]
    assert fence.status_code == 202, fence.text
    assert await _published_order_ids(settings) == ["ord-fence"]


async def test_an_expired_token_gets_401_and_publishes_nothing(
    settings: Settings, topics: Naming
) -> None:
    expired = TEST_ISSUER.token("cus-1", now=time.time() - 7200, ttl_s=3600)
    async with serving(create_ingress(settings, API), headers=bearer(expired)) as client:
        posted = await client.post("/orders", json=_placed_for("cus-1", "ord-expired"))
        fence = await client.post(
            "/orders", json=_placed_for("cus-1", "ord-fence"), headers=customer("cus-1")
        )
    assert posted.status_code == 401
    challenge = posted.headers["www-authenticate"]
    assert 'error="invalid_token"' in challenge
    assert "expired" in challenge
    assert fence.status_code == 202
    assert await _published_order_ids(settings) == ["ord-fence"]


async def test_a_customer_places_and_reads_only_its_own_orders_and_an_operator_reads_all(
    settings: Settings, topics: Naming
) -> None:
    settings = _every_order_goes_through(settings)
    own, foreign, elsewhere = (f"ord-{uuid.uuid4().hex[:8]}" for _ in range(3))
    # An order that reaches orders.events from another producer: its owner is learnt
    # from the topic.
    produced = _placed(elsewhere, customer_id="cus-c")
    async with running(settings), serving(create_ingress(settings, API), headers={}) as client:
        await produce(settings, [WorkloadRecord(elsewhere.encode(), orjson.dumps(produced))])
        placed = await client.post(
            "/orders", json=_placed_for("cus-a", own), headers=customer("cus-a")
        )
        for_another = await client.post(
            "/orders", json=_placed_for("cus-b", foreign), headers=customer("cus-a")
        )
        squatting = await client.post(
            "/orders", json=_placed_for("cus-b", own), headers=customer("cus-b")
        )
        cancelling_another = await client.post(
            "/orders", json=_cancelled(own, 2), headers=customer("cus-b")
        )
        mine = await eventually(_fulfilled(client, own, customer("cus-a")))
        as_operator = await eventually(_fulfilled(client, own, operator()))
        theirs = await eventually(_fulfilled(client, elsewhere, customer("cus-c")))
        others_read = await client.get(f"/orders/{own}", headers=customer("cus-b"))
        never_seen = await client.get("/orders/ord-never-seen", headers=customer("cus-b"))
        not_mine = await client.get(f"/orders/{elsewhere}", headers=customer("cus-a"))
    assert placed.status_code == 202, placed.text
    assert for_another.status_code == 403
    assert squatting.status_code == 403
    assert cancelling_another.status_code == 404
    assert mine["order_id"] == as_operator["order_id"] == own
    assert theirs["order_id"] == elsewhere
    # Another customer's order answers exactly like one that does not exist.
    assert others_read.status_code == never_seen.status_code == not_mine.status_code == 404
    assert others_read.json()["detail"] == f"no outcome known for {own!r}"
    assert sorted(await _published_order_ids(settings)) == sorted([own, elsewhere])


def _cancelled(order_id: str, sequence: int) -> dict[str, Any]:
    return {
        "kind": "OrderCancelled",
        "event_id": f"{order_id}-{sequence}",
        "order_id": order_id,
        "sequence": sequence,
        "occurred_at": "2025-01-31T12:10:00Z",
    }


def _fulfilled(
    client: httpx.AsyncClient, order_id: str, headers: dict[str, str]
) -> Callable[[], Awaitable[dict[str, Any] | None]]:
    """A probe: the order's view once it is fulfilled, read with ``headers``."""

    async def probe() -> dict[str, Any] | None:
        response = await client.get(f"/orders/{order_id}", headers=headers)
        if response.status_code != 200 or response.json()["status"] != "fulfilled":
            return None
        view: dict[str, Any] = response.json()
        return view

    return probe


class _JwksServer:
    """An issuer's JWKS endpoint on loopback whose document a test can swap."""

    def __init__(self, document: dict[str, Any]) -> None:
        self.document = document
        self.fetches = 0
        served = self

        class Handler(BaseHTTPRequestHandler):
            def do_GET(self) -> None:
                served.fetches += 1
                body = json.dumps(served.document).encode()
                self.send_response(200)
                self.send_header("Content-Type", "application/json")
                self.send_header("Content-Length", str(len(body)))
                self.end_headers()
                self.wfile.write(body)

            def log_message(self, format: str, *args: Any) -> None:
                return

        self.server = ThreadingHTTPServer(("127.0.0.1", 0), Handler)

    @property
    def url(self) -> str:
        host, port = self.server.server_address[:2]
        return f"http://{host!s}:{port}/.well-known/jwks.json"


@contextmanager
def jwks_served(document: dict[str, Any]) -> Iterator[_JwksServer]:
    """A :class:`_JwksServer` running in a thread for the block."""
    jwks = _JwksServer(document)
    thread = threading.Thread(target=jwks.server.serve_forever, daemon=True)
    thread.start()
    try:
        yield jwks
    finally:
        jwks.server.shutdown()
        jwks.server.server_close()
        thread.join()


async def test_a_rotated_key_is_fetched_from_the_jwks_url_without_a_restart(
    settings: Settings, topics: Naming
) -> None:
    before = LocalIssuer.generate(ISSUER, AUDIENCE)
    after = LocalIssuer.generate(ISSUER, AUDIENCE)
    with jwks_served(before.jwks()) as jwks:
        api = trusting(
            API, before, auth_jwks=None, auth_jwks_url=jwks.url, auth_jwks_refetch_interval_s=0
        )
        async with serving(create_ingress(settings, api), headers={}) as client:
            with_old_key = await client.get("/orders/ord-x", headers=customer("cus-1", before))
            jwks.document = after.jwks()  # the issuer rotates: the old key is withdrawn
            with_new_key = await client.get("/orders/ord-x", headers=customer("cus-1", after))
            placed = await client.post(
                "/orders", json=_placed_for("cus-1"), headers=customer("cus-1", after)
            )
            fetches = jwks.fetches
            old_after_rotation = await client.get(
                "/orders/ord-x", headers=customer("cus-1", before)
            )
    assert with_old_key.status_code == 404  # authenticated; no such order
    assert with_new_key.status_code == 404, with_new_key.text
    assert placed.status_code == 202
    assert old_after_rotation.status_code == 401
    assert fetches == 2  # once at the first token, once for the new kid; cached in between


async def test_an_oversized_body_gets_413_before_it_is_parsed_and_items_are_bounded(
    settings: Settings, topics: Naming
) -> None:
    api = API.model_copy(update={"max_body_bytes": 16 * 1024})
    padding = "x" * (20 * 1024)
    too_many_items = _placed_for("cus-1")
    too_many_items["items"] = [
        {"sku": f"sku-{n}", "quantity": 1, "unit_price_cents": 100} for n in range(101)
    ]

    async def streamed() -> Any:
        for _ in range(20):
            yield b"x" * 1024

    async with serving(create_ingress(settings, api)) as client:
        declared = await client.post("/orders", json={**_placed_for("cus-1"), "pad": padding})
        chunked = await client.post(
            "/orders", content=streamed(), headers={"content-type": "application/json"}
        )
        unauthenticated = await client.post(
            "/orders", content=b"x" * (20 * 1024), headers={"authorization": ""}
        )
        listed = await client.post("/orders", json=too_many_items)
    assert "content-length" not in chunked.request.headers
    assert [declared.status_code, chunked.status_code, unauthenticated.status_code] == [413] * 3
    assert declared.headers["x-content-type-options"] == "nosniff"
    assert listed.status_code == 422
    assert listed.json()["detail"][0]["loc"][-1] == "items"
    assert await _published_order_ids(settings) == []


async def test_a_burst_over_the_rate_limit_gets_429_with_retry_after(
    settings: Settings, topics: Naming
) -> None:
    api = API.model_copy(update={"rate_limit_per_s": 0.5, "rate_limit_burst": 5})
    async with serving(create_ingress(settings, api), headers={}) as client:
        burst = [await client.get("/orders/ord-none", headers=customer("cus-1")) for _ in range(8)]
        neighbour = await client.get("/orders/ord-none", headers=customer("cus-2"))
        anonymous = [await client.get("/orders/ord-none") for _ in range(7)]
    assert [r.status_code for r in burst] == [404] * 5 + [429] * 3
    assert 1 <= int(burst[-1].headers["retry-after"]) <= 2
    assert neighbour.status_code == 404  # every subject has its own bucket
    assert [r.status_code for r in anonymous] == [401] * 5 + [429] * 2  # by address


async def test_every_answer_is_hardened_and_the_pages_still_work(
    settings: Settings, topics: Naming
) -> None:
    async with serving(create_ingress(settings, API)) as client:
        answers = {
            "json": await client.get("/orders/ord-none"),
            "refused": await client.get("/orders/ord-none", headers={"authorization": ""}),
            "openapi": await client.get("/openapi.json"),
            "docs": await client.get("/docs"),
            "asyncapi": await client.get("/asyncapi"),
        }
    for name, response in answers.items():
        assert response.headers["x-content-type-options"] == "nosniff", name
        assert response.headers["x-frame-options"] == "DENY", name
        assert response.headers["referrer-policy"] == "no-referrer", name
        assert response.headers["cache-control"] == "no-store", name
    for name in ("json", "refused", "openapi"):
        assert answers[name].headers["content-security-policy"].startswith("default-src 'none'")
    for name in ("docs", "asyncapi"):
        assert answers[name].status_code == 200, name
        # The pages load their scripts from a CDN: a default-src 'none' would blank them.
        assert "default-src" not in answers[name].headers["content-security-policy"]
    openapi = answers["openapi"].json()
    assert openapi["components"]["securitySchemes"]["bearer"] == {
        "type": "http",
        "scheme": "bearer",
        "bearerFormat": "JWT",
        "description": openapi["components"]["securitySchemes"]["bearer"]["description"],
    }
    for path, method in (("/orders", "post"), ("/orders/{order_id}", "get")):
        operation = openapi["paths"][path][method]
        assert operation["security"] == [{"bearer": []}]
        assert {"401", "413", "429"} <= set(operation["responses"])


async def test_the_token_and_its_claims_leak_into_no_log_span_metric_or_kafka_header(
    settings: Settings,
    topics: Naming,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    settings = _every_order_goes_through(settings)
    # Distinctive, so that a leak cannot hide among ordinary words.
    subject = f"cus-canary-{uuid.uuid4().hex[:12]}"
    email = f"canary-{uuid.uuid4().hex}@example.test"
    token = TEST_ISSUER.token(subject, scopes=["orders:read-all"], email=email)
    expired = TEST_ISSUER.token(subject, now=time.time() - 7200, email=email)
    other = TEST_ISSUER.token(f"cus-other-{uuid.uuid4().hex[:12]}", email=email)
    order_id = f"ord-{uuid.uuid4().hex[:8]}"
    caplog.set_level(logging.DEBUG)
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    pipeline = create_app(settings, http=False, tracer_provider=provider)
    with capturing_every_logger(caplog.handler):
        await pipeline.start()
        try:
            async with serving(create_ingress(settings, API), headers=bearer(token)) as client:
                placed = await client.post("/orders", json=_placed_for(subject, order_id))
                refusals = [
                    await client.post("/orders", json=_placed_for(subject), headers=bearer(other)),
                    await client.post(
                        "/orders", json=_placed_for(subject), headers=bearer(expired)
                    ),
                    await client.get(f"/orders/{order_id}", headers=bearer(other)),
                ]
                await eventually(_fulfilled(client, order_id, bearer(token)))
        finally:
            await pipeline.stop()
        metrics = prometheus_client.generate_latest(pipeline.registry).decode()
    assert placed.status_code == 202
    assert [response.status_code for response in refusals] == [403, 401, 404]
    spans = exporter.get_finished_spans()
    assert spans, "the stages should have traced the order"
    naming = Naming.of(settings.topics)
    records = [
        record
        for topic in (ORDERS_EVENTS, ORDERS_FULFILLED)
        for record in await read_topic(settings.kafka, naming.topic(topic))
    ]
    assert records
    assert "pipeline_events_processed" in metrics
    places = {
        "log records": caplog.text,
        "stdout/stderr": "".join(capfd.readouterr()),
        "spans": "\n".join(span.to_json() for span in spans),
        "metrics": metrics,
        "kafka headers": "\n".join(repr(record.headers) for record in records),
        "refusals": "\n".join(response.text + repr(response.headers) for response in refusals),
    }
    secrets = {"token": token, "expired token": expired, "other token": other, "email": email}
    leaks = [
        f"{what} in {place}"
        for place, text in places.items()
        for what, secret in secrets.items()
        if secret in text
    ]
    # The subject is also the order's customer id, in the event body, which aiokafka's
    # DEBUG lines dump (aiokafka logs at WARNING in every process); beyond that body
    # it is never logged or carried as metadata.
    places["log records"] = "\n".join(
        record.getMessage() for record in caplog.records if not record.name.startswith("aiokafka")
    )
    leaks += [f"subject in {place}" for place, text in places.items() if subject in text]
    assert not leaks, leaks
