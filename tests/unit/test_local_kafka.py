"""The local broker's rendered configuration and bookkeeping, checked without Java."""

from __future__ import annotations

import os
import re
import shutil
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest

from pipeline.kafka.local import LocalKafka, LocalKafkaError
from pipeline.kafka.local_config import (
    new_cluster_id,
    render_log4j2_properties,
    render_pom,
    render_server_properties,
)
from pipeline.settings import LocalKafkaSettings

pytestmark = pytest.mark.unit

POM_NS = {"m": "http://maven.apache.org/POM/4.0.0"}


def _parse_properties(text: str) -> dict[str, str]:
    return dict(line.split("=", 1) for line in text.splitlines() if line and line[0] != "#")


def _server_properties(data_dir: Path = Path("/srv/kafka/data")) -> dict[str, str]:
    return _parse_properties(
        render_server_properties(port=19092, controller_port=19093, data_dir=data_dir)
    )


def test_server_properties_make_one_node_both_broker_and_controller() -> None:
    properties = _server_properties()

    assert properties["process.roles"] == "broker,controller"
    assert properties["node.id"] == "1"
    assert properties["controller.quorum.bootstrap.servers"] == "127.0.0.1:19093"
    assert properties["listeners"] == "PLAINTEXT://127.0.0.1:19092,CONTROLLER://127.0.0.1:19093"
    assert properties["advertised.listeners"] == "PLAINTEXT://127.0.0.1:19092"
    assert properties["controller.listener.names"] == "CONTROLLER"
    assert properties["log.dirs"] == "/srv/kafka/data"


def test_server_properties_keep_internal_topics_to_one_replica() -> None:
    properties = _server_properties()

    assert properties["offsets.topic.replication.factor"] == "1"
    assert properties["transaction.state.log.replication.factor"] == "1"
    assert properties["transaction.state.log.min.isr"] == "1"


def test_server_properties_fix_the_pipeline_defaults() -> None:
    properties = _server_properties()

    assert properties["num.partitions"] == "12"
    assert properties["offsets.topic.num.partitions"] == "12"
    assert properties["transaction.state.log.num.partitions"] == "12"
    assert properties["auto.create.topics.enable"] == "false"
    assert properties["group.initial.rebalance.delay.ms"] == "0"


def test_server_properties_escape_backslashes_in_paths() -> None:
    text = render_server_properties(port=1, controller_port=2, data_dir=Path("/a\\b"))

    assert "log.dirs=/a\\\\b\n" in text


def test_pom_depends_on_broker_tools_and_logging_binding() -> None:
    root = ET.fromstring(render_pom("4.1.1", log4j_slf4j_version="2.24.3"))

    dependencies = {
        (
            dependency.findtext("m:groupId", namespaces=POM_NS),
            dependency.findtext("m:artifactId", namespaces=POM_NS),
            dependency.findtext("m:version", namespaces=POM_NS),
        )
        for dependency in root.iterfind("m:dependencies/m:dependency", POM_NS)
    }
    assert dependencies == {
        ("org.apache.kafka", "kafka_2.13", "4.1.1"),
        ("org.apache.kafka", "kafka-tools", "4.1.1"),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", "2.24.3"),
    }
    assert root.findtext("m:packaging", namespaces=POM_NS) == "pom"


def test_log4j2_writes_one_file_and_quiets_kafka() -> None:
    properties = {
        key.strip(): value.strip()
        for key, value in _parse_properties(
            render_log4j2_properties(Path("/srv/kafka/logs/server.log"))
        ).items()
    }

    assert properties["appender.file.fileName"] == "/srv/kafka/logs/server.log"
    assert properties["rootLogger.level"] == "INFO"
    quiet = {properties[f"logger.{name}.name"] for name in ("kafka", "apache_kafka")}
    assert quiet == {"kafka", "org.apache.kafka"}
    assert properties["logger.kafka.level"] == properties["logger.apache_kafka.level"] == "WARN"


def test_cluster_ids_look_like_kafka_uuids() -> None:
    cluster_ids = {new_cluster_id() for _ in range(500)}

    assert len(cluster_ids) == 500
    for cluster_id in cluster_ids:
        assert re.fullmatch(r"[A-Za-z0-9_-]{22}", cluster_id)
        assert not cluster_id.startswith("-")


def test_home_is_resolved_against_the_working_dir_at_construction(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.chdir(tmp_path)
    local_kafka = LocalKafka(LocalKafkaSettings(home=Path(".cache/kafka"), port=19092))
    monkeypatch.chdir("/")

    assert local_kafka.home == tmp_path.resolve() / ".cache" / "kafka"
    assert local_kafka.log_path == local_kafka.home / "logs" / "server.log"
    assert local_kafka.bootstrap == "127.0.0.1:19092"


def test_status_is_stopped_without_a_pid_file(tmp_path: Path) -> None:
    status = LocalKafka(LocalKafkaSettings(home=tmp_path)).status()

    assert not status.running
    assert status.pid is None
    assert status.home == tmp_path.resolve()


@pytest.mark.skipif(not Path("/proc").is_dir(), reason="needs procfs to tell processes apart")
def test_status_ignores_a_pid_file_naming_a_process_that_is_not_kafka(tmp_path: Path) -> None:
    (tmp_path / "kafka.pid").write_text(f"{os.getpid()}\n")

    assert not LocalKafka(LocalKafkaSettings(home=tmp_path)).status().running


def test_ensure_jars_names_what_to_install_when_java_is_missing(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("PATH", str(tmp_path / "empty-bin"))

    with pytest.raises(LocalKafkaError, match=r"`java`.*install.*Java 17"):
        LocalKafka(LocalKafkaSettings(home=tmp_path)).ensure_jars()


@pytest.mark.skipif(shutil.which("java") is None, reason="needs java on PATH")
def test_ensure_jars_reuses_a_complete_cache_without_maven(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    java = shutil.which("java")
    assert java is not None
    bin_dir = tmp_path / "bin"
    bin_dir.mkdir()
    (bin_dir / "java").symlink_to(java)
    monkeypatch.setenv("PATH", str(bin_dir))
    local_kafka = LocalKafka(LocalKafkaSettings(home=tmp_path / "home", version="9.9.9"))
    local_kafka.libs_dir.mkdir(parents=True)
    (local_kafka.libs_dir / ".complete").touch()

    assert local_kafka.ensure_jars() == local_kafka.libs_dir


def test_kafka_commands_default_to_the_configured_number_of_brokers(tmp_path: Path) -> None:
    from typer.testing import CliRunner

    from pipeline.cli import app

    env = {"PIPELINE_LOCAL_KAFKA_HOME": str(tmp_path), "PIPELINE_LOCAL_KAFKA_PORT": "29092"}
    single = CliRunner().invoke(app, ["kafka", "status"], env=env)
    cluster = CliRunner().invoke(app, ["kafka", "status", "--brokers", "3"], env=env)
    # nothing runs there: both report it (exit 1), neither refuses the arguments (exit 2)
    assert single.exit_code == 1, single.output
    assert "Kafka: stopped" in single.output
    assert cluster.exit_code == 1, cluster.output
    assert "node 3: stopped" in cluster.output
