"""Order owners in the ingress's database (the :class:`~pipeline.ingress.owners.OrderOwners`
the API checks callers against), shared by its replicas.

Every replica of the owners' consumer group writes its share of ``orders.events`` into
the one table, so each replica knows every order's owner, and memory does not grow with
the orders. ``claim`` is an insert-if-absent: the first owner recorded stays, however
often and in whatever order the placement is seen again. The store is ``durable``: the
consumer commits its offsets and resumes from them.
"""

from __future__ import annotations

from sqlalchemy import select
from sqlalchemy.ext.asyncio import AsyncEngine

from pipeline.ingress.database.engine import database_errors
from pipeline.ingress.database.schema import order_owners
from pipeline.ingress.database.upsert import insert_into


class SqlOrderOwners:
    """Order id -> the customer who placed it, in ``order_owners``."""

    durable = True

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
        insert = insert_into(self._engine, order_owners).on_conflict_do_nothing(
            index_elements=[order_owners.c.order_id]
        )
        with database_errors():
            async with self._engine.begin() as connection:
                await connection.execute(insert, {"order_id": order_id, "customer_id": customer_id})
