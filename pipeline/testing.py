"""Test doubles for a stage's contract, used with FastStream's ``TestKafkaBroker``.

``TestKafkaBroker`` has no offsets, commits or concurrency: it checks what a stage turns
an input into, never how the pipeline behaves on a real broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from typing import Any

from faststream.kafka import KafkaBroker

from pipeline.failures.provenance import Headers


class BrokerSink:
    """Publishes a stage's outputs through the (in-memory) FastStream broker."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    def append(
        self,
        topic: str,
        key: bytes | None,
        value: bytes,
        headers: Headers,
        on_delivered: Callable[[asyncio.Future[Any]], None],
    ) -> None:
        """Publish in the background; the publish is the delivery future."""
        publish = self._broker.publish(
            value,
            topic,
            key=key,
            headers={name: raw.decode(errors="replace") for name, raw in headers},
        )
        asyncio.ensure_future(publish).add_done_callback(on_delivered)
