"""The order API: ``POST /orders`` into the pipeline, ``GET /orders/{order_id}`` out of it.

One FastStream Kafka router for FastAPI carries both directions: its publisher writes
accepted events to ``orders.events`` keyed by order id, and its subscriber keeps the
status projection from ``orders.fulfilled`` and the dead-letter topics. The router's
lifespan starts and stops its broker with the FastAPI app. ``/docs`` is the OpenAPI
page, ``/asyncapi`` the AsyncAPI page of the whole pipeline, this API's channels
included.
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import Body, Depends, FastAPI, Header, HTTPException, Request, Response, status
from fastapi.responses import HTMLResponse, JSONResponse
from faststream import AckPolicy
from faststream.specification import get_asyncapi_html
from pydantic import BaseModel

from pipeline.ingress.idempotency import (
    Accepted,
    IdempotencyStore,
    InMemoryIdempotencyStore,
    fingerprint,
)
from pipeline.ingress.projection import (
    InMemoryProjectionStore,
    OrderView,
    ProjectionStore,
    view_of_dead_letter,
    view_of_fulfilled,
)
from pipeline.ingress.settings import IngressSettings
from pipeline.kafka.connection import broker_security
from pipeline.kafka.topology import ORDERS_EVENTS, ORDERS_FULFILLED, STAGE_NAMES, Naming
from pipeline.settings import Settings
from schemas import OrderEvent

with warnings.catch_warnings():
    # FastStream 0.7.8 announces that this integration moves to the separate
    # `faststream-fastapi` package before 1.0; the pinned version still ships it.
    warnings.filterwarnings("ignore", "The integration has been moved", DeprecationWarning)
    from faststream.kafka.fastapi import KafkaMessage, KafkaRouter

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY = "Idempotency-Key"


class EventAccepted(BaseModel):
    """Kafka acknowledged the event; the pipeline takes it from here."""

    event_id: str


class Problem(BaseModel):
    """Why a request was refused."""

    detail: str


def projection_store(request: Request) -> ProjectionStore:
    """The app's projection store (a FastAPI dependency; override it in tests)."""
    store: ProjectionStore = request.app.state.projection
    return store


def idempotency_store(request: Request) -> IdempotencyStore:
    """The app's idempotency store (a FastAPI dependency; override it in tests)."""
    store: IdempotencyStore = request.app.state.idempotency
    return store


def create_ingress(settings: Settings, api: IngressSettings | None = None) -> FastAPI:
    """The order API for ``settings``' cluster and topic namespace."""
    api = api or settings.api
    naming = Naming.of(settings.topics)
    router = KafkaRouter(
        settings.kafka.bootstrap_hosts,
        security=broker_security(settings.kafka),
        client_id=f"{settings.kafka.client_id_prefix}-ingress",
        request_timeout_ms=settings.kafka.request_timeout_ms,
        # acks=all: a 202 means the write is replicated, and producer retries
        # never duplicate or reorder it.
        enable_idempotence=True,
        schema_url=None,  # /asyncapi documents the whole pipeline, not this router
        log_level=logging.DEBUG,
        logger=logging.getLogger("pipeline.ingress.faststream"),
    )
    events = router.publisher(
        naming.topic(ORDERS_EVENTS),
        schema=OrderEvent,
        title=f"{naming.topic(ORDERS_EVENTS)}:ingress",
        description="Order events accepted over HTTP, keyed by order id.",
    )
    fulfilled = naming.topic(ORDERS_FULFILLED)

    @router.subscriber(
        fulfilled,
        *(naming.dead_letter(stage) for stage in STAGE_NAMES),
        group_id=naming.group(api.projection_group),
        auto_offset_reset="earliest",
        batch=True,
        max_records=api.projection_batch,
        # Commits only for a durable store: an in-process one is rebuilt from the
        # earliest offsets on every start, which needs a group without offsets.
        ack_policy=AckPolicy.MANUAL,
        decoder=_undecoded,
        title=f"{fulfilled}:ingress-projection",
        description="Keeps each order's latest status for GET /orders/{order_id}.",
    )
    async def project(
        message: KafkaMessage,
        store: Annotated[ProjectionStore, Depends(projection_store)],
    ) -> None:
        for record in message.raw_message:
            outcome = record.topic == fulfilled
            view = view_of_fulfilled(record) if outcome else view_of_dead_letter(record)
            if view is None:
                log.warning(
                    "unreadable record skipped by the projection: %s[%d]@%d",
                    record.topic,
                    record.partition,
                    record.offset,
                )
                continue
            await store.apply(view)
        if store.durable:
            await message.ack()

    @router.post(
        "/orders",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=EventAccepted,
        responses={
            409: {"model": Problem, "description": "Idempotency-Key reused with another body"},
            503: {"model": Problem, "description": "Kafka did not acknowledge the write"},
        },
        summary="Submit an order event",
    )
    async def submit_event(
        event: Annotated[OrderEvent, Body()],
        response: Response,
        keys: Annotated[IdempotencyStore, Depends(idempotency_store)],
        idempotency_key: Annotated[
            str | None,
            Header(
                alias=IDEMPOTENCY_KEY,
                min_length=1,
                max_length=255,
                description="Retries with the same key publish once and get the same answer.",
            ),
        ] = None,
    ) -> EventAccepted:
        """Publish the event to ``orders.events``, keyed by its order id; 202 once Kafka
        acknowledged the write."""
        response.headers["Location"] = f"/orders/{event.order_id}"
        if idempotency_key is None:
            await _publish(events, event, api.publish_timeout_s)
            return EventAccepted(event_id=event.event_id)
        digest = fingerprint(event)
        async with keys.hold(idempotency_key):
            earlier = await keys.get(idempotency_key)
            if earlier is None:
                await _publish(events, event, api.publish_timeout_s)
                earlier = Accepted(event_id=event.event_id, fingerprint=digest)
                await keys.put(idempotency_key, earlier)
            elif earlier.fingerprint != digest:
                raise HTTPException(
                    status.HTTP_409_CONFLICT,
                    f"{IDEMPOTENCY_KEY} {idempotency_key!r} was used for another body",
                )
            else:
                response.headers["Idempotent-Replayed"] = "true"
        return EventAccepted(event_id=earlier.event_id)

    @router.get(
        "/orders/{order_id}",
        response_model=OrderView,
        responses={404: {"model": Problem, "description": "No outcome known for the order"}},
        summary="The order's latest known status",
    )
    async def order_status(
        order_id: str, store: Annotated[ProjectionStore, Depends(projection_store)]
    ) -> OrderView:
        """The status of the order's newest event that left the pipeline."""
        view = await store.get(order_id)
        if view is None:
            raise HTTPException(status.HTTP_404_NOT_FOUND, f"no outcome known for {order_id!r}")
        return view

    app = FastAPI(
        title="order-pipeline ingress",
        description="Order events in, order status out. AsyncAPI of the pipeline: /asyncapi.",
    )
    app.state.projection = InMemoryProjectionStore()
    app.state.idempotency = InMemoryIdempotencyStore(
        api.idempotency_ttl_s, api.idempotency_max_keys
    )
    app.include_router(router)
    _serve_asyncapi(app, settings, router)
    return app


async def _publish(publisher: Any, event: BaseModel, timeout_s: float) -> None:
    """Publish ``event`` keyed by its order id and wait for Kafka's acknowledgement."""
    key = str(getattr(event, "order_id", "")).encode()
    try:
        async with asyncio.timeout(timeout_s):
            await publisher.publish(event, key=key)
    except (KafkaError, TimeoutError) as exc:
        log.warning("publish of %s not acknowledged: %r", getattr(event, "event_id", "?"), exc)
        # Retrying with the same Idempotency-Key is safe: nothing was remembered,
        # and a write that did land is deduplicated downstream by event id.
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "Kafka did not acknowledge the event; retry with the same Idempotency-Key",
        ) from exc


def _serve_asyncapi(app: FastAPI, settings: Settings, router: KafkaRouter) -> None:
    """``/asyncapi`` (HTML) and ``/asyncapi.json``: the pipeline's document, built once."""
    from pipeline.asyncapi import PipelineDocument, pipeline_asyncapi

    built: list[PipelineDocument] = []

    def document() -> PipelineDocument:
        if not built:
            built.append(pipeline_asyncapi(settings, extra_brokers=[router.broker]))
        return built[0]

    @app.get("/asyncapi", response_class=HTMLResponse, include_in_schema=False)
    def asyncapi_page() -> HTMLResponse:
        return HTMLResponse(get_asyncapi_html(document(), try_it_out_path=None))

    @app.get("/asyncapi.json", include_in_schema=False)
    def asyncapi_json() -> JSONResponse:
        return JSONResponse(document().to_jsonable())


async def _undecoded(message: Any) -> None:
    """The projection reads each record itself: a dead letter may be any bytes."""
    return
