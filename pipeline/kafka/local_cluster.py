"""A local multi-node Kafka cluster (KRaft, every node broker and controller) from the
same Maven jars as the single broker, for failover runs and tests.

Node *n* (1-based) listens on ``port + (n-1)*port_step`` with its controller on
``controller_port + (n-1)*port_step`` (9092/9093, 9102/9103, 9112/9113 by default), lives
under ``<home>/cluster-<brokers>/node-<n>`` and shares the jars of ``<home>``. The
nodes form a static controller quorum; internal topics and topics created without a
replication factor get one replica per node (at most 3), ``min.insync.replicas`` one
less — the production shape, so a broker can die without a write being refused.
"""

from __future__ import annotations

import logging
import time
from pathlib import Path

from pipeline.kafka.local import LocalKafka, LocalKafkaStatus, QuorumMember
from pipeline.kafka.local_config import HOST, LocalKafkaError, new_cluster_id
from pipeline.settings import LocalKafkaSettings

__all__ = ["LocalCluster"]

logger = logging.getLogger(__name__)


class LocalCluster:
    """``brokers`` local Kafka nodes forming one cluster."""

    def __init__(self, settings: LocalKafkaSettings, brokers: int | None = None) -> None:
        self._settings = settings
        self.brokers = brokers or settings.brokers
        if self.brokers < 2:
            raise LocalKafkaError("a cluster has at least 2 nodes; use LocalKafka for one")
        self.home = settings.home.expanduser().resolve() / f"cluster-{self.brokers}"
        self.replication = min(3, self.brokers)
        step = settings.port_step
        self._ports = [settings.port + i * step for i in range(self.brokers)]
        self._controller_ports = [settings.controller_port + i * step for i in range(self.brokers)]
        self.nodes = [self._node(n) for n in range(1, self.brokers + 1)]

    def _cluster_id(self) -> str:
        path = self.home / "cluster-id"
        if not path.exists():
            self.home.mkdir(parents=True, exist_ok=True)
            path.write_text(new_cluster_id())
        return path.read_text().strip()

    def _node(self, node_id: int) -> LocalKafka:
        voters = ",".join(
            f"{n}@{HOST}:{port}" for n, port in enumerate(self._controller_ports, start=1)
        )
        settings = self._settings.model_copy(
            update={
                "home": self.home / f"node-{node_id}",
                "port": self._ports[node_id - 1],
                "controller_port": self._controller_ports[node_id - 1],
                "heap": self._settings.cluster_heap,
            }
        )
        quorum = QuorumMember(node_id, voters, self._cluster_id(), self.replication)
        return LocalKafka(settings, quorum=quorum, libs_home=self._settings.home)

    @property
    def bootstrap(self) -> str:
        """Every node's address, comma-separated, as managed services hand them out."""
        return ",".join(f"{HOST}:{port}" for port in self._ports)

    def node(self, node_id: int) -> LocalKafka:
        """Node ``node_id`` (1-based)."""
        return self.nodes[node_id - 1]

    def node_of_port(self, port: int) -> int:
        """The id of the node listening on ``port``."""
        return self._ports.index(port) + 1

    def up(self) -> str:
        """Start every node that is not running and wait until all serve; the
        bootstrap list."""
        started_at = time.monotonic()
        self.nodes[0].ensure_jars()
        for node in self.nodes:  # all first: a voter serves once a majority runs
            node.launch()
        for node in self.nodes:
            node.wait_serving()
        logger.info(
            "Kafka cluster of %d serves %s after %.1f s",
            self.brokers,
            self.bootstrap,
            time.monotonic() - started_at,
        )
        return self.bootstrap

    def start(self, node_id: int) -> None:
        """Bring one node back (after :meth:`kill` or :meth:`stop`) and wait for it."""
        node = self.node(node_id)
        node.launch()
        node.wait_serving()

    def kill(self, node_id: int) -> bool:
        """SIGKILL one node, as a crash would; its data stays."""
        return self.node(node_id).kill()

    def stop(self, node_id: int) -> bool:
        """Stop one node gracefully."""
        return self.node(node_id).down()

    def down(self) -> bool:
        """Stop every node; whether any was running."""
        stopped = [node.down() for node in self.nodes]  # every node, not the first only
        return any(stopped)

    def status(self) -> list[LocalKafkaStatus]:
        """Each node's status, node 1 first."""
        return [node.status() for node in self.nodes]

    def active_controller(self, attempts: int = 5) -> int:
        """The node id of the KRaft quorum's leader (the active controller), as Kafka's
        own ``kafka-metadata-quorum`` tool reports it (asked again while a node that
        just came back is still joining)."""
        for attempt in range(attempts):
            try:
                return self._quorum_leader()
            except LocalKafkaError:
                if attempt == attempts - 1:
                    raise
                time.sleep(1.0)
        raise AssertionError("unreachable")  # pragma: no cover

    def _quorum_leader(self) -> int:
        running = [n for n, node in enumerate(self.nodes, start=1) if node.status().running]
        if not running:
            raise LocalKafkaError("no node of the cluster runs")
        controllers = ",".join(f"{HOST}:{self._controller_ports[n - 1]}" for n in running)
        output = self.nodes[running[0] - 1].run_tool(
            "org.apache.kafka.tools.MetadataQuorumCommand",
            "--bootstrap-controller",
            controllers,
            "describe",
            "--status",
        )
        for line in output.splitlines():
            name, _, value = line.partition(":")
            if name.strip() == "LeaderId":
                return int(value.strip())
        raise LocalKafkaError(f"no LeaderId in the quorum's status:\n{output}")

    @property
    def log_paths(self) -> list[Path]:
        """Each node's broker log."""
        return [node.log_path for node in self.nodes]
