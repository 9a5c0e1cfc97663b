"""A local broker's storage, and refusing one that cannot serve what was asked of it.

A broker home is reused across runs, and its storage keeps the SCRAM users it was
formatted with (:func:`format_storage` writes them into the metadata log); a port may
belong to a process the project did not start. The checks run before anything starts
(or before a running broker is reused) and say what to do, instead of a JVM dying on
bind or a client failing to authenticate later.
"""

from __future__ import annotations

import logging
import subprocess
from collections.abc import Mapping, Sequence
from pathlib import Path

from pipeline.kafka.local_config import (
    HOST,
    LocalKafkaError,
    new_cluster_id,
    render_scram_credential,
)
from pipeline.kafka.local_process import port_accepts

logger = logging.getLogger(__name__)


def format_storage(
    storage_tool: list[str],
    server_properties: Path,
    data_dir: Path,
    *,
    cluster_id: str | None,
    scram_credentials: list[str],
) -> None:
    """Format ``data_dir`` with ``storage_tool`` (the java command of Kafka's
    ``StorageTool``): as the single voter of its own quorum when ``cluster_id`` is
    ``None``, else as a member of that cluster (its voters are in its config)."""
    command = [
        *storage_tool,
        "format",
        *(() if cluster_id else ("--standalone",)),
        "-t",
        cluster_id or new_cluster_id(),
        "-c",
        str(server_properties),
    ]
    for credential in scram_credentials:
        # KRaft stores SCRAM users in the metadata log; this is how the first ones get
        # there before any client could authenticate to create them.
        command += ["--add-scram", credential]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        raise LocalKafkaError(f"formatting {data_dir} failed:\n{result.stdout}{result.stderr}")
    logger.info("formatted Kafka storage in %s", data_dir)


def scram_credentials(
    scram_users: Mapping[str, str] | None, ports: tuple[int, int, int]
) -> list[str]:
    """The ``--add-scram`` arguments for ``scram_users``; ``ports`` (PLAINTEXT,
    controller, SASL) must differ."""
    if scram_users is None:
        return []
    if not scram_users:
        raise LocalKafkaError("a SCRAM listener needs at least one user")
    port, controller_port, sasl_port = ports
    if len(set(ports)) != 3:
        raise LocalKafkaError(
            f"the SASL port {sasl_port} collides with port {port} "
            f"or controller port {controller_port}"
        )
    return [render_scram_credential(name, password) for name, password in scram_users.items()]


def refuse_other_listeners(config: Path, sasl_bootstrap: str, home: Path) -> None:
    """Refuse a running broker (its ``config``) without the SASL listener asked for."""
    try:
        running_config = config.read_text()
    except FileNotFoundError:
        running_config = ""
    if f"SASL_PLAINTEXT://{sasl_bootstrap}" not in running_config:
        raise LocalKafkaError(
            f"the broker in {home} already runs without the SASL listener on "
            f"{sasl_bootstrap}; stop it first (down()) to start it with SCRAM users"
        )


def refuse_other_scram_users(users_file: Path, names: list[str], data_dir: Path) -> None:
    """Refuse storage formatted with other SCRAM users than ``names``."""
    try:
        formatted_with = users_file.read_text().split()
    except FileNotFoundError:
        formatted_with = []
    if formatted_with != names:
        raise LocalKafkaError(
            f"the storage in {data_dir} holds SCRAM users {formatted_with}, not "
            f"{names}; users are only added when it is formatted: remove that folder "
            "(or use another home) to start afresh"
        )


def refuse_taken_ports(ports: Sequence[int], *, sasl: bool) -> None:
    """Refuse ports a process this project did not start listens on: the JVM would die
    on bind, or worse, that process would answer the readiness probe."""
    taken = [str(port) for port in ports if port_accepts(port)]
    if taken:
        raise LocalKafkaError(
            f"{HOST} port(s) {', '.join(taken)} are taken by a process this LocalKafka "
            "did not start; stop it or set PIPELINE_LOCAL_KAFKA_PORT / _CONTROLLER_PORT"
            + (" / the SASL port" if sasl else "")
        )
