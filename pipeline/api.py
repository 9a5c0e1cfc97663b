"""Declaring a pipeline: :class:`Pipeline` and its ``@stage`` decorator.

A stage is a typed async handler, declared the way FastStream subscribers are::

    pipeline = Pipeline("sensors")

    @pipeline.stage(source="readings.raw", sink="readings.clean", key=lambda r: r.site)
    async def clean(reading: Reading, store: Store = Depends(get_store)) -> Reading | None:
        return None if reading.malformed else reading

The first parameter's annotation is the input model — or ``list[Model]``: a batched
handler, given the events the stage starts together (at most one per key) and returning
one outcome per event (:mod:`pipeline.runtime.micro_batch`); every other parameter must
be a ``Depends(...)`` dependency. Dependencies are resolved once, when the stage handles its
first record, and shared by every record after (a client, a pool, a store): per-record
resolution costs more than most handlers. The runtime owns key order, retries, dead
letters, commits, exactly-once and telemetry around the handler.
"""

from __future__ import annotations

import asyncio
import inspect
import typing
from collections.abc import Awaitable, Callable, Coroutine, Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

import fast_depends
from fast_depends import Provider, inject
from fast_depends.dependencies.model import Dependant
from pydantic import BaseModel

from pipeline.errors import ConfigurationError
from pipeline.failures.classify import ErrorPolicy, default_error_policy
from pipeline.kafka.topology import entry_topics, flow_topics, terminal_topics
from pipeline.runtime.micro_batch import MicroBatcher
from pipeline.runtime.stage import StageSpec
from pipeline.settings import Guarantee

HandlerT = TypeVar("HandlerT", bound=Callable[..., Coroutine[Any, Any, Any]])

Overrides = Mapping[Callable[..., Any], Callable[..., Any]]
"""Dependency -> its replacement, for one app (tests pass fakes this way)."""

_TUNABLE = {
    "max_in_flight",
    "retry_delays_s",
    "in_process_attempts",
    "ordering",
    "on_dead_letter",
    "processing_guarantee",
    "dedupe_window",
}


def Depends(dependency: Callable[..., Any], *, use_cache: bool = True) -> Any:
    """A stage handler's dependency, FastStream's ``Depends``: ``dependency`` (a plain or
    async function, itself taking ``Depends`` parameters if it likes) is called once,
    when the stage handles its first record, and its value shared by every record."""
    return fast_depends.Depends(dependency, use_cache=use_cache, cast=False)


class Pipeline:
    """A named set of stages; each stage is its own consumer group."""

    def __init__(self, name: str, *, description: str = "") -> None:
        self.name = name
        self.description = description
        self._stages: dict[str, StageSpec[Any, Any]] = {}

    @property
    def stages(self) -> Mapping[str, StageSpec[Any, Any]]:
        """Stage name -> its spec, in declaration order."""
        return self._stages

    def __iter__(self) -> Iterator[str]:
        return iter(self._stages)

    def stage(
        self,
        *,
        source: str,
        sink: str,
        outputs: Sequence[str] = (),
        key: Callable[[Any], str | bytes] | None = None,
        identify: Callable[[Any], str] | None = None,
        error_policy: ErrorPolicy = default_error_policy,
        name: str | None = None,
        description: str | None = None,
        guarantee: Guarantee | None = None,
        max_in_flight: int | None = None,
        retry_delays_s: Sequence[float] | None = None,
        in_process_attempts: int | None = None,
        max_batch_size: int = 500,
        on_dead_letter: Literal["release", "hold"] | None = None,
    ) -> Callable[[HandlerT], HandlerT]:
        """Declare the decorated handler as a stage reading ``source``.

        A returned event goes to ``sink`` under ``key(event)`` (default: the input's
        key); ``None`` drops the input; ``Output``\\ s go to ``sink`` or ``outputs``.
        ``identify`` gives an input's event id, to drop redelivered duplicates.
        ``guarantee``, ``max_in_flight``, ``retry_delays_s`` and ``in_process_attempts``
        set this stage's defaults over the ``PIPELINE_STAGE_*`` ones. A batched handler
        (``list[Model]`` in) gets at most ``max_batch_size`` events per call.
        ``on_dead_letter="hold"`` parks a key's later events behind its dead letter until
        an operator replays or discards it (``pipeline dlq``).
        """
        if max_batch_size < 1:
            raise ConfigurationError("max_batch_size must be at least 1")

        def declare(handler: HandlerT) -> HandlerT:
            stage_name = name or handler.__name__
            if stage_name in self._stages:
                raise ConfigurationError(f"pipeline {self.name} has two stages {stage_name!r}")
            input_type, output_type, dependencies, batched = _signature_of(handler)
            tuning: dict[str, Any] = {
                "max_in_flight": max_in_flight,
                "retry_delays_s": list(retry_delays_s) if retry_delays_s is not None else None,
                "in_process_attempts": in_process_attempts,
                "processing_guarantee": guarantee,
                "on_dead_letter": on_dead_letter,
            }
            self._stages[stage_name] = StageSpec(
                name=stage_name,
                source=source,
                sink=sink,
                input_type=input_type,
                handler=handler,
                error_policy=error_policy,
                description=description or inspect.getdoc(handler) or "",
                identify=identify,
                outputs=tuple(outputs),
                key=key,
                output_type=output_type,
                bind=_binder(handler, dependencies, max_batch_size if batched else 0),
                tuning=tuple((k, v) for k, v in tuning.items() if v is not None),
            )
            return handler

        return declare

    def handler(
        self, stage: str, overrides: Overrides | None = None
    ) -> Callable[[Any], Awaitable[Any]]:
        """Stage ``stage``'s handler as the runtime calls it — one event in, its result
        out — with its dependencies replaced by ``overrides`` (for tests)."""
        return self._stages[stage].call(None, overrides)

    def topics(self) -> list[str]:
        """Every topic the stages read or write, in declaration order (no duplicates)."""
        return flow_topics(self._stages.values())

    def entry_topics(self) -> list[str]:
        """Topics the stages read that no stage writes: where events come in."""
        return entry_topics(self._stages.values())

    def terminal_topics(self) -> list[str]:
        """Topics the stages write that no stage reads: where events leave."""
        return terminal_topics(self._stages.values())

    def __repr__(self) -> str:
        return f"Pipeline({self.name!r}, stages={list(self._stages)})"


def _signature_of(
    handler: Callable[..., Any],
) -> tuple[Any, Any, list[inspect.Parameter], bool]:
    """The input type, the output model (if it returns one), the dependency parameters
    of a stage handler, checked, and whether it takes a batch (``list[Model]``)."""
    if not inspect.iscoroutinefunction(handler):
        raise ConfigurationError(f"stage handler {handler.__qualname__} must be `async def`")
    parameters = list(inspect.signature(handler).parameters.values())
    if not parameters:
        raise ConfigurationError(f"stage handler {handler.__qualname__} takes no event")
    hints = typing.get_type_hints(handler, include_extras=True)
    event = parameters[0]
    if event.name not in hints:
        raise ConfigurationError(
            f"annotate the first parameter of {handler.__qualname__} with its input model"
        )
    dependencies = parameters[1:]
    for parameter in dependencies:
        if not isinstance(parameter.default, Dependant):
            # FastStream would read such a parameter as a field of the message body and
            # reject every event; refuse it when the stage is declared instead.
            raise ConfigurationError(
                f"parameter {parameter.name!r} of {handler.__qualname__} is neither the "
                "event nor a Depends(...) dependency"
            )
        provider = parameter.default.dependency
        if inspect.isgeneratorfunction(provider) or inspect.isasyncgenfunction(provider):
            raise ConfigurationError(
                f"dependency {provider.__qualname__} of {handler.__qualname__} yields: stage "
                "dependencies live as long as the stage, so open and close such resources "
                "in the app's lifespan and return them from a plain function"
            )
    input_type, output = hints[event.name], hints.get("return")
    batched = typing.get_origin(input_type) is list
    if batched:
        input_type = typing.get_args(input_type)[0]
        output = next(iter(typing.get_args(output)), None)  # list[Out | None]
    return input_type, _model_in(output), dependencies, batched


def _model_in(annotation: Any) -> Any:
    """The event model in a return annotation (``Model``, ``Model | None``), if one."""
    if isinstance(annotation, type) and issubclass(annotation, BaseModel):
        return annotation
    models = [
        a for a in typing.get_args(annotation) if isinstance(a, type) and issubclass(a, BaseModel)
    ]
    return models[0] if len(models) == 1 else None


def _binder(
    handler: Callable[..., Coroutine[Any, Any, Any]],
    dependencies: list[inspect.Parameter],
    max_batch_size: int,
) -> Callable[[Overrides], Callable[[Any], Awaitable[Any]]]:
    """For each app: a one-argument callable that runs ``handler`` with its
    dependencies (resolved on the first call, honouring the app's overrides); for a
    batched handler (``max_batch_size`` > 0), a per-event call in front of it."""

    def bind(overrides: Overrides) -> Callable[[Any], Awaitable[Any]]:
        call = _Bound(handler, dependencies, overrides) if dependencies else handler
        return MicroBatcher(call, max_batch_size) if max_batch_size else call

    return bind


class _Bound:
    """A handler with its dependencies; a plain call returning the handler's coroutine
    once they are resolved, so the per-record path pays no extra coroutine."""

    __slots__ = ("_dependencies", "_handler", "_overrides", "_resolved", "_resolving")

    def __init__(
        self,
        handler: Callable[..., Coroutine[Any, Any, Any]],
        dependencies: list[inspect.Parameter],
        overrides: Overrides,
    ) -> None:
        self._handler = handler
        self._dependencies = dependencies
        self._overrides = overrides
        self._resolved: dict[str, Any] | None = None
        self._resolving: asyncio.Future[dict[str, Any]] | None = None

    def __call__(self, event: Any) -> Coroutine[Any, Any, Any]:
        resolved = self._resolved
        if resolved is None:
            return self._first_call(event)
        return self._handler(event, **resolved)

    async def _first_call(self, event: Any) -> Any:
        # Every call made while the dependencies are being resolved (a whole first
        # fetch) waits for the same resolution, and all go on in one loop iteration
        # when it is done; a lock would let them through one per iteration, and their
        # outputs would leave one batch at a time.
        resolving = self._resolving
        if resolving is None:
            resolving = self._resolving = asyncio.ensure_future(self._resolve())
            resolving.add_done_callback(self._settle)
        resolved = await asyncio.shield(resolving)
        return await self._handler(event, **resolved)

    def _settle(self, resolving: asyncio.Future[dict[str, Any]]) -> None:
        if resolving.cancelled() or resolving.exception() is not None:
            self._resolving = None  # its waiters fail with it; the next call tries again
        else:
            self._resolved = resolving.result()

    async def _resolve(self) -> dict[str, Any]:
        async def collect(**resolved: Any) -> dict[str, Any]:
            return resolved

        # annotations are dropped: values are used as the providers return them
        collect.__signature__ = inspect.Signature(  # type: ignore[attr-defined]
            [p.replace(annotation=inspect.Parameter.empty) for p in self._dependencies]
        )
        provider = Provider()
        for original, replacement in self._overrides.items():
            provider.override(original, replacement)
        resolved: dict[str, Any] = await inject(collect, cast=False, dependency_provider=provider)()
        return resolved
