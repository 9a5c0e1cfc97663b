"""The status projection in the ingress's database.

``apply`` writes a batch in one transaction: each view as a conditional upsert whose
``WHERE`` is the negation of :func:`~pipeline.ingress.projection.supersedes` (so a
redelivered record or a replica still finishing a revoked partition can never move a
view backwards), then the batch's offsets, which only ever move forward. Views and
offsets commit together: whatever the consumer resumes from, the views include exactly
the records below it.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping, Sequence
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import and_, or_, select
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.ingress.database.engine import database_errors
from pipeline.ingress.database.offsets import advance_offsets, read_offsets
from pipeline.ingress.database.schema import order_status, projection_offsets
from pipeline.ingress.database.upsert import insert_into
from pipeline.ingress.projection import OrderView, Partition, newest_per_order


class SqlProjectionStore:
    """Order views and applied offsets in ``order_status`` and ``projection_offsets``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def get(self, order_id: str) -> OrderView | None:
        """The order's view: one primary-key lookup."""
        query = select(order_status).where(order_status.c.order_id == order_id)
        with database_errors():
            async with self._engine.connect() as connection:
                row = (await connection.execute(query)).mappings().first()
        return None if row is None else _view_of(row)

    async def apply(self, views: Sequence[OrderView], applied: Mapping[Partition, int]) -> None:
        """Upsert the newest view per order unless the stored one supersedes it, and move
        the offsets forward, in one transaction."""
        rows = [_row_of(view) for view in newest_per_order(views)]
        with database_errors():
            async with self._engine.begin() as connection:
                if rows:
                    await connection.execute(self._upsert_views(), rows)
                await advance_offsets(connection, projection_offsets, applied)

    async def applied_offsets(self, topics: Collection[str]) -> dict[Partition, int]:
        """The stored offsets of the partitions of ``topics``."""
        return await read_offsets(self._engine, projection_offsets, topics)

    def _upsert_views(self) -> Any:
        insert = insert_into(self._engine, order_status)
        new, current = insert.excluded, order_status.c
        keep_current = or_(
            current.sequence > new.sequence,
            and_(current.sequence == new.sequence, current.updated_at_ms > new.updated_at_ms),
        )
        return insert.on_conflict_do_update(
            index_elements=[current.order_id],
            set_={
                column.name: new[column.name]
                for column in order_status.c
                if column.name != "order_id"
            },
            where=~keep_current,
        )


def _row_of(view: OrderView) -> dict[str, Any]:
    row = view.model_dump(exclude={"updated_at"})
    row["updated_at_ms"] = round(view.updated_at.timestamp() * 1000)
    return row


def _view_of(row: Mapping[Any, Any]) -> OrderView:
    fields = {name: value for name, value in row.items() if name != "updated_at_ms"}
    fields["updated_at"] = datetime.fromtimestamp(row["updated_at_ms"] / 1000, UTC)
    return OrderView.model_validate(fields)
