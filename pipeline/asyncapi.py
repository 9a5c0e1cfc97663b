"""One AsyncAPI 3 document for the whole pipeline, built from the broker that runs it.

The channels come from ``create_app(settings, http=False).broker``: every stage's
subscriber (its input topic and its retry topics) and the publishers the runtime
declares (outputs, dead letters). Two things FastStream cannot see are added here:

* the **retry topics as publish channels** — the runtime writes them with its own
  producer, so a documentation-only publisher is declared for each one still missing;
* the **record schemas of the subscribe and retry channels** — a stage's subscriber
  takes raw batches and decodes each record itself, so FastStream documents an empty
  payload; the stage's declared input type (:attr:`StageSpec.input_type`) replaces it.

Retry and dead-letter messages also document the provenance headers they carry.
``docs/asyncapi.json`` is this document for :func:`reference_settings`;
``tests/unit/test_asyncapi.py`` fails when the two differ.

A user's pipeline (``pipeline asyncapi module:attr``) gets the same document from its own
stages. An output a handler sends as ``Output(...)`` has no model in its signature: its
channel takes the input model of the stage that reads the topic, or, on a topic no stage
reads, says that the model is not declared.
"""

from __future__ import annotations

import json
from collections.abc import Iterable
from dataclasses import dataclass
from importlib.metadata import PackageNotFoundError, version
from typing import Any

from faststream.kafka import KafkaBroker, KafkaRouter
from faststream.specification import AsyncAPI
from pydantic import TypeAdapter

from pipeline.app import PipelineApp, create_app
from pipeline.failures import ladder, provenance
from pipeline.kafka.topology import Naming
from pipeline.loading import LoadedPipeline
from pipeline.runtime.stage import StageSpec
from pipeline.settings import (
    HttpSettings,
    KafkaSettings,
    LocalKafkaSettings,
    ServiceSettings,
    Settings,
    StageSettings,
    TopologySettings,
)
from schemas import OrderEvent

TITLE = "order-pipeline"
DESCRIPTION = (
    "A key-ordered checkout pipeline: validate -> reserve -> pay -> fulfil. Every record "
    "is keyed by its order id; a stage's output keeps the key, so one order stays on one "
    "partition and in order. Failed records climb the stage's retry topics, then land in "
    "its dead-letter topic with provenance headers."
)

_REF = "#/components/schemas/{model}"

PROVENANCE_HEADERS = {
    provenance.STAGE: "Stage that gave up on the record.",
    provenance.ATTEMPT: "Attempts made so far, over every rung.",
    provenance.ORIGIN_TOPIC: "Topic the record was first read from.",
    provenance.ORIGIN_PARTITION: "Its partition there.",
    provenance.ORIGIN_OFFSET: "Its offset there.",
    provenance.ORIGIN_TIMESTAMP: "Its timestamp there (ms).",
    provenance.ORIGIN_KEY: "Its key (the order id).",
    provenance.ERROR_TYPE: "Qualified name of the exception.",
    provenance.ERROR_MESSAGE: "The exception's message, truncated.",
    provenance.ERROR_STACK: "The end of the stack trace.",
    provenance.FIRST_FAILURE_AT: "ISO time of the first failure at this stage.",
    provenance.LAST_FAILURE_AT: "ISO time of the last failure.",
}
RETRY_HEADERS = {
    ladder.RETRY_LEVEL: "The rung (1-based) this record waits on.",
    ladder.RETRY_DUE_AT_MS: "Epoch ms before which the stage will not retry it.",
    **PROVENANCE_HEADERS,
}


def reference_settings() -> Settings:
    """Every default and no environment: the settings ``docs/asyncapi.json`` is made with."""
    # model_construct skips pydantic-settings' __init__, which would read PIPELINE_*.
    return Settings.model_construct(
        kafka=KafkaSettings.model_construct(),
        local_kafka=LocalKafkaSettings.model_construct(),
        topics=TopologySettings.model_construct(),
        stage=StageSettings.model_construct(),
        services=ServiceSettings.model_construct(),
        http=HttpSettings.model_construct(),
    )


@dataclass(frozen=True, slots=True)
class PipelineDocument:
    """An AsyncAPI document as plain JSON data; FastStream's ``Specification`` protocol,
    so its HTML page renders it."""

    document: dict[str, Any]

    @property
    def title(self) -> str:
        """The document's title."""
        return str(self.document["info"]["title"])

    def to_jsonable(self) -> dict[str, Any]:
        """The document as JSON-ready data."""
        return self.document

    def to_json(self) -> str:
        """Indented JSON with a trailing newline (the checked-in file's form)."""
        return json.dumps(self.document, indent=2) + "\n"

    def to_yaml(self) -> str:
        """The same document as YAML."""
        import yaml

        return str(yaml.safe_dump(self.document, sort_keys=False, allow_unicode=True))


USER_PIPELINE_VERSION = "0.1.0"
"""``info.version`` of a user's pipeline's document (FastStream's default)."""


def pipeline_asyncapi(
    settings: Settings,
    extra_brokers: Iterable[KafkaBroker] = (),
    *,
    flow: LoadedPipeline | None = None,
) -> PipelineDocument:
    """The AsyncAPI 3 document of ``flow``'s stages (``None``: the checkout flow's);
    ``extra_brokers`` (the HTTP ingress's, say) add their own channels to it."""
    if flow is None:
        pipeline = create_app(settings, http=False)
        title, version, description = TITLE, _package_version(), DESCRIPTION
    else:
        pipeline = create_app(settings, http=False, catalog=flow.stages)
        title, version = flow.name, USER_PIPELINE_VERSION
        description = flow.description or _flow_description(flow)
    naming = Naming.of(settings.topics)
    _declare_retry_publishers(pipeline, naming, settings.topics.retry_levels)
    document: dict[str, Any] = (
        AsyncAPI(
            pipeline.broker,
            *extra_brokers,
            title=title,
            version=version,
            description=description,
        )
        .to_specification()
        .to_jsonable()
    )
    schemas = document["components"]["schemas"]
    for runtime in pipeline.runtimes:
        spec = runtime.spec
        payload = _register_input_schema(schemas, spec)
        for channel in runtime.router.subscribers[0].specification.get_schema():
            retried = channel.rsplit(":", 1)[-1] != naming.topic(spec.source)
            _describe(document, channel, payload, RETRY_HEADERS if retried else None)
        for level in range(1, settings.topics.retry_levels + 1):
            _describe(document, f"{naming.retry(spec.name, level)}:publish", payload, RETRY_HEADERS)
        _describe(document, f"{naming.dead_letter(spec.name)}:publish", _RAW, PROVENANCE_HEADERS)
    _describe_untyped_outputs(
        document, schemas, [runtime.spec for runtime in pipeline.runtimes], naming
    )
    _prune_unreferenced_schemas(document)
    # Named things in name order: a diff of the checked-in file then shows what changed.
    for parent, part in ((document, "channels"), (document, "operations")):
        parent[part] = dict(sorted(parent[part].items()))
    for part in ("messages", "schemas"):
        document["components"][part] = dict(sorted(document["components"][part].items()))
    return PipelineDocument(document)


_RAW = {
    "description": "The record as the stage received it: its input event, or the bytes "
    "that failed to decode."
}


def _flow_description(flow: LoadedPipeline) -> str:
    """One line per stage: what it reads and writes."""
    return "Stages: " + "; ".join(
        f"{name} ({spec.source} -> {', '.join(spec.output_topics)})"
        for name, spec in flow.stages.items()
    )


def _describe_untyped_outputs(
    document: dict[str, Any],
    schemas: dict[str, Any],
    stages: list[StageSpec[Any, Any]],
    naming: Naming,
) -> None:
    """Give each output channel whose model the handler's signature does not declare the
    input model of the stage reading that topic, or say that it is not declared."""
    readers = {spec.source: spec for spec in stages}
    for spec in stages:
        for topic in spec.output_topics:
            if topic == spec.sink and spec.output_type is not None:
                continue  # FastStream documents the declared model
            reader = readers.get(topic)
            payload = (
                _register_input_schema(schemas, reader)
                if reader is not None
                else {
                    "description": f"Events the {spec.name} stage sends as Output(...): "
                    "their model is not in its handler's signature."
                }
            )
            _describe(document, f"{naming.topic(topic)}:publish", payload, None)


def _package_version() -> str:
    try:
        return version("order-pipeline")
    except PackageNotFoundError:  # a source tree that was never installed
        return "0.0.0"


def _declare_retry_publishers(pipeline: PipelineApp, naming: Naming, levels: int) -> None:
    """A documentation-only publisher for each retry topic the broker does not declare."""
    declared = {getattr(publisher, "topic", None) for publisher in pipeline.broker.publishers}
    router = KafkaRouter()
    for runtime in pipeline.runtimes:
        stage = runtime.spec.name
        for level in range(1, levels + 1):
            topic = naming.retry(stage, level)
            if topic in declared:
                continue
            router.publisher(
                topic,
                title=f"{topic}:publish",
                description=(
                    f"Records {stage} failed to process, waiting on rung {level} of its retry "
                    "ladder: the input record's key and value, with retry headers."
                ),
            )
    pipeline.broker.include_router(router)


def _register_input_schema(schemas: dict[str, Any], spec: StageSpec[Any, Any]) -> dict[str, str]:
    """Put the stage's input type into the components; a ``$ref`` to it."""
    body = TypeAdapter(spec.input_type).json_schema(ref_template=_REF)
    schemas.update(body.pop("$defs", {}))
    name = "OrderEvent" if spec.input_type is OrderEvent else str(body.get("title", spec.name))
    schemas.setdefault(name, body)
    return {"$ref": _REF.format(model=name)}


def _describe(
    document: dict[str, Any],
    channel: str,
    payload: dict[str, str],
    headers: dict[str, str] | None,
) -> None:
    """Set the payload and headers of every message of ``channel``."""
    found = document["channels"].get(channel)
    if found is None:
        raise KeyError(f"the pipeline's broker declares no channel {channel!r}")
    for reference in found["messages"].values():
        message = document["components"]["messages"][reference["$ref"].rsplit("/", 1)[-1]]
        message["payload"] = payload
        if headers is not None:
            message["headers"] = {
                "type": "object",
                "properties": {
                    name: {"type": "string", "description": text} for name, text in headers.items()
                },
            }


def _refs(node: Any) -> set[str]:
    if isinstance(node, dict):
        found = {node["$ref"]} if isinstance(node.get("$ref"), str) else set()
        for value in node.values():
            found |= _refs(value)
        return found
    if isinstance(node, list):
        return set().union(*(_refs(value) for value in node)) if node else set()
    return set()


def _prune_unreferenced_schemas(document: dict[str, Any]) -> None:
    """Drop component schemas no message reaches (the empty payloads replaced above)."""
    schemas: dict[str, Any] = document["components"]["schemas"]
    prefix = _REF.format(model="")
    reached: set[str] = set()
    todo = [
        ref.removeprefix(prefix)
        for ref in _refs(document["components"]["messages"])
        if ref.startswith(prefix)
    ]
    while todo:
        name = todo.pop()
        if name in reached or name not in schemas:
            continue
        reached.add(name)
        todo += [r.removeprefix(prefix) for r in _refs(schemas[name]) if r.startswith(prefix)]
    for name in list(schemas):
        if name not in reached:
            del schemas[name]
