"""The reference checkout flow: one module per stage, business logic only."""

from pipeline.runtime.stage import StageSpec
from pipeline.stages import fulfil, pay, reserve, validate

ALL_STAGES: dict[str, StageSpec] = {  # type: ignore[type-arg]
    module.STAGE.name: module.STAGE for module in (validate, reserve, pay, fulfil)
}
"""Stage name -> its spec, in flow order."""

__all__ = ["ALL_STAGES"]
