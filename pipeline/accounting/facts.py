"""What the verifier needs to know of a stage, taken from its declaration.

* how to name an event it reads (its ``identify``, applied to the decoded record), and
  whether its outputs carry that name — the runtime stamps ``pipeline.event.id`` on a
  stage's outputs and dead letters only when the stage declares ``identify`` and keeps a
  dedupe window;
* whether its handler may drop an event (return ``None``, or a list that may be empty),
  read from the handler's return annotation;
* whether it keeps each key's events in order (``ordering="key"``).
"""

from __future__ import annotations

import collections.abc
import inspect
import types
import typing
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from pipeline.kafka.topology import Naming
from pipeline.runtime.stage import StageSpec
from pipeline.settings import StageSettings

NO_IDENTIFY = "declares no identify"
NO_DEDUPE_WINDOW = "has dedupe_window 0, so its outputs carry no event id"


@dataclass(frozen=True, slots=True)
class StageFacts:
    """A stage as the verifier sees it, with real (namespaced) topic names."""

    name: str
    source: str
    output_topics: tuple[str, ...]
    identify: Callable[[bytes], str] | None
    """A record's value -> the event id the stage stamps on what it writes for it
    (raises ``ValueError`` when the stage could not decode or identify it); ``None``
    when its outputs carry no event id."""
    may_drop: bool = True
    ordered: bool = True
    unidentified_because: str = ""
    """Why ``identify`` is ``None``."""


def stage_facts(spec: StageSpec[Any, Any], settings: StageSettings, naming: Naming) -> StageFacts:
    """The facts of ``spec`` run with ``settings`` in ``naming``'s namespace."""
    own = spec.settings_for(settings)
    identify: Callable[[bytes], str] | None = None
    because = ""
    if spec.identify is None:
        because = NO_IDENTIFY
    elif not own.dedupe_window:
        because = NO_DEDUPE_WINDOW
    else:
        identify = _identify_record(spec.name, spec.decoder(), spec.identify)
    return StageFacts(
        name=spec.name,
        source=naming.topic(spec.source),
        output_topics=tuple(naming.topic(topic) for topic in spec.output_topics),
        identify=identify,
        may_drop=may_drop(spec),
        ordered=own.ordering == "key",
        unidentified_because=because,
    )


def _identify_record(
    stage: str, decode: Callable[[bytes], Any], identify: Callable[[Any], str]
) -> Callable[[bytes], str]:
    def identify_record(value: bytes) -> str:
        event = decode(value)  # pydantic's ValidationError is a ValueError
        try:
            return str(identify(event))
        except Exception as exc:  # the user's function: any failure means "no id"
            raise ValueError(f"{stage}'s identify failed: {exc!r}") from exc

    return identify_record


def may_drop(spec: StageSpec[Any, Any]) -> bool:
    """Whether the stage's handler may leave an event without output: its return
    annotation admits ``None`` or a sequence (a list of ``Output``\\ s may be empty), or
    is missing. For a batched handler, the annotation of one event's outcome counts."""
    try:
        hints = typing.get_type_hints(spec.handler)
        first = next(iter(inspect.signature(spec.handler).parameters))
    except Exception:  # unresolvable annotations: assume the worst
        return True
    if "return" not in hints:
        return True
    returned = hints["return"]
    if typing.get_origin(hints.get(first)) is list:  # batched: one outcome per event
        outcomes = typing.get_args(returned)
        if typing.get_origin(returned) is not list or not outcomes:
            return True
        returned = outcomes[0]
    return _may_be_empty(returned)


_SEQUENCES = (list, tuple, collections.abc.Sequence, collections.abc.Iterable)


def _may_be_empty(annotation: Any) -> bool:
    if annotation is None or annotation is type(None) or annotation is Any:
        return True
    origin = typing.get_origin(annotation)
    if origin is typing.Union or origin is types.UnionType:
        return any(_may_be_empty(member) for member in typing.get_args(annotation))
    if origin in _SEQUENCES or annotation in _SEQUENCES:
        return True
    return not isinstance(annotation, type)  # a model, an Output, an exception: one outcome
