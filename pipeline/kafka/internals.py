"""Every reach into aiokafka's and FastStream's private internals, in one place.

The pipeline needs a few things neither library offers publicly. Each is wrapped here,
and ``tests/unit/test_internals.py`` checks, without a broker, that the installed
versions still have what these wrappers read — so an upgrade that moves them fails a
unit test loudly instead of a running stage quietly. The dependency ranges in
``pyproject.toml`` and the lock file pin versions known to work.

- :func:`fetch_position`: the consumer's next fetch offset, past transaction markers,
  without the network round trip of ``AIOKafkaConsumer.position()`` (which also waits
  for a position that a rebalance is resetting); read from ``consumer._subscription``.
- :data:`TRANSACTION_STATE_ERRORS`: aiokafka's transaction manager ``assert``s on a
  state change that is not allowed (aborting a transaction that a fence already
  ended); callers that give a producer up treat it as "already ended".
- :func:`open_connection`: one raw connection (``aiokafka.conn.create_conn``), to tell
  a SASL refusal from a missing broker.
- :func:`skip_decoding`: a FastStream batch decoder that returns ``None``, so FastStream
  does not build a message object per record the engine decodes itself.
"""

from __future__ import annotations

from typing import Any

from aiokafka import AIOKafkaConsumer
from aiokafka.conn import create_conn
from aiokafka.structs import TopicPartition

from pipeline.errors import ConfigurationError

__all__ = [
    "TRANSACTION_STATE_ERRORS",
    "InternalsChanged",
    "fetch_position",
    "open_connection",
    "skip_decoding",
]


class InternalsChanged(ConfigurationError):
    """An installed aiokafka or FastStream no longer has an internal the pipeline reads:
    the stage stops (and reports not ready) instead of guessing."""


TRANSACTION_STATE_ERRORS: tuple[type[BaseException], ...] = (AssertionError,)
"""What aiokafka raises for a transaction state change it does not allow."""

open_connection = create_conn
"""``aiokafka.conn.create_conn``: one connection to one broker."""


def fetch_position(consumer: AIOKafkaConsumer, partition: TopicPartition) -> int | None:
    """The offset ``consumer`` fetches next for ``partition`` (past transaction
    markers), or ``None`` when it is not assigned or its position is being reset."""
    try:
        subscription = consumer._subscription.subscription
        if subscription is None or subscription.assignment is None:
            return None
        assignment = subscription.assignment
        if partition not in assignment.tps:
            return None
        state = assignment.state_value(partition)
        return int(state.position) if state.has_valid_position else None
    except AttributeError as exc:
        raise InternalsChanged(
            f"aiokafka's consumer no longer exposes fetch positions as this pipeline "
            f"reads them ({exc}); pin aiokafka to the range in pyproject.toml"
        ) from exc


async def skip_decoding(message: Any) -> None:
    """A FastStream decoder that decodes nothing (the engine decodes each record)."""
    return
