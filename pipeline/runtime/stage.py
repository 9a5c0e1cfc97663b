"""A stage as the user declares it: a name, its topics, its input model and a handler.

The handler is business logic only: it takes one decoded event and what the app injects
(the checkout's :class:`~pipeline.stages.services.Services`) and returns the event for
the next topic. Ordering, retries, dead letters, commits and telemetry are the
runtime's business.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable, Coroutine, Mapping
from dataclasses import dataclass
from typing import Any, Generic, TypeVar

from pydantic import BaseModel, TypeAdapter

from pipeline.failures.classify import ErrorPolicy, default_error_policy
from pipeline.kafka.topology import dead_letter_topic
from pipeline.settings import StageSettings

In = TypeVar("In")
Out = TypeVar("Out", bound=BaseModel)

Handler = Callable[[In, Any], Coroutine[Any, Any, Out]]


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
    output_type: Any = None
    """The model of the events the stage writes to its sink, for AsyncAPI."""
    bind: Callable[[Mapping[Any, Any]], Callable[[In], Awaitable[Any]]] | None = None
    """For a stage declared with :meth:`pipeline.Pipeline.stage`: given an app's
    dependency overrides, the one-argument handler call (``None``: the handler takes
    ``(event, services)``)."""
    tuning: tuple[tuple[str, Any], ...] = ()
    """This stage's defaults over the ``PIPELINE_STAGE_*`` settings."""

    def settings_for(self, settings: StageSettings) -> StageSettings:
        """``settings`` with this stage's own defaults applied."""
        return settings.model_copy(update=dict(self.tuning)) if self.tuning else settings

    def call(
        self, services: Any, overrides: Mapping[Any, Any] | None = None
    ) -> Callable[[In], Awaitable[Any]]:
        """The handler as the engine calls it: one event in, its result out."""
        if self.bind is not None:
            return self.bind(overrides or {})
        handler = self.handler

        def call_with_services(event: In) -> Coroutine[Any, Any, Any]:
            return handler(event, services)

        return call_with_services

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
