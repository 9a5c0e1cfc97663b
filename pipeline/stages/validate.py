"""validate: checks an incoming order event and turns it into an order in progress.

Schema problems never reach this handler (the runtime dead-letters them); what is left
are business rules, whose failures are outcomes (``rejected``) that flow on.
"""

from __future__ import annotations

from pipeline import Depends
from pipeline.stages.flow import checkout, checkout_services
from pipeline.stages.services import Services
from schemas import OrderCancelled, OrderEvent, OrderProgress, OrderStatus, order_total_cents

MAX_ORDER_TOTAL_CENTS = 5_000_000
ACCEPTED_CURRENCIES = frozenset({"EUR", "USD", "GBP"})


@checkout.stage(
    source="orders.events",
    sink="orders.validated",
    identify=lambda event: event.event_id,
    description="Checks order events against the store's rules.",
)
async def validate(
    event: OrderEvent, services: Services = Depends(checkout_services)
) -> OrderProgress:
    """Accept the event or reject it with a reason."""
    if isinstance(event, OrderCancelled):
        return OrderProgress(event=event, status=OrderStatus.VALIDATED)
    total = order_total_cents(event.items)
    reason = None
    if total > MAX_ORDER_TOTAL_CENTS:
        reason = "order total above limit"
    elif getattr(event, "currency", "EUR") not in ACCEPTED_CURRENCIES:
        reason = "currency not accepted"
    if reason is not None:
        return OrderProgress(
            event=event, status=OrderStatus.REJECTED, total_cents=total, reason=reason
        )
    return OrderProgress(event=event, status=OrderStatus.VALIDATED, total_cents=total)
