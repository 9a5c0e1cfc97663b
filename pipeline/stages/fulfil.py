"""fulfil: invoices and ships paid orders; every event leaves the pipeline here."""

from __future__ import annotations

from pipeline.kafka.topology import ORDERS_FULFILLED, ORDERS_PAID
from pipeline.runtime.stage import StageSpec
from pipeline.services import Services
from schemas import OrderProgress, OrderStatus


async def fulfil(order: OrderProgress, services: Services) -> OrderProgress:
    """Issue the invoice and the shipment (ids derived from the event, so replays match)."""
    if order.status is not OrderStatus.PAID:
        return order
    event_id = order.event.event_id
    return order.advance(
        OrderStatus.FULFILLED, invoice_id=f"inv-{event_id}", shipment_id=f"shp-{event_id}"
    )


STAGE: StageSpec[OrderProgress, OrderProgress] = StageSpec(
    name="fulfil",
    source=ORDERS_PAID,
    sink=ORDERS_FULFILLED,
    input_type=OrderProgress,
    identify=lambda order: order.event.event_id,
    handler=fulfil,
    output_type=OrderProgress,
    description="Invoices and ships paid orders.",
)
