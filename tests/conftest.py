"""One real Kafka broker per test session, and an isolated namespace per test.

The broker comes from, in order: ``PIPELINE_KAFKA_BOOTSTRAP_SERVERS`` (used as is),
testcontainers' ``KafkaContainer`` where a Docker engine answers, or the project's own
local broker (``pipeline kafka up``: Maven Central jars, no Docker). When none of them
works the session fails with instructions; real-broker tests are never skipped.
"""

from __future__ import annotations

import asyncio
import os
import shutil
import tempfile
import uuid
from collections.abc import AsyncIterator, Iterator
from typing import TYPE_CHECKING

import pytest

from pipeline.kafka.admin import admin_client, apply_topics, broker_reachable, delete_topics
from pipeline.kafka.topology import Naming, pipeline_topics
from pipeline.settings import KafkaSettings, Settings

if TYPE_CHECKING:
    from pipeline.kafka.local_cluster import LocalCluster

# The order API's database, unless a test names its own: a fresh SQLite file of this
# session, read by every IngressSettings built from here on (test modules build theirs at
# import). Keys and views of earlier runs, or a developer's own database, never answer.
os.environ["PIPELINE_API_DATABASE_URL"] = (
    f"sqlite+aiosqlite:///{tempfile.mkdtemp(prefix='ingress-db-')}/ingress.db"
)

NO_BROKER = (
    "no Kafka broker for the integration tests: {why}\n"
    "Run `make test` (it starts the local broker from Maven Central jars; needs Java 17+ "
    "and Maven), or start one with `.venv/bin/pipeline kafka up`, or point "
    "PIPELINE_KAFKA_BOOTSTRAP_SERVERS at a running broker. To run only the unit tests, "
    "pass `-m unit` explicitly."
)


def _docker_available() -> bool:
    if shutil.which("docker") is None:
        return False
    try:
        import docker  # type: ignore[import-untyped]

        docker.from_env().ping()
    except Exception:
        return False
    return True


@pytest.fixture(scope="session")
def kafka_bootstrap() -> Iterator[str]:
    """The bootstrap address of a real broker for the whole session."""
    configured = os.environ.get("PIPELINE_KAFKA_BOOTSTRAP_SERVERS")
    if configured:
        if not asyncio.run(broker_reachable(KafkaSettings(bootstrap_servers=configured))):
            pytest.fail(NO_BROKER.format(why=f"nothing answers at {configured}"), False)
        yield configured
        return
    if _docker_available():
        from testcontainers.kafka import KafkaContainer

        with KafkaContainer("apache/kafka:4.1.1").with_kraft() as container:
            yield container.get_bootstrap_server()
        return
    from pipeline.kafka.local import LocalKafka, LocalKafkaError

    local = LocalKafka(Settings().local_kafka)
    was_running = local.status().running
    try:
        bootstrap = local.up()
    except LocalKafkaError as exc:
        pytest.fail(NO_BROKER.format(why=f"the local broker did not start: {exc}"), False)
    os.environ["PIPELINE_KAFKA_BOOTSTRAP_SERVERS"] = bootstrap  # for CLI subprocesses
    yield bootstrap
    if not was_running:
        local.down()


CLUSTER_PORT = 19092
"""The test cluster's first node; the others follow 10 ports apart, away from 9092."""


@pytest.fixture(scope="session")
def kafka_cluster() -> Iterator[LocalCluster]:
    """A local three-node KRaft cluster (replication 3, min.insync.replicas 2) for the
    whole session, from the same jars; it fails the session with instructions when it
    cannot start."""
    from pipeline.kafka.local import LocalKafkaError
    from pipeline.kafka.local_cluster import LocalCluster

    local = Settings().local_kafka.model_copy(
        update={"port": CLUSTER_PORT, "controller_port": CLUSTER_PORT + 1}
    )
    cluster = LocalCluster(local, 3)
    was_running = all(status.running for status in cluster.status())
    if not any(status.running for status in cluster.status()):
        # A fresh cluster: topics left by earlier sessions' killed runs would all load
        # into the nodes' heaps at start.
        shutil.rmtree(cluster.home, ignore_errors=True)
        cluster = LocalCluster(local, 3)
    try:
        cluster.up()
    except LocalKafkaError as exc:
        pytest.fail(NO_BROKER.format(why=f"the local cluster did not start: {exc}"), False)
    yield cluster
    if not was_running:
        cluster.down()


@pytest.fixture
async def settings(kafka_bootstrap: str) -> AsyncIterator[Settings]:
    """Settings pointing at the session broker, in a topic namespace of this test only.

    The namespace's topics are deleted afterwards: one broker holds every test's
    partitions in one heap.
    """
    base = Settings()
    prefix = f"t{uuid.uuid4().hex[:10]}."
    yield base.model_copy(
        update={
            "kafka": base.kafka.model_copy(update={"bootstrap_servers": kafka_bootstrap}),
            "topics": base.topics.model_copy(update={"prefix": prefix}),
            "http": base.http.model_copy(update={"enabled": False}),
            "stage": base.stage.model_copy(update={"commit_interval_ms": 200}),
        }
    )
    connection = KafkaSettings(bootstrap_servers=kafka_bootstrap)
    async with admin_client(connection) as admin:
        mine = [name for name in await admin.list_topics() if name.startswith(prefix)]
    await delete_topics(connection, mine)


@pytest.fixture
async def topics(settings: Settings) -> Naming:
    """The test's topics, created fresh; the naming to reach them."""
    report = await apply_topics(settings.kafka, pipeline_topics(settings.topics))
    assert report.clean, report.drift
    return Naming.of(settings.topics)


def pytest_collection_modifyitems(items: list[pytest.Item]) -> None:
    """Tests under tests/integration and tests/chaos are marked as such automatically."""
    for item in items:
        path = str(item.path)
        if "/tests/integration/" in path:
            item.add_marker(pytest.mark.integration)
        elif "/tests/chaos/" in path:
            item.add_marker(pytest.mark.chaos)
        elif "/tests/unit/" in path:
            item.add_marker(pytest.mark.unit)
