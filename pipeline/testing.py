"""Test doubles for a stage's contract, used with FastStream's ``TestKafkaBroker``.

``TestKafkaBroker`` has no offsets, commits or concurrency: it checks what a stage turns
an input into, never how the pipeline behaves on a real broker.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable
from functools import partial
from typing import Any

from faststream.kafka import KafkaBroker

from pipeline.failures.provenance import Headers


class BrokerSink:
    """Publishes a stage's outputs through the (in-memory) FastStream broker."""

    def __init__(self, broker: KafkaBroker) -> None:
        self._broker = broker

    def bind(self, on_delivered: Callable[[list[Any], asyncio.Future[Any]], None]) -> None:
        """Remember the engine's delivery callback."""
        self._on_delivered = on_delivered

    def append(
        self, topic: str, key: bytes | None, value: bytes, headers: Headers, receipt: Any
    ) -> None:
        """Publish in the background; the publish is the delivery future."""
        publish = self._broker.publish(
            value,
            topic,
            key=key,
            headers={name: raw.decode(errors="replace") for name, raw in headers},
        )
        delivery = asyncio.ensure_future(publish)
        delivery.add_done_callback(partial(self._on_delivered, [receipt]))
