"""Applied offsets in the ingress's database: how far each of its consumers has read.

Each consumer that builds state from Kafka (the status projection, the owner projection)
keeps, per topic-partition, the highest offset whose record its rows include, in a table
of its own, written in the same transaction as those rows. The offsets only move
forward: a replica still finishing a partition that was revoked from it cannot move the
position back.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import Table, select
from sqlalchemy.ext.asyncio import AsyncConnection, AsyncEngine

from pipeline.ingress.database.engine import database_errors
from pipeline.ingress.database.upsert import insert_into
from pipeline.ingress.projection import Partition


async def advance_offsets(
    connection: AsyncConnection, table: Table, applied: Mapping[Partition, int]
) -> None:
    """Move each partition's offset in ``table`` up to ``applied``'s, never down (within
    the caller's transaction)."""
    if not applied:
        return
    rows = [
        {"topic": topic, "partition": partition, "applied_offset": offset}
        for (topic, partition), offset in applied.items()
    ]
    await connection.execute(_forward_only(connection.engine, table), rows)


async def read_offsets(
    engine: AsyncEngine, table: Table, topics: Collection[str]
) -> dict[Partition, int]:
    """The offsets ``table`` holds for the partitions of ``topics``."""
    query = select(table).where(table.c.topic.in_(list(topics)))
    with database_errors():
        async with engine.connect() as connection:
            found = (await connection.execute(query)).all()
    return {(row.topic, row.partition): row.applied_offset for row in found}


def _forward_only(engine: AsyncEngine, table: Table) -> Any:
    insert = insert_into(engine, table)
    return insert.on_conflict_do_update(
        index_elements=[table.c.topic, table.c.partition],
        set_={"applied_offset": insert.excluded.applied_offset},
        where=insert.excluded.applied_offset > table.c.applied_offset,
    )
