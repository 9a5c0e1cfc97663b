"""The event loop every pipeline process runs on: uvloop where it exists.

uvloop roughly halves the cost of the timers and task switches a waiting handler
causes (measured in ``pipeline bench``'s io scenario); asyncio's loop is the fallback.
"""

from __future__ import annotations

import asyncio
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
