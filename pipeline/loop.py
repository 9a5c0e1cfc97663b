"""The event loop every pipeline process runs on (uvloop where it exists), and how such a
process sets up the garbage collector.

uvloop roughly halves the cost of the timers and task switches a waiting handler
causes (measured in ``pipeline bench``'s io scenario); asyncio's loop is the fallback.
"""

from __future__ import annotations

import asyncio
import gc
from collections.abc import Coroutine
from typing import Any, TypeVar

Result = TypeVar("Result")


def run(main: Coroutine[Any, Any, Result]) -> Result:
    """Run ``main`` to completion on uvloop if installed, else on asyncio's loop."""
    try:
        import uvloop
    except ImportError:  # e.g. Windows
        return asyncio.run(main)
    return uvloop.run(main)


YOUNG_COLLECTION_THRESHOLD = 20_000
"""Net container allocations between young collections (CPython's default: 2,000)."""


def tune_garbage_collector() -> None:
    """Freeze everything built so far and collect young objects less often.

    Modules, models and the app live as long as the process, yet every full collection
    walked them again: ``gc.freeze`` moves them out of the collector's generations. And
    a stage keeps its in-flight records alive (a batched stage holds hundreds across a
    call): with CPython's default threshold every 2,000 net allocations, young
    collections kept walking them and promoting them, and the older generations
    collected them again. A stage allocates and frees in balance, so at 20,000 the
    collector runs when cyclic garbage has really built up — a few times a run, not
    hundreds (docs/benchmarks.md, "Batched handlers": one batched hop, 200,000 events,
    0.20 s in the collector before and 0.004 s after; with the conditions interleaved,
    ``cpu`` +7 % and batched ``io`` +13 % events/s). What the process built before this
    call (imports, the app, the user's module) is never collected again.
    """
    gc.collect()
    gc.freeze()
    _, older, oldest = gc.get_threshold()
    gc.set_threshold(YOUNG_COLLECTION_THRESHOLD, older, oldest)
