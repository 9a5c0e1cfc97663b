"""The Strimzi KafkaTopic resources: rendered from the topology, checked in, parseable."""

from __future__ import annotations

import os
import re
from pathlib import Path
from typing import Any

import pytest
import yaml
from typer.testing import CliRunner

from pipeline.cli import app
from pipeline.errors import ConfigurationError
from pipeline.kafka.strimzi import render_kafka_topics, resource_name
from pipeline.kafka.topology import TopicSpec, pipeline_topics
from pipeline.settings import TopologySettings

pytestmark = pytest.mark.unit

CHECKED_IN = Path(__file__).resolve().parents[2] / "deploy" / "k8s" / "topics" / "kafka-topics.yaml"
REGENERATE = "pipeline topics render --format strimzi -o deploy/k8s/topics/kafka-topics.yaml"
DNS_SUBDOMAIN = re.compile(r"[a-z0-9]([-a-z0-9]*[a-z0-9])?(\.[a-z0-9]([-a-z0-9]*[a-z0-9])?)*")


@pytest.fixture
def default_topology(monkeypatch: pytest.MonkeyPatch) -> TopologySettings:
    """The topology with its defaults, whatever PIPELINE_TOPICS_* this shell exports."""
    for name in list(os.environ):
        if name.startswith("PIPELINE_TOPICS_"):
            monkeypatch.delenv(name)
    return TopologySettings()


def parse(rendered: str) -> list[dict[str, Any]]:
    return [document for document in yaml.safe_load_all(rendered) if document is not None]


def test_checked_in_kafka_topics_are_what_the_code_renders(
    default_topology: TopologySettings,
) -> None:
    production = default_topology.model_copy(
        update={"replication_factor": 3, "min_insync_replicas": 2}
    )
    rendered = render_kafka_topics(pipeline_topics(production))

    assert CHECKED_IN.read_text() == rendered, f"out of date: run `{REGENERATE}`"
    documents = parse(rendered)
    assert {d["spec"]["replicas"] for d in documents} == {3}
    assert {d["spec"]["config"]["min.insync.replicas"] for d in documents} == {"2"}


def test_cli_render_writes_the_checked_in_file(
    default_topology: TopologySettings, tmp_path: Path
) -> None:
    output = tmp_path / "kafka-topics.yaml"

    result = CliRunner().invoke(app, ["topics", "render", "--format", "strimzi", "-o", str(output)])

    assert result.exit_code == 0, result.output
    assert output.read_text() == CHECKED_IN.read_text()


def test_cli_renders_a_users_pipeline_from_its_own_stages(
    default_topology: TopologySettings,
    tmp_path: Path,
) -> None:
    from examples.sensors.flow import pipeline as sensors

    output = tmp_path / "sensors-topics.yaml"

    result = CliRunner().invoke(
        app, ["topics", "render", "examples.sensors.flow:pipeline", "-o", str(output)]
    )

    assert result.exit_code == 0, result.output
    names = [d["spec"].get("topicName", d["metadata"]["name"]) for d in parse(output.read_text())]
    for topic in sensors.topics():
        assert topic in names
    for stage in sensors.stages:
        assert f"{stage}.dlq" in names
        assert f"{stage}.retry.1" in names
    assert "orders.events" not in names  # nothing of the checkout flow


def test_every_topic_becomes_one_kafka_topic_of_the_cluster(
    default_topology: TopologySettings,
) -> None:
    topics = pipeline_topics(default_topology)

    resources = parse(render_kafka_topics(topics, "orders", namespace="kafka"))

    assert len(resources) == len(topics)
    for spec, resource in zip(topics, resources, strict=True):
        assert resource["apiVersion"] == "kafka.strimzi.io/v1beta2"
        assert resource["kind"] == "KafkaTopic"
        assert resource["metadata"]["name"] == spec.name
        assert resource["metadata"]["namespace"] == "kafka"
        assert resource["metadata"]["labels"]["strimzi.io/cluster"] == "orders"
        # The pipeline's names are valid resource names, so no topicName is needed.
        assert "topicName" not in resource["spec"]
        assert resource["spec"]["partitions"] == spec.partitions
        assert resource["spec"]["replicas"] == spec.replication_factor
        assert resource["spec"]["config"] == spec.config


def test_prefixed_topics_keep_their_names_as_resource_names() -> None:
    topics = pipeline_topics(TopologySettings(prefix="staging.", partitions=24))

    resources = parse(render_kafka_topics(topics))

    assert [r["metadata"]["name"] for r in resources] == [t.name for t in topics]
    keyed = [r for r in resources if r["spec"]["config"].get("cleanup.policy") != "compact"]
    keyed = [r for r in keyed if not r["metadata"]["name"].endswith(("dlq.actions", "jobs"))]
    assert {r["spec"]["partitions"] for r in keyed} == {24}


def test_a_name_kubernetes_refuses_gets_a_dns_safe_resource_name_and_spec_topic_name() -> None:
    spec = TopicSpec("Orders_Events.V2", partitions=6, replication_factor=3)

    (resource,) = parse(render_kafka_topics([spec]))

    assert DNS_SUBDOMAIN.fullmatch(resource["metadata"]["name"])
    assert resource["spec"]["topicName"] == "Orders_Events.V2"


@pytest.mark.parametrize(
    "topic",
    ["UPPER", "under_score", "a._b", "__consumer_offsets", "-dash-", "...", "ü", "x" * 300],
)
def test_resource_names_are_dns_subdomains(topic: str) -> None:
    name = resource_name(topic)

    assert len(name) <= 253
    assert DNS_SUBDOMAIN.fullmatch(name), name


def test_topics_that_clean_up_alike_get_distinct_resource_names() -> None:
    names = {resource_name(topic) for topic in ("a_b", "A_B", "a__b", "a-b")}

    assert len(names) == 4


def test_strings_that_yaml_would_read_as_other_types_stay_strings() -> None:
    config = {"a": "true", "b": "007", "c": "no", "d": "x: y", "e": "", "f": "1.5", "g": "#"}
    spec = TopicSpec("t", partitions=1, replication_factor=1, config=config)

    (resource,) = parse(render_kafka_topics([spec]))

    assert resource["spec"]["config"] == config


def test_a_cluster_name_kubernetes_refuses_is_rejected() -> None:
    with pytest.raises(ConfigurationError, match="not a valid Kubernetes name"):
        render_kafka_topics([TopicSpec("t", 1, 1)], "Orders_Cluster")
