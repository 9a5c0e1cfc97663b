"""The ingress's state in a database: order status and Idempotency-Keys.

SQLite (embedded, the default) or PostgreSQL (several replicas) through one code path on
SQLAlchemy's asyncio engine; the schema is :mod:`~pipeline.ingress.database.schema`,
migrated by Alembic (:mod:`~pipeline.ingress.database.migrate`).
"""

from pipeline.ingress.database.engine import database_errors, database_url, masked, open_engine
from pipeline.ingress.database.idempotency import SqlIdempotencyStore
from pipeline.ingress.database.migrate import current_revision, head_revision, upgrade
from pipeline.ingress.database.owners import SqlOrderOwners
from pipeline.ingress.database.projection import SqlProjectionStore

__all__ = [
    "SqlIdempotencyStore",
    "SqlOrderOwners",
    "SqlProjectionStore",
    "current_revision",
    "database_errors",
    "database_url",
    "head_revision",
    "masked",
    "open_engine",
    "upgrade",
]
