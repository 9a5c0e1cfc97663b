"""A Kafka stream-processing runtime on FastStream: write stages as typed handlers, get
per-key order, retries that never reorder a key, dead letters with provenance,
exactly-once hops, traces and metrics.

The public surface is what ``__all__`` names (guarded by ``tests/unit/test_public_api.py``);
everything else in the package may change. See ``docs/guide.md``.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from pipeline.api import Depends, Pipeline
    from pipeline.errors import FatalError, RetryableError
    from pipeline.failures.verdict import Verdict
    from pipeline.runtime.outputs import Output

__all__ = ["Depends", "FatalError", "Output", "Pipeline", "RetryableError", "Verdict"]

# Imported on first use, so that `import pipeline.<module>` (the CLI, the engine's pure
# core) does not load the whole runtime.
_WHERE = {
    "Depends": "pipeline.api",
    "Pipeline": "pipeline.api",
    "FatalError": "pipeline.errors",
    "RetryableError": "pipeline.errors",
    "Verdict": "pipeline.failures.verdict",
    "Output": "pipeline.runtime.outputs",
}


def __getattr__(name: str) -> Any:
    module = _WHERE.get(name)
    if module is None:
        raise AttributeError(f"module 'pipeline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    submodules = [name for name, value in globals().items() if isinstance(value, type(importlib))]
    return sorted({*__all__, *submodules} - {"importlib"})
