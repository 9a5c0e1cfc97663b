"""``INSERT ... ON CONFLICT``, for whichever of the two supported dialects is in use.

SQLite and PostgreSQL spell the conditional upsert the same way (``ON CONFLICT (key) DO
UPDATE SET ... WHERE ...``, with ``excluded`` naming the row that was refused), and
SQLAlchemy gives both the same API; only the construct comes from the dialect.
"""

from __future__ import annotations

from sqlalchemy import Table
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.ext.asyncio import AsyncEngine


def insert_into(engine: AsyncEngine, table: Table) -> postgresql.Insert | sqlite.Insert:
    """An insert into ``table`` that supports ``on_conflict_do_update`` on ``engine``."""
    if engine.dialect.name == "postgresql":
        return postgresql.insert(table)
    return sqlite.insert(table)
