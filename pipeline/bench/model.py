"""The benchmark's event and its four-hop chain of trivial (or 5 ms) stages."""

from __future__ import annotations

import asyncio
from collections.abc import Mapping
from typing import Any

from pydantic import BaseModel

from pipeline.runtime.stage import StageSpec

HOPS = 4
PAYLOAD = "x" * 200  # with the other fields, about 300 bytes of JSON like an order


def hop_topic(index: int) -> str:
    """Topic read by hop ``index`` (the last hop writes ``hop_topic(HOPS)``)."""
    return f"bench.hop{index}"


class BenchEvent(BaseModel):
    """One benchmark event: a key, its per-key sequence and its creation time."""

    key: str
    seq: int
    created: float
    payload: str = PAYLOAD


async def forward(event: BenchEvent, services: Any) -> BenchEvent:
    """A trivial handler: the event goes on unchanged."""
    return event


def waiting_forward(delay_s: float):  # type: ignore[no-untyped-def]
    """A handler that waits ``delay_s`` (a stand-in for a remote call) and forwards."""

    async def wait_then_forward(event: BenchEvent, services: Any) -> BenchEvent:
        await asyncio.sleep(delay_s)
        return event

    return wait_then_forward


def batched_bench_catalog(delay_ms: float) -> Mapping[str, StageSpec[Any, Any]]:
    """The four hops as batched stages on the public API: each call waits ``delay_ms``
    once for all its events (one bulk remote call) and forwards them."""
    from pipeline.api import Pipeline

    pipeline = Pipeline("bench")
    delay_s = delay_ms / 1000
    for i in range(HOPS):

        async def bulk_forward(events: list[BenchEvent]) -> list[BenchEvent]:
            if delay_s:
                await asyncio.sleep(delay_s)
            return events

        pipeline.stage(source=hop_topic(i), sink=hop_topic(i + 1), name=f"hop{i}")(bulk_forward)
    return pipeline.stages


def bench_catalog(delay_ms: float) -> dict[str, StageSpec[BenchEvent, BenchEvent]]:
    """The four hops as stage specs for the pipeline's own engine."""
    handler = waiting_forward(delay_ms / 1000) if delay_ms else forward
    return {
        f"hop{i}": StageSpec(
            name=f"hop{i}",
            source=hop_topic(i),
            sink=hop_topic(i + 1),
            input_type=BenchEvent,
            handler=handler,
        )
        for i in range(HOPS)
    }
