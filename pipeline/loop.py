"""The event loop every pipeline process runs on (uvloop where it exists), and what
such a process does with its start-up heap.

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


def freeze_startup_heap() -> None:
    """Move everything built so far (modules, models, the app) out of the garbage
    collector's generations.

    It lives as long as the process, yet every full collection walked it again. Events
    a handler waits on (a batched stage holds hundreds across a call) survive young
    collections and trigger full ones: frozen, the start-up heap costs them nothing
    (``gc.freeze``; measured in docs/benchmarks.md).
    """
    gc.collect()
    gc.freeze()
