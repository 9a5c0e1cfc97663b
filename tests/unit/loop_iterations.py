"""Counting event-loop iterations, for tests of what must happen in one of them."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager, suppress


class LoopIterations:
    """How many loop iterations have passed since counting began."""

    def __init__(self) -> None:
        self.count = 0

    async def run(self) -> None:
        """Count iterations until cancelled (``sleep(0)`` yields exactly one)."""
        while True:
            await asyncio.sleep(0)
            self.count += 1


@asynccontextmanager
async def counting_iterations() -> AsyncIterator[LoopIterations]:
    """Count loop iterations while the block runs."""
    iterations = LoopIterations()
    counter = asyncio.create_task(iterations.run())
    try:
        yield iterations
    finally:
        counter.cancel()
        with suppress(asyncio.CancelledError):
            await counter
