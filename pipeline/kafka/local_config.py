"""The local Kafka's configuration files, rendered: pure functions, tested without Java.

:func:`render_server_properties` writes one KRaft node (broker and controller in one
process): alone (``voters=None``: a single voter, formatted ``--standalone``) or as one
of a static quorum of several (``voters``: ``"1@127.0.0.1:9093,2@..."``), with the
internal topics replicated ``replication`` times.
"""

from __future__ import annotations

import base64
import uuid
from pathlib import Path
from xml.sax.saxutils import escape

HOST = "127.0.0.1"
# Kafka logs through SLF4J 1.x; without a binding the broker prints nothing at all.
LOG4J_SLF4J_VERSION = "2.24.3"
SCRAM_MECHANISM = "SCRAM-SHA-512"
# StorageTool reads `MECHANISM=[name=...,password=...]` by splitting on these characters.
SCRAM_FORBIDDEN_CHARACTERS = frozenset(',=[]"')


class LocalKafkaError(Exception):
    """The local broker could not be fetched, started or stopped; the message says why."""


def render_pom(kafka_version: str, log4j_slf4j_version: str = LOG4J_SLF4J_VERSION) -> str:
    """Return a pom.xml whose runtime dependencies are exactly the broker's classpath."""
    artifacts = [
        ("org.apache.kafka", "kafka_2.13", kafka_version),
        ("org.apache.kafka", "kafka-tools", kafka_version),
        ("org.apache.logging.log4j", "log4j-slf4j-impl", log4j_slf4j_version),
    ]
    dependencies = "\n".join(
        f"    <dependency><groupId>{escape(group)}</groupId>"
        f"<artifactId>{escape(artifact)}</artifactId>"
        f"<version>{escape(version)}</version></dependency>"
        for group, artifact, version in artifacts
    )
    # packaging=pom: Maven only resolves dependencies, there is nothing to compile.
    return f"""<?xml version="1.0" encoding="UTF-8"?>
<project xmlns="http://maven.apache.org/POM/4.0.0"
         xmlns:xsi="http://www.w3.org/2001/XMLSchema-instance"
         xsi:schemaLocation="http://maven.apache.org/POM/4.0.0 https://maven.apache.org/xsd/maven-4.0.0.xsd">
  <modelVersion>4.0.0</modelVersion>
  <groupId>local.pipeline</groupId>
  <artifactId>local-kafka-runtime</artifactId>
  <version>{escape(kafka_version)}</version>
  <packaging>pom</packaging>
  <dependencies>
{dependencies}
  </dependencies>
</project>
"""


def _property_value(value: object) -> str:
    # In .properties files a backslash starts an escape sequence.
    return str(value).replace("\\", "\\\\")


def render_server_properties(
    *,
    port: int,
    controller_port: int,
    data_dir: Path,
    sasl_port: int | None = None,
    node_id: int = 1,
    voters: str | None = None,
    replication: int = 1,
) -> str:
    """Return server.properties for one node that is both broker and KRaft controller;
    with ``sasl_port``, also a SASL_PLAINTEXT listener that accepts SCRAM-SHA-512 only.

    ``voters`` (``"1@host:port,2@host:port,..."``) makes the node one of a static
    controller quorum; ``replication`` is then the replication factor of the internal
    topics and of topics created without one, with ``min.insync.replicas`` one less
    (at least 1), the way production clusters run."""
    client_listeners = {"PLAINTEXT": port}
    if sasl_port is not None:
        client_listeners["SASL_PLAINTEXT"] = sasl_port
    advertised = ",".join(f"{name}://{HOST}:{p}" for name, p in client_listeners.items())
    protocols = ",".join(f"{name}:{name}" for name in client_listeners)
    entries: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": node_id,
        "listeners": f"{advertised},CONTROLLER://{HOST}:{controller_port}",
        "advertised.listeners": advertised,
        "controller.listener.names": "CONTROLLER",
        # Brokers and the controller keep talking PLAINTEXT: only clients authenticate.
        "inter.broker.listener.name": "PLAINTEXT",
        "listener.security.protocol.map": f"{protocols},CONTROLLER:PLAINTEXT",
    }
    if sasl_port is not None:
        entries |= {
            "sasl.enabled.mechanisms": SCRAM_MECHANISM,
            # The broker side of SCRAM needs no credentials of its own: it checks clients
            # against the users stored in the metadata log.
            f"listener.name.sasl_plaintext.{SCRAM_MECHANISM.lower()}.sasl.jaas.config": (
                "org.apache.kafka.common.security.scram.ScramLoginModule required;"
            ),
        }
    if voters is None:
        entries["controller.quorum.bootstrap.servers"] = f"{HOST}:{controller_port}"
    else:
        entries["controller.quorum.voters"] = voters
    min_isr = max(1, replication - 1)
    entries |= {
        "log.dirs": data_dir,
        # The defaults ask for 3 replicas of the internal topics; on one node the group
        # and transaction coordinators would then never start.
        "offsets.topic.replication.factor": replication,
        "transaction.state.log.replication.factor": replication,
        "transaction.state.log.min.isr": min_isr,
        "share.coordinator.state.topic.replication.factor": replication,
        "share.coordinator.state.topic.min.isr": min_isr,
        "default.replication.factor": replication,
        "min.insync.replicas": min_isr,
        "offsets.topic.num.partitions": 12,
        "transaction.state.log.num.partitions": 12,
        "num.partitions": 12,
        # Topics come from the pipeline's topology, never from a typo in a producer.
        "auto.create.topics.enable": "false",
        # Otherwise every first group join waits 3 s for more members, which tests feel.
        "group.initial.rebalance.delay.ms": 0,
        # After a SIGKILL the controller refuses the restarted broker with
        # DUPLICATE_BROKER_REGISTRATION until the dead one's session expires (9 s by default).
        "broker.heartbeat.interval.ms": 1000,
        "broker.session.timeout.ms": 4000,
    }
    return "".join(f"{key}={_property_value(value)}\n" for key, value in entries.items())


def render_scram_credential(username: str, password: str) -> str:
    """Return one ``--add-scram`` argument of ``StorageTool format`` for a SCRAM-SHA-512 user."""
    for what, value in (("user name", username), ("password", password)):
        # Refused here, never echoed: StorageTool would misparse the value, and its error
        # message would print it.
        if not value or SCRAM_FORBIDDEN_CHARACTERS.intersection(value):
            raise LocalKafkaError(
                f"a SCRAM {what} must be non-empty and contain none of "
                f"{''.join(sorted(SCRAM_FORBIDDEN_CHARACTERS))}"
            )
    return f"{SCRAM_MECHANISM}=[name={username},password={password}]"


def render_log4j2_properties(log_file: Path) -> str:
    """Return a log4j2 configuration writing to ``log_file``, Kafka's own loggers at WARN.

    ``state.change.logger`` logs a line per partition per start at INFO, so it is quieted too;
    ``KafkaRaftServer`` stays at INFO for its one "Kafka Server started" line.
    """
    log_file_value = _property_value(log_file)
    return f"""status = warn
appender.file.type = RollingFile
appender.file.name = file
appender.file.fileName = {log_file_value}
appender.file.filePattern = {log_file_value}.%i
appender.file.layout.type = PatternLayout
appender.file.layout.pattern = [%d] %p %m (%c)%n
appender.file.policies.type = Policies
appender.file.policies.size.type = SizeBasedTriggeringPolicy
appender.file.policies.size.size = 20MB
appender.file.strategy.type = DefaultRolloverStrategy
appender.file.strategy.max = 3
rootLogger.level = INFO
rootLogger.appenderRef.file.ref = file
logger.kafka.name = kafka
logger.kafka.level = WARN
logger.apache_kafka.name = org.apache.kafka
logger.apache_kafka.level = WARN
logger.state_change.name = state.change.logger
logger.state_change.level = WARN
logger.server_started.name = kafka.server.KafkaRaftServer
logger.server_started.level = INFO
"""


def new_cluster_id() -> str:
    """Return a random KRaft cluster id (a URL-safe base64 UUID, as ``random-uuid`` prints)."""
    while True:
        cluster_id = base64.urlsafe_b64encode(uuid.uuid4().bytes).rstrip(b"=").decode()
        # Kafka refuses ids starting with '-' (they read as command-line flags).
        if not cluster_id.startswith("-"):
            return cluster_id
