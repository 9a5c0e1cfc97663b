"""The reference checkout flow: one module per stage, business logic only, declared on
the public stage API (:mod:`pipeline.stages.flow`) with nothing but the package's public
names, the event models (:mod:`schemas`) and its own services."""

from pipeline.stages import fulfil, pay, reserve, validate  # noqa: F401  (they declare)
from pipeline.stages.flow import checkout, checkout_services

__all__ = ["checkout", "checkout_services"]
