"""Order owners in the ingress's database (the :class:`~pipeline.ingress.owners.OrderOwners`
the API checks callers against), shared by its replicas.

Every replica of the owner projection's consumer group writes its share of
``orders.events`` into the one table, so each replica knows every order's owner, and
memory does not grow with the orders. ``claim`` is an insert-if-absent: the first owner
recorded stays, however often and in whatever order the placement is seen again.
``apply`` writes a batch's owners and its offsets (``owner_offsets``, apart from the
status projection's) in one transaction, so the consumer resumes exactly after the
records whose owners are stored.
"""

from __future__ import annotations

from collections.abc import Collection, Mapping
from typing import Any

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.ingress.database.engine import database_errors
from pipeline.ingress.database.offsets import advance_offsets, read_offsets
from pipeline.ingress.database.schema import order_owners, owner_offsets
from pipeline.ingress.database.upsert import insert_into
from pipeline.ingress.projection import Partition


class SqlOrderOwners:
    """Order id -> the customer who placed it in ``order_owners``; offsets read in
    ``owner_offsets``."""

    def __init__(self, engine: AsyncEngine) -> None:
        self._engine = engine

    async def owner_of(self, order_id: str) -> str | None:
        """The customer who placed the order: one primary-key lookup."""
        query = select(order_owners.c.customer_id).where(order_owners.c.order_id == order_id)
        with database_errors():
            async with self._engine.connect() as connection:
                owner: str | None = (await connection.execute(query)).scalar()
        return owner

    async def claim(self, order_id: str, customer_id: str) -> None:
        """Record the owner unless the order has one already."""
        await self.apply({order_id: customer_id}, {})

    async def apply(self, owners: Mapping[str, str], applied: Mapping[Partition, int]) -> None:
        """Insert each owner unless its order has one, and move the offsets forward, in
        one transaction."""
        rows = [
            {"order_id": order_id, "customer_id": customer_id}
            for order_id, customer_id in owners.items()
        ]
        with database_errors():
            async with self._engine.begin() as connection:
                if rows:
                    await connection.execute(self._insert_if_absent(), rows)
                await advance_offsets(connection, owner_offsets, applied)

    async def applied_offsets(self, topics: Collection[str]) -> dict[Partition, int]:
        """The stored offsets of the partitions of ``topics``."""
        return await read_offsets(self._engine, owner_offsets, topics)

    def _insert_if_absent(self) -> Any:
        return insert_into(self._engine, order_owners).on_conflict_do_nothing(
            index_elements=[order_owners.c.order_id]
        )
