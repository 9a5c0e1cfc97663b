"""Test doubles for a stage's contract, used with FastStream's ``TestKafkaBroker``.

``TestKafkaBroker`` has no offsets, commits or concurrency: it checks what a stage turns
an input into, never how the pipeline behaves on a real broker.
"""

from __future__ import annotations

import asyncio
from typing import Any

from faststream.kafka import KafkaBroker

from pipeline.failures.provenance import Headers


class BrokerSink:
    """Publishes a stage's outputs through the (in-memory) FastStream broker."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    async def send(
        self, topic: str, value: bytes, key: bytes | None, headers: Headers
    ) -> asyncio.Future[Any]:
        """Start the publish and return it as the delivery future (like a producer)."""
        return asyncio.ensure_future(
            self._broker.publish(
                value,
                topic,
                key=key,
                headers={name: raw.decode(errors="replace") for name, raw in headers},
            )
        )
