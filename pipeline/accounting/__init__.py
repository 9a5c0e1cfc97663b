"""The verifier of any pipeline: every event each stage read accounted for exactly once,
no duplicates, each key in order — derived from the stages as declared.

:mod:`.facts` takes what it needs from each stage's declaration, :mod:`.check` is the
rule (pure), :mod:`.reading` reads the records from the broker. The bundled checkout
keeps its own verifier (:mod:`pipeline.verify`), which also knows its order sequence.
"""

from pipeline.accounting.check import StageTrail, check_flow
from pipeline.accounting.facts import StageFacts, stage_facts
from pipeline.accounting.reading import verify_pipeline
from pipeline.accounting.report import FlowReport, StageReport

__all__ = [
    "FlowReport",
    "StageFacts",
    "StageReport",
    "StageTrail",
    "check_flow",
    "stage_facts",
    "verify_pipeline",
]
