"""fulfil: invoices and ships paid orders; every event leaves the pipeline here."""

from __future__ import annotations

from pipeline import Depends
from pipeline.stages.flow import checkout, checkout_services
from pipeline.stages.services import Services
from schemas import OrderProgress, OrderStatus


@checkout.stage(
    source="orders.paid",
    sink="orders.fulfilled",
    identify=lambda order: order.event.event_id,
    description="Invoices and ships paid orders.",
)
async def fulfil(
    order: OrderProgress, services: Services = Depends(checkout_services)
) -> OrderProgress:
    """Issue the invoice and the shipment (ids derived from the event, so replays match)."""
    if order.status is not OrderStatus.PAID:
        return order
    event_id = order.event.event_id
    return order.advance(
        OrderStatus.FULFILLED, invoice_id=f"inv-{event_id}", shipment_id=f"shp-{event_id}"
    )
