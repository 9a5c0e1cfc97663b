"""HTTP ingress: order events in over HTTP, order status out of a Kafka projection kept
in a database."""

from pipeline.ingress.app import create_ingress, idempotency_store, projection_store
from pipeline.ingress.database import SqlIdempotencyStore, SqlProjectionStore
from pipeline.ingress.idempotency import IdempotencyStore, InMemoryIdempotencyStore
from pipeline.ingress.projection import InMemoryProjectionStore, OrderView, ProjectionStore
from pipeline.ingress.settings import IngressSettings

__all__ = [
    "IdempotencyStore",
    "InMemoryIdempotencyStore",
    "InMemoryProjectionStore",
    "IngressSettings",
    "OrderView",
    "ProjectionStore",
    "SqlIdempotencyStore",
    "SqlProjectionStore",
    "create_ingress",
    "idempotency_store",
    "projection_store",
]
