"""What a handler may return, and how it becomes records.

- an event model: one record to the stage's sink, keyed by the stage's ``key`` of the
  event, or by the input's key when the stage declares none;
- ``None``: nothing; the input is consumed (a filter) and its offset committed;
- an :class:`Output`, or a list of them: records to any of the stage's declared output
  topics, each with its own key (fan-out and re-keying). The input finishes when every
  one of them is acknowledged, and with exactly_once they commit in one transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from typing import Any

from pydantic import BaseModel

from pipeline.errors import NoOutput
from pipeline.runtime.stage import encode

Record = tuple[str, bytes | None, bytes]
"""(topic, key, value) of one output record, before headers."""


@dataclass(frozen=True, slots=True)
class Output:
    """One record a handler sends: to ``topic`` (one of its stage's declared outputs),
    with ``value`` (an event model, or bytes as they are) under ``key`` (``None``: the
    input's key)."""

    topic: str
    value: BaseModel | bytes
    key: str | bytes | None = None


def as_records(
    result: Any,
    *,
    input_key: bytes | None,
    sink: str,
    declared: dict[str, str],
    key_of: Callable[[Any], str | bytes] | None,
) -> list[Record]:
    """The records for a handler's ``result`` (an empty list: dropped).

    ``declared`` maps the stage's logical output topics to their real names; an output
    to any other topic raises :class:`NoOutput`, as does a result of another type.
    """
    if result is None:
        return []
    if isinstance(result, BaseModel):
        key = input_key if key_of is None else _key_bytes(key_of(result))
        return [(sink, key, encode(result))]
    outputs: Sequence[Any] = [result] if isinstance(result, Output) else result
    if not isinstance(outputs, list | tuple):
        raise NoOutput(
            f"a handler returned a {type(result).__name__}; expected an event model, "
            "an Output, a list of Outputs or None"
        )
    records: list[Record] = []
    for output in outputs:
        if not isinstance(output, Output):
            raise NoOutput(f"a handler returned a {type(output).__name__} among its Outputs")
        topic = declared.get(output.topic)
        if topic is None:
            raise NoOutput(
                f"an Output to {output.topic!r}, which the stage does not declare "
                f"(declared: {sorted(declared)})"
            )
        value = output.value if isinstance(output.value, bytes) else encode(output.value)
        key = input_key if output.key is None else _key_bytes(output.key)
        records.append((topic, key, value))
    return records


def _key_bytes(key: str | bytes) -> bytes:
    return key if isinstance(key, bytes) else key.encode()
