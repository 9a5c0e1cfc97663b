"""Strimzi ``KafkaTopic`` resources for the pipeline's topics.

On a Strimzi cluster the Topic Operator creates and reconciles one Kafka topic per
``KafkaTopic`` resource, so topics are declared like any other manifest. They are rendered
from :func:`pipeline.kafka.topology.pipeline_topics` (``pipeline topics render --format
strimzi``), checked in under ``deploy/k8s/topics/``, and compared with the code by
``tests/unit/test_strimzi_topics.py``.

The YAML is written here rather than by PyYAML, which is only a development dependency:
the resources are small mappings of strings and integers, and every string that could read
as anything else is emitted as a double-quoted (JSON) scalar.
"""

from __future__ import annotations

import hashlib
import json
import re
from collections.abc import Mapping, Sequence
from typing import Any

from pipeline.errors import ConfigurationError
from pipeline.kafka.topology import TopicSpec

__all__ = [
    "CLUSTER_LABEL",
    "DEFAULT_CLUSTER",
    "STRIMZI_API_VERSION",
    "kafka_topic",
    "render_kafka_topics",
    "resource_name",
]

STRIMZI_API_VERSION = "kafka.strimzi.io/v1beta2"
CLUSTER_LABEL = "strimzi.io/cluster"
DEFAULT_CLUSTER = "orders"
"""The Strimzi cluster of the production overlay (``orders-kafka-bootstrap``)."""
PART_OF_LABEL = "app.kubernetes.io/part-of"
PART_OF = "order-pipeline"

# metadata.name must be a DNS-1123 subdomain: dot-separated lowercase alphanumeric labels
# with inner hyphens, at most 253 characters. Kafka also allows '_' and upper case.
_DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")
_MAX_NAME = 253
# Cluster and namespace names are DNS-1123 labels.
_DNS_LABEL = re.compile(r"[a-z0-9]([-a-z0-9]{0,61}[a-z0-9])?")
_HASH_LENGTH = 8
# Plain (unquoted) YAML scalars: start with a letter, no characters YAML gives meaning to.
_PLAIN_SCALAR = re.compile(r"[A-Za-z][A-Za-z0-9._/-]*")
_YAML_WORDS = frozenset({"y", "n", "yes", "no", "on", "off", "true", "false", "null"})

HEADER = (
    "# Strimzi KafkaTopic resources for the order pipeline, rendered from\n"
    "# pipeline/kafka/topology.py by `pipeline topics render --format strimzi`.\n"
    "# Do not edit: change the code (or PIPELINE_TOPICS_*) and render again.\n"
)


def resource_name(topic: str) -> str:
    """A DNS-safe ``metadata.name`` for a topic: the topic's own name when it is one,
    otherwise a cleaned-up name with a hash of the original, so distinct topics never
    share a resource."""
    if len(topic) <= _MAX_NAME and _DNS_SUBDOMAIN.fullmatch(topic):
        return topic
    digest = hashlib.sha256(topic.encode()).hexdigest()[:_HASH_LENGTH]
    labels = re.sub(r"[^a-z0-9.]+", "-", topic.lower()).split(".")
    cleaned = ".".join(label.strip("-") for label in labels if label.strip("-"))
    cleaned = cleaned[: _MAX_NAME - _HASH_LENGTH - 1].rstrip(".-")
    return f"{cleaned}-{digest}" if cleaned else f"topic-{digest}"


def kafka_topic(spec: TopicSpec, cluster: str, *, namespace: str | None = None) -> dict[str, Any]:
    """The ``KafkaTopic`` resource of one topic of the Strimzi cluster ``cluster``."""
    name = resource_name(spec.name)
    metadata: dict[str, Any] = {"name": name}
    if namespace is not None:
        metadata["namespace"] = namespace
    metadata["labels"] = {CLUSTER_LABEL: cluster, PART_OF_LABEL: PART_OF}
    topic_spec: dict[str, Any] = {}
    if name != spec.name:
        # Without it the Topic Operator would name the Kafka topic after the resource.
        topic_spec["topicName"] = spec.name
    topic_spec |= {
        "partitions": spec.partitions,
        "replicas": spec.replication_factor,
        "config": dict(spec.config),
    }
    return {
        "apiVersion": STRIMZI_API_VERSION,
        "kind": "KafkaTopic",
        "metadata": metadata,
        "spec": topic_spec,
    }


def render_kafka_topics(
    topics: Sequence[TopicSpec], cluster: str = DEFAULT_CLUSTER, *, namespace: str | None = None
) -> str:
    """Multi-document YAML with one ``KafkaTopic`` per topic, in the topology's order;
    :class:`ConfigurationError` for names Kubernetes would refuse."""
    for what, value in (("Strimzi cluster", cluster), ("namespace", namespace)):
        if value is not None and not _DNS_LABEL.fullmatch(value):
            raise ConfigurationError(f"{what} name {value!r} is not a valid Kubernetes name")
    names = [resource_name(spec.name) for spec in topics]
    duplicates = sorted({name for name in names if names.count(name) > 1})
    if duplicates:
        raise ConfigurationError(f"topics map to the same KafkaTopic name(s): {duplicates}")
    documents = [
        "\n".join(["---", *_yaml_lines(kafka_topic(spec, cluster, namespace=namespace), 0)])
        for spec in topics
    ]
    return HEADER + "".join(f"{document}\n" for document in documents)


def _yaml_lines(mapping: Mapping[str, Any], indent: int) -> list[str]:
    lines = []
    for key, value in mapping.items():
        prefix = f"{' ' * indent}{_yaml_scalar(key)}:"
        if isinstance(value, Mapping):
            # An empty mapping has no block form; "{}" is its flow form.
            lines.append(prefix if value else f"{prefix} {{}}")
            lines.extend(_yaml_lines(value, indent + 2))
        else:
            lines.append(f"{prefix} {_yaml_scalar(value)}")
    return lines


def _yaml_scalar(value: object) -> str:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise TypeError(f"no YAML form for {value!r} here")
    if isinstance(value, int):
        return str(value)
    if _PLAIN_SCALAR.fullmatch(value) and value.lower() not in _YAML_WORDS:
        return value
    # A JSON string is a valid YAML double-quoted scalar.
    return json.dumps(value)
