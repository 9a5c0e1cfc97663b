"""The checkout flow's :class:`~pipeline.Pipeline`, and the services its stages use.

Each stage module declares its stage on :data:`checkout` with ``@checkout.stage``, the
way a user's pipeline does; the services come in through ``Depends(checkout_services)``,
which every app built by :func:`pipeline.app.create_app` overrides with its own
(simulated, or a test's fakes).
"""

from __future__ import annotations

from pipeline import Pipeline
from pipeline.stages.services import Services

checkout = Pipeline("checkout", description="An online store's checkout.")


def checkout_services() -> Services:
    """The inventory and payment services (the app provides them)."""
    raise RuntimeError("the checkout's services are provided by the app (create_app)")
