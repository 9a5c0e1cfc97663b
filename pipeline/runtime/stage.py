"""A stage as the user declares it: a name, its topics, its input model and a handler.

The handler is business logic only: it takes one decoded event and the injected
:class:`~pipeline.services.Services` and returns the event for the next topic. Ordering,
retries, dead letters, commits and telemetry are the runtime's business.
"""

from __future__ import annotations

from collections.abc import Callable, Coroutine
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter

from pipeline.failures.classify import ErrorPolicy, default_error_policy
from pipeline.kafka.topology import dead_letter_topic
from pipeline.services import Services

In = TypeVar("In")
Out = TypeVar("Out", bound=BaseModel)

Handler = Callable[[In, Services], Coroutine[Any, Any, Out]]


@dataclass(frozen=True, slots=True)
class StageSpec(Generic[In, Out]):
    """Everything the runtime needs to know to run one stage."""

    name: str
    source: str
    sink: str
    input_type: Any
    handler: Handler[In, Out]
    error_policy: ErrorPolicy = default_error_policy
    description: str = ""
    identify: Callable[[Any], str] | None = None
    """The event id of an input, for deduplicating redelivered records."""
    outputs: tuple[str, ...] = ()
    r"""Further topics the handler may send :class:`~pipeline.runtime.outputs.Output`\ s
    to, beside ``sink``."""
    key: Callable[[Any], str | bytes] | None = None
    """The key of a returned event (``None``: the input's key)."""

    @property
    def output_topics(self) -> tuple[str, ...]:
        """Every topic the stage may write events to: its sink, then the others."""
        return (self.sink, *(topic for topic in self.outputs if topic != self.sink))

    @property
    def dead_letter_topic(self) -> str:
        """Where records this stage gives up on go."""
        return dead_letter_topic(self.name)

    def decoder(self) -> Callable[[bytes], In]:
        """A function from record bytes to the validated input event."""
        if isinstance(self.input_type, type) and issubclass(self.input_type, BaseModel):
            return self.input_type.model_validate_json  # type: ignore[return-value]
        adapter: TypeAdapter[In] = TypeAdapter(self.input_type)
        return adapter.validate_json


def encode(event: BaseModel) -> bytes:
    """The JSON bytes of an event (pydantic's Rust serializer, no str round trip)."""
    return event.__pydantic_serializer__.to_json(event)
