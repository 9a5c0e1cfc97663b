"""The order API: ``POST /orders`` into the pipeline, ``GET /orders/{order_id}`` out of it.

One FastStream Kafka router for FastAPI carries both directions: its publisher writes
accepted events to ``orders.events`` keyed by order id, and its subscriber keeps the
status projection from ``orders.fulfilled`` and the dead-letter topics. The router's
lifespan starts and stops its broker with the FastAPI app. ``/docs`` is the OpenAPI
page, ``/asyncapi`` the AsyncAPI page of the whole pipeline, this API's channels
included. A second subscriber, in a consumer group of its own, learns each order's owner
from ``orders.events`` (:mod:`pipeline.ingress.owners`).

Order status, order owners and Idempotency-Keys live in a database
(:mod:`pipeline.ingress.database`: SQLite by default, PostgreSQL for several replicas),
readied in the app's lifespan around the router's; ``/health`` and ``/ready`` are
:mod:`pipeline.ingress.probes`.

Every order route needs a bearer token (:mod:`pipeline.ingress.auth`) and stays within
its caller's rate limit; what a caller may do is :mod:`pipeline.ingress.access`. Bodies
over ``max_body_bytes`` and the hardening headers are middlewares
(:mod:`pipeline.ingress.limits`).
"""

from __future__ import annotations

import asyncio
import logging
import warnings
from typing import Annotated, Any

from aiokafka.errors import KafkaError
from fastapi import (
    Body,
    Depends,
    FastAPI,
    Header,
    HTTPException,
    Request,
    Response,
    Security,
    status,
)
from fastapi.responses import HTMLResponse, JSONResponse
from faststream import AckPolicy
from faststream.specification import get_asyncapi_html
from pydantic import BaseModel

from pipeline.errors import ConfigurationError, DatabaseUnavailable
from pipeline.ingress.access import check_may_read, check_may_submit, not_found
from pipeline.ingress.auth import Principal, caller, verifier_from
from pipeline.ingress.database import (
    SqlIdempotencyStore,
    SqlOrderOwners,
    SqlProjectionStore,
    open_engine,
)
from pipeline.ingress.database.lifecycle import database_lifespan
from pipeline.ingress.idempotency import (
    IdempotencyStore,
    KeyInUse,
    KeyReused,
    fingerprint,
    publish_once,
)
from pipeline.ingress.limits import BodySizeLimit, RateLimiter, SecurityHeaders
from pipeline.ingress.owners import OrderOwners, order_owners, owner_group
from pipeline.ingress.probes import serve_probes
from pipeline.ingress.projection import OrderView, ProjectionStore
from pipeline.ingress.projector import OWNER_PROJECTION, ResumeFromStore, project, project_owners
from pipeline.ingress.settings import IngressSettings
from pipeline.kafka.connection import broker_security
from pipeline.kafka.internals import faststream_producer, pace_metadata_updates
from pipeline.kafka.topology import ORDERS_EVENTS, ORDERS_FULFILLED, STAGE_NAMES, Naming
from pipeline.settings import Settings
from schemas import OrderEvent, OrderPlaced

with warnings.catch_warnings():
    # FastStream 0.7.8 announces that this integration moves to the separate
    # `faststream-fastapi` package before 1.0; the pinned version still ships it.
    warnings.filterwarnings("ignore", "The integration has been moved", DeprecationWarning)
    from faststream.kafka.fastapi import KafkaMessage, KafkaRouter

log = logging.getLogger(__name__)

IDEMPOTENCY_KEY = "Idempotency-Key"
PROJECTION_FETCH_BYTES = 256 * 1024
"""Per partition and fetch, for the read side's consumers."""


class EventAccepted(BaseModel):
    """Kafka acknowledged the event; the pipeline takes it from here."""

    event_id: str


class Problem(BaseModel):
    """Why a request was refused."""

    detail: str


REFUSALS: dict[int | str, dict[str, Any]] = {
    401: {"model": Problem, "description": "No bearer token, or one that is not accepted"},
    413: {"model": Problem, "description": "The body is larger than the API takes"},
    429: {"model": Problem, "description": "Over the caller's rate limit; see Retry-After"},
}


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
    token_verifier = verifier_from(api)  # bad auth settings fail here, not on a request
    if api.idempotency_lease_s <= api.publish_timeout_s:
        raise ConfigurationError(
            "PIPELINE_API_IDEMPOTENCY_LEASE_S must exceed PIPELINE_API_PUBLISH_TIMEOUT_S: "
            "a key's lease must outlast the publish it guards"
        )
    engine = open_engine(api)  # a bad database URL fails here, not on a request
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

    @router.after_startup
    async def pace_publishes(_: FastAPI) -> None:
        # an outage must not spin the API: see pace_metadata_updates
        pace_metadata_updates(faststream_producer(router.broker))

    placed = naming.topic(ORDERS_EVENTS)
    events = router.publisher(
        placed,
        schema=OrderEvent,
        title=f"{placed}:ingress",
        description="Order events accepted over HTTP, keyed by order id.",
    )
    fulfilled = naming.topic(ORDERS_FULFILLED)

    resume = ResumeFromStore(lambda: projecting.consumer, lambda: app.state.projection)
    projecting = router.subscriber(
        fulfilled,
        *(naming.dead_letter(stage) for stage in STAGE_NAMES),
        group_id=naming.group(api.projection_group),
        auto_offset_reset="earliest",
        batch=True,
        max_records=api.projection_batch,
        # The projection is bound by its database, not by fetching: small fetches keep
        # the prefetched backlog (up to 1 MiB per partition by default, 60 partitions
        # here) from setting the process's memory while it catches up.
        max_partition_fetch_bytes=PROJECTION_FETCH_BYTES,
        fetch_max_bytes=4 * PROJECTION_FETCH_BYTES,
        # The store holds the offsets (applied with the views, one transaction) and
        # `resume` seeks to them; Kafka's commits follow the store's, for lag only.
        ack_policy=AckPolicy.MANUAL,
        listener=resume,
        decoder=_undecoded,
        title=f"{fulfilled}:ingress-projection",
        description="Keeps each order's latest status for GET /orders/{order_id}.",
    )

    @projecting
    async def project_outcomes(
        message: KafkaMessage,
        store: Annotated[ProjectionStore, Depends(projection_store)],
    ) -> None:
        await project(message, store, fulfilled)

    owner_resume = ResumeFromStore(
        lambda: learning.consumer, lambda: app.state.owners, OWNER_PROJECTION
    )
    learning = router.subscriber(
        placed,
        # A group of its own, apart from the status projection's: each replica writes
        # its share of the partitions into the shared owners table.
        group_id=naming.group(owner_group(api)),
        auto_offset_reset="earliest",
        batch=True,
        max_records=api.projection_batch,
        max_partition_fetch_bytes=PROJECTION_FETCH_BYTES,
        fetch_max_bytes=4 * PROJECTION_FETCH_BYTES,
        ack_policy=AckPolicy.MANUAL,  # as the status projection: the store holds the offsets
        listener=owner_resume,
        decoder=_undecoded,
        title=f"{placed}:ingress-owners",
        description="Keeps each order's owner (the customer of its OrderPlaced).",
    )

    @learning
    async def learn_owners(
        message: KafkaMessage,
        owners: Annotated[OrderOwners, Depends(order_owners)],
    ) -> None:
        await project_owners(message, owners)

    @router.post(
        "/orders",
        status_code=status.HTTP_202_ACCEPTED,
        response_model=EventAccepted,
        responses={
            **REFUSALS,
            403: {"model": Problem, "description": "The order is another customer's"},
            404: {"model": Problem, "description": "No order of the caller's has this id"},
            409: {
                "model": Problem,
                "description": "Idempotency-Key reused with another body, or still in use",
            },
            503: {"model": Problem, "description": "Kafka or the database did not answer"},
        },
        summary="Submit an order event",
    )
    async def submit_event(
        event: Annotated[OrderEvent, Body()],
        response: Response,
        principal: Annotated[Principal, Security(caller)],
        keys: Annotated[IdempotencyStore, Depends(idempotency_store)],
        owners: Annotated[OrderOwners, Depends(order_owners)],
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
        await check_may_submit(principal, event, owners)
        response.headers["Location"] = f"/orders/{event.order_id}"
        if idempotency_key is None:
            await _publish(events, event, api.publish_timeout_s)
            await _remember_owner(owners, event)
            return EventAccepted(event_id=event.event_id)
        # Each customer has its own key space: one cannot replay or block another's keys.
        scoped_key = f"{principal.customer_id or ''}\x1f{idempotency_key}"

        async def publish() -> None:
            await _publish(events, event, api.publish_timeout_s)
            await _remember_owner(owners, event)

        try:
            # A request finding the key held elsewhere waits for that answer as long as
            # a publish may take.
            answer = await publish_once(
                keys,
                scoped_key,
                fingerprint(event),
                event.event_id,
                publish,
                wait_s=api.publish_timeout_s,
            )
        except KeyReused as exc:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"{IDEMPOTENCY_KEY} {idempotency_key!r} was used for another body",
            ) from exc
        except KeyInUse as exc:
            raise HTTPException(
                status.HTTP_409_CONFLICT,
                f"{IDEMPOTENCY_KEY} {idempotency_key!r} is held by a request still in "
                "progress; retry shortly",
            ) from exc
        if answer.replayed:
            response.headers["Idempotent-Replayed"] = "true"
        return EventAccepted(event_id=answer.event_id)

    @router.get(
        "/orders/{order_id}",
        response_model=OrderView,
        responses={
            **REFUSALS,
            404: {"model": Problem, "description": "No outcome known for an order of the caller"},
        },
        summary="The order's latest known status",
    )
    async def order_status(
        order_id: str,
        principal: Annotated[Principal, Security(caller)],
        store: Annotated[ProjectionStore, Depends(projection_store)],
        owners: Annotated[OrderOwners, Depends(order_owners)],
    ) -> OrderView:
        """The status of the order's newest event that left the pipeline; the caller's
        own orders only, unless its token has the operator scope."""
        await check_may_read(principal, order_id, owners)
        view = await store.get(order_id)
        if view is None:
            raise not_found(order_id)
        return view

    remembered_keys = SqlIdempotencyStore(engine, api.idempotency_ttl_s, api.idempotency_lease_s)
    app = FastAPI(
        title="order-pipeline ingress",
        description="Order events in, order status out. AsyncAPI of the pipeline: /asyncapi.",
        lifespan=database_lifespan(engine, remembered_keys, migrate=api.database_migrate),
    )
    app.state.database = engine
    app.state.broker = router.broker  # publishes the accepted orders
    app.state.projection = SqlProjectionStore(engine)
    app.state.idempotency = remembered_keys
    app.state.projection_assignment = resume
    app.state.owners = SqlOrderOwners(engine)
    app.state.owner_assignment = owner_resume
    app.state.token_verifier = token_verifier
    app.state.rate_limiter = RateLimiter(api.rate_limit_per_s, api.rate_limit_burst)
    app.include_router(router)
    _serve_asyncapi(app, settings, router)
    serve_probes(app, engine, api.database_timeout_s)
    # The last added runs first: every answer, a 413 included, gets the headers.
    app.add_middleware(BodySizeLimit, max_bytes=api.max_body_bytes)
    app.add_middleware(SecurityHeaders)
    return app


async def _remember_owner(owners: OrderOwners, event: BaseModel) -> None:
    """The customer's next request must find its order before orders.events is read."""
    if not isinstance(event, OrderPlaced):
        return
    try:
        await owners.claim(event.order_id, event.customer_id)
    except DatabaseUnavailable as exc:
        # Kafka has the event: the owner projection records its owner from
        # orders.events once the database answers, so the 202 stands.
        log.warning("owner of %s left to the owner projection: %s", event.order_id, exc)


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
