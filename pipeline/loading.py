"""Finding the pipeline a command works on: ``module:attribute``, the way
``faststream run main:app`` and uvicorn find theirs, or the bundled checkout flow."""

from __future__ import annotations

import importlib
import sys
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from pipeline.api import Pipeline
from pipeline.errors import ConfigurationError
from pipeline.kafka.topology import (
    ORDERS_EVENTS,
    STAGE_NAMES,
    STAGE_TOPICS,
    entry_topics,
    terminal_topics,
)
from pipeline.runtime.stage import StageSpec


@dataclass(frozen=True, slots=True)
class LoadedPipeline:
    """What a command needs of a pipeline: its stages and the topics they use."""

    name: str
    stages: Mapping[str, StageSpec[Any, Any]]
    flow: Sequence[str]
    """Every topic the stages read or write."""
    description: str = ""

    @property
    def sources(self) -> dict[str, str]:
        """Stage name -> the (logical) topic it reads."""
        return {name: spec.source for name, spec in self.stages.items()}

    def entry_topics(self) -> list[str]:
        """Topics the stages read that no stage writes: where events come in."""
        return entry_topics(self.stages.values())

    def terminal_topics(self) -> list[str]:
        """Topics the stages write that no stage reads: where events leave."""
        return terminal_topics(self.stages.values())


def load_pipeline(path: str | None) -> LoadedPipeline:
    """The pipeline at ``path`` (``package.module:attribute``; the current directory is
    importable, as with uvicorn), or the checkout flow when ``None``."""
    if path is None:
        from pipeline.stages import checkout

        flow = [ORDERS_EVENTS, *(STAGE_TOPICS[name][1] for name in STAGE_NAMES)]
        stages = {name: checkout.stages[name] for name in STAGE_NAMES}  # in flow order
        return LoadedPipeline("checkout", stages, flow, checkout.description)
    module_name, _, attribute = path.partition(":")
    if not module_name or not attribute:
        raise ConfigurationError(f"{path!r} is not module:attribute (e.g. myapp.flows:pipeline)")
    if str(Path.cwd()) not in sys.path:
        sys.path.insert(0, str(Path.cwd()))
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import {module_name!r}: {exc}") from exc
    found = getattr(module, attribute, None)
    if not isinstance(found, Pipeline):
        raise ConfigurationError(f"{path} is a {type(found).__name__}, not a Pipeline")
    if not found.stages:
        raise ConfigurationError(f"{path} declares no stages")
    return LoadedPipeline(found.name, found.stages, found.topics(), found.description)


def is_pipeline_path(argument: str) -> bool:
    """Whether a command-line argument names a pipeline (``module:attribute``, one colon)
    rather than a stage or a dead letter (``stage:partition:offset``, two)."""
    return argument.count(":") == 1


def split_pipeline_path(arguments: Sequence[str]) -> tuple[str | None, list[str]]:
    """A command's positional arguments as (the pipeline they lead with, if one, the
    rest): ``pipeline dlq replay sensors:pipeline store:0:12`` names both."""
    if arguments and is_pipeline_path(arguments[0]):
        return arguments[0], list(arguments[1:])
    return None, list(arguments)
