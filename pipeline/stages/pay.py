"""pay: charges reserved orders, refunds cancelled ones."""

from __future__ import annotations

from pipeline import Depends
from pipeline.stages.flow import checkout, checkout_services
from pipeline.stages.services import Services
from schemas import OrderCancelled, OrderProgress, OrderStatus


@checkout.stage(
    source="orders.reserved",
    sink="orders.paid",
    identify=lambda order: order.event.event_id,
    description="Charges customers through the payment gateway.",
)
async def pay(
    order: OrderProgress, services: Services = Depends(checkout_services)
) -> OrderProgress:
    """Charge through the payment gateway; the event id makes the charge idempotent."""
    event = order.event
    if isinstance(event, OrderCancelled):
        await services.payment.refund(event.order_id, idempotency_key=event.event_id)
        return order
    if order.status is not OrderStatus.RESERVED:
        return order
    result = await services.payment.charge(
        event.order_id, order.total_cents, idempotency_key=event.event_id
    )
    if result.payment_id is None:
        return order.advance(OrderStatus.DECLINED, reason=result.declined_reason)
    return order.advance(OrderStatus.PAID, payment_id=result.payment_id)
