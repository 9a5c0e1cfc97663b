"""The ingress's tables, the one place they are declared.

``order_status`` holds one view per order, ``projection_offsets`` the highest offset of
each topic-partition whose records those views include (both written in one
transaction), ``idempotency_keys`` one row per ``Idempotency-Key``, ``order_owners`` the
customer who placed each order and ``owner_offsets`` how far the owner projection read
``orders.events`` (again in one transaction with the owners). Times are integer
milliseconds since the epoch: Kafka's record timestamps are, and integers compare the
same way on every database (a ``supersedes`` comparison must never depend on how a
dialect stores a time zone). The migrations in ``migrations/versions`` create exactly
this; ``tests/unit/test_ingress_migrations.py`` fails when the two differ.
"""

from __future__ import annotations

from sqlalchemy import BigInteger, Column, Integer, MetaData, String, Table, Text

VERSION_TABLE = "ingress_schema_version"
"""Alembic's bookkeeping table, named so it cannot clash with another tool's."""

metadata = MetaData()

order_status = Table(
    "order_status",
    metadata,
    Column("order_id", String(255), primary_key=True),
    Column("status", String(32), nullable=False),
    Column("event_id", String(255)),
    Column("sequence", BigInteger, nullable=False),
    Column("kind", String(64)),
    Column("reason", Text),
    Column("stage", String(64)),
    Column("updated_at_ms", BigInteger, nullable=False),
)

projection_offsets = Table(
    "projection_offsets",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("applied_offset", BigInteger, nullable=False),
)

idempotency_keys = Table(
    "idempotency_keys",
    metadata,
    Column("idempotency_key", Text, primary_key=True),
    Column("fingerprint", String(64), nullable=False),
    Column("holder", String(32), nullable=False),
    Column("event_id", String(255)),
    Column("lease_until_ms", BigInteger, nullable=False),
    Column("expires_at_ms", BigInteger, nullable=False, index=True),
)

order_owners = Table(
    "order_owners",
    metadata,
    Column("order_id", String(255), primary_key=True),
    Column("customer_id", String(255), nullable=False),
)

owner_offsets = Table(
    "owner_offsets",
    metadata,
    Column("topic", String(255), primary_key=True),
    Column("partition", Integer, primary_key=True, autoincrement=False),
    Column("applied_offset", BigInteger, nullable=False),
)
