"""reserve: holds stock for placed and amended orders, releases it for cancelled ones."""

from __future__ import annotations

from pipeline import Depends
from pipeline.stages.flow import checkout, checkout_services
from pipeline.stages.services import Services
from schemas import OrderCancelled, OrderProgress, OrderStatus


@checkout.stage(
    source="orders.validated",
    sink="orders.reserved",
    identify=lambda order: order.event.event_id,
    description="Holds stock through the inventory service.",
)
async def reserve(
    order: OrderProgress, services: Services = Depends(checkout_services)
) -> OrderProgress:
    """Reserve or release stock through the inventory service."""
    event = order.event
    if isinstance(event, OrderCancelled):
        await services.inventory.release(event.order_id)
        return order.advance(OrderStatus.CANCELLED)
    if order.status is not OrderStatus.VALIDATED:
        return order
    reservation = await services.inventory.reserve(event.order_id, event.items)
    if reservation.reservation_id is None:
        return order.advance(
            OrderStatus.OUT_OF_STOCK, reason=f"out of stock: {reservation.out_of_stock_sku}"
        )
    return order.advance(OrderStatus.RESERVED, reservation_id=reservation.reservation_id)
