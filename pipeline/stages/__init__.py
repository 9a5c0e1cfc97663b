"""The reference checkout flow: one module per stage, business logic only, declared on
the public stage API (:mod:`pipeline.stages.flow`)."""

from typing import Any

from pipeline.runtime.stage import StageSpec
from pipeline.stages import fulfil, pay, reserve, validate  # noqa: F401  (they declare)
from pipeline.stages.flow import checkout, checkout_services

ALL_STAGES: dict[str, StageSpec[Any, Any]] = dict(checkout.stages)
"""Stage name -> its spec, in flow order."""

__all__ = ["ALL_STAGES", "checkout", "checkout_services"]
