"""What an authenticated caller may do with an order.

A customer places orders for itself only (another customer id: 403) and changes or reads
only orders it placed. An order it did not place answers exactly like an order that does
not exist (404), so that order ids cannot be probed. The operator scope reads every
order; it changes none on anyone's behalf.
"""

from __future__ import annotations

from fastapi import HTTPException, status

from pipeline.ingress.auth import Principal
from pipeline.ingress.owners import OrderOwners
from schemas import OrderAmended, OrderCancelled, OrderPlaced

OrderEventIn = OrderPlaced | OrderAmended | OrderCancelled


def not_found(order_id: str) -> HTTPException:
    """The one answer for an order that is unknown or not the caller's."""
    return HTTPException(status.HTTP_404_NOT_FOUND, f"no outcome known for {order_id!r}")


async def check_may_submit(principal: Principal, event: OrderEventIn, owners: OrderOwners) -> None:
    """Raise 403 when ``event`` places an order for another customer (or under an order
    id another customer holds), 404 when it changes an order the caller did not place."""
    owner = await owners.owner_of(event.order_id)
    if isinstance(event, OrderPlaced):
        if not principal.may_act_for(event.customer_id) or (
            owner is not None and not principal.may_act_for(owner)
        ):
            raise HTTPException(
                status.HTTP_403_FORBIDDEN, "the token may not place orders for this customer"
            )
        return
    if principal.customer_id is not None and owner != principal.customer_id:
        raise not_found(event.order_id)


async def check_may_read(principal: Principal, order_id: str, owners: OrderOwners) -> None:
    """Raise 404 unless the caller may read ``order_id`` (its own, or every order)."""
    if principal.reads_all:
        return
    if not principal.may_read(await owners.owner_of(order_id)):
        raise not_found(order_id)
