"""A single-node Apache Kafka (KRaft, combined broker + controller) run as a local process.

The broker comes from Maven Central jars, not Docker: :meth:`LocalKafka.ensure_jars` resolves
them once into ``<home>/libs-<version>``, :meth:`LocalKafka.up` formats storage on first use and
starts ``kafka.Kafka`` detached on 127.0.0.1, and :meth:`LocalKafka.down` stops it. The state
lives under ``<home>``::

    libs-<version>/    the broker's classpath (complete once ``.complete`` exists)
    maven-<version>/   the throwaway pom.xml Maven resolves it from
    config/            server.properties, log4j2.properties
    data/              the log dir (formatted once ``meta.properties`` exists)
    logs/              server.log (log4j) and stdout.log (the JVM's own output)
    kafka.pid          the running broker's pid, which is also its process group
    scram-users        the SCRAM user names the storage was formatted with (no passwords)

``up(scram_users=...)`` opts into a second, authenticated listener (SASL_PLAINTEXT with
SCRAM-SHA-512, on :attr:`LocalKafka.sasl_port`) beside the PLAINTEXT one. KRaft has no
ZooKeeper to store credentials in before the broker runs, so the users are written into the
metadata log when the storage is formatted (``StorageTool format --add-scram``).

The files it writes come from pure renderers (:mod:`pipeline.kafka.local_config`), tested
without Java; storage formatting and the checks on a reused home are in
:mod:`pipeline.kafka.local_guards`, the jars and process handling in
:mod:`pipeline.kafka.local_process`.
"""

from __future__ import annotations

import fcntl
import logging
import signal
import subprocess
import time
from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TypeVar

from pipeline.kafka.local_config import (
    HOST,
    LocalKafkaError,
    render_log4j2_properties,
    render_server_properties,
)
from pipeline.kafka.local_guards import (
    format_storage,
    refuse_other_listeners,
    refuse_other_scram_users,
    refuse_taken_ports,
    scram_credentials,
)
from pipeline.kafka.local_process import (
    JAVA_HINT,
    fetch_jars,
    is_kafka_process,
    metadata_answers,
    port_accepts,
    require_tool,
    run_coroutine,
    stop_group,
    tail,
)
from pipeline.settings import LocalKafkaSettings

__all__ = ["LocalKafka", "LocalKafkaError", "LocalKafkaStatus", "QuorumMember"]

logger = logging.getLogger(__name__)

STOP_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.25
LOG_TAIL_LINES = 30
T = TypeVar("T")


@dataclass(frozen=True)
class LocalKafkaStatus:
    """A snapshot of the local broker: whether its process runs, and where it lives."""

    running: bool
    pid: int | None
    bootstrap: str
    log_path: Path
    home: Path


@dataclass(frozen=True, slots=True)
class QuorumMember:
    """What makes a node one of a local cluster's static KRaft quorum."""

    node_id: int
    voters: str
    """``"1@127.0.0.1:9093,2@127.0.0.1:9103,..."``: every voter, this node included."""
    cluster_id: str
    replication: int


class LocalKafka:
    """Fetches, starts and stops one local Kafka broker described by :class:`LocalKafkaSettings`.

    ``sasl_port`` is where the opt-in SCRAM listener of ``up(scram_users=...)`` listens
    (default: the PLAINTEXT port + 2, i.e. 9094 beside 9092 and the controller's 9093).
    """

    def __init__(
        self,
        settings: LocalKafkaSettings,
        *,
        sasl_port: int | None = None,
        quorum: QuorumMember | None = None,
        libs_home: Path | None = None,
    ) -> None:
        self._settings = settings
        self._home = settings.home.expanduser().resolve()
        self._libs_home = (libs_home or settings.home).expanduser().resolve()
        self._sasl_port = settings.port + 2 if sasl_port is None else sasl_port
        self._quorum = quorum
        self._process: subprocess.Popen[bytes] | None = None
        # Remembered so that restart() brings the same listeners back.
        self._scram_users: dict[str, str] | None = None

    @property
    def home(self) -> Path:
        """The absolute folder holding jars, config, data and logs."""
        return self._home

    @property
    def bootstrap(self) -> str:
        """The PLAINTEXT bootstrap address clients use."""
        return f"{HOST}:{self._settings.port}"

    @property
    def sasl_port(self) -> int:
        """The port of the SASL_PLAINTEXT (SCRAM-SHA-512) listener, when it is enabled."""
        return self._sasl_port

    @property
    def sasl_bootstrap(self) -> str:
        """The SASL_PLAINTEXT bootstrap address, served after ``up(scram_users=...)``."""
        return f"{HOST}:{self._sasl_port}"

    @property
    def log_path(self) -> Path:
        """The broker's log4j log file."""
        return self._home / "logs" / "server.log"

    @property
    def libs_dir(self) -> Path:
        """The folder whose jars form the broker's classpath."""
        return self._libs_home / f"libs-{self._settings.version}"

    @property
    def _pid_file(self) -> Path:
        return self._home / "kafka.pid"

    @property
    def _scram_users_file(self) -> Path:
        return self._home / "scram-users"

    @property
    def _config_dir(self) -> Path:
        return self._home / "config"

    @property
    def _data_dir(self) -> Path:
        return self._home / "data"

    @property
    def _stdout_path(self) -> Path:
        return self._home / "logs" / "stdout.log"

    @contextmanager
    def _exclusive(self) -> Iterator[None]:
        # Parallel test workers may all call up(); only one may fetch or start at a time.
        self._home.mkdir(parents=True, exist_ok=True)
        with (self._home / ".lock").open("w") as lock_file:
            fcntl.flock(lock_file, fcntl.LOCK_EX)
            try:
                yield
            finally:
                fcntl.flock(lock_file, fcntl.LOCK_UN)

    def ensure_jars(self) -> Path:
        """Resolve the broker's jars with Maven unless cached; return the classpath folder."""
        with self._exclusive():
            return self._ensure_jars()

    def _ensure_jars(self) -> Path:
        return fetch_jars(self.libs_dir, self._libs_home, self._settings.version)

    def _read_pid(self) -> int | None:
        try:
            return int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _is_alive(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            # poll() also reaps our own child, which would otherwise linger as a zombie.
            return self._process.poll() is None
        return is_kafka_process(pid)

    def _running_pid(self) -> int | None:
        pid = self._read_pid()
        return pid if pid is not None and self._is_alive(pid) else None

    def status(self) -> LocalKafkaStatus:
        """Report whether the broker recorded in the pid file is running."""
        pid = self._running_pid()
        return LocalKafkaStatus(pid is not None, pid, self.bootstrap, self.log_path, self._home)

    def up(self, *, scram_users: Mapping[str, str] | None = None) -> str:
        """Start the broker unless it already runs; return its PLAINTEXT bootstrap address
        once it serves.

        ``scram_users`` (name -> password) also opens a SASL_PLAINTEXT listener on
        :attr:`sasl_bootstrap` accepting exactly these SCRAM-SHA-512 users. They are stored
        when the storage is formatted, so a home formatted with other users is refused.
        """
        credentials = self._scram_credentials(scram_users)
        with self._exclusive():
            pid = self._running_pid()
            if pid is not None:
                self._refuse_other_listeners(scram_users)
                self._wait_until_serving(pid)
                if scram_users is not None:
                    self._scram_users = dict(scram_users)
                return self.bootstrap
            started_at = time.monotonic()
            pid = self._launch(credentials, scram_users)
            try:
                self._wait_until_serving(pid)
            except LocalKafkaError:
                self._stop(pid, signal.SIGTERM)  # never leave a half-started broker behind
                raise
            logger.info(
                "Kafka pid %d serves %s after %.1f s",
                pid,
                self.bootstrap,
                time.monotonic() - started_at,
            )
            return self.bootstrap

    def _launch(self, credentials: list[str], scram_users: Mapping[str, str] | None) -> int:
        self._refuse_taken_ports(sasl=scram_users is not None)
        libs = self._ensure_jars()
        self._write_config(sasl=scram_users is not None)
        self._format_storage(libs, credentials, sorted(scram_users or ()))
        self._scram_users = dict(scram_users) if scram_users is not None else None
        return self._start(libs)

    def launch(self) -> int:
        """Start this node without waiting for it to serve (a quorum member serves only
        once a majority of its voters runs); its pid. Already running: that pid."""
        with self._exclusive():
            pid = self._running_pid()
            return pid if pid is not None else self._launch([], None)

    def wait_serving(self) -> None:
        """Return once this node answers metadata requests (:class:`LocalKafkaError` if
        it exits or times out meanwhile)."""
        pid = self._running_pid()
        if pid is None:
            raise LocalKafkaError(f"Kafka at {self.bootstrap} is not running")
        self._wait_until_serving(pid)

    def _scram_credentials(self, scram_users: Mapping[str, str] | None) -> list[str]:
        """The ``--add-scram`` arguments, checked before anything starts."""
        ports = (self._settings.port, self._settings.controller_port, self._sasl_port)
        return scram_credentials(scram_users, ports)

    def _refuse_other_listeners(self, scram_users: Mapping[str, str] | None) -> None:
        # A running broker keeps its listeners and users: asking for others needs a restart.
        if scram_users is None:
            return
        refuse_other_listeners(
            self._config_dir / "server.properties", self.sasl_bootstrap, self._home
        )
        refuse_other_scram_users(self._scram_users_file, sorted(scram_users), self._data_dir)

    def _refuse_taken_ports(self, *, sasl: bool) -> None:
        ports = [self._settings.port, self._settings.controller_port]
        refuse_taken_ports([*ports, self._sasl_port] if sasl else ports, sasl=sasl)

    def _write_config(self, *, sasl: bool) -> None:
        self._config_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        server_properties = render_server_properties(
            port=self._settings.port,
            controller_port=self._settings.controller_port,
            data_dir=self._data_dir,
            sasl_port=self._sasl_port if sasl else None,
            node_id=self._quorum.node_id if self._quorum else 1,
            voters=self._quorum.voters if self._quorum else None,
            replication=self._quorum.replication if self._quorum else 1,
        )
        (self._config_dir / "server.properties").write_text(server_properties)
        (self._config_dir / "log4j2.properties").write_text(render_log4j2_properties(self.log_path))

    def run_tool(self, main_class: str, *args: str, timeout_s: float = 60.0) -> str:
        """Run one of Kafka's own tools from the same jars (e.g.
        ``org.apache.kafka.tools.MetadataQuorumCommand``); its standard output."""
        command = self._java_command(self.libs_dir, main_class, *args)
        command[1] = "-Xmx256m"  # a tool, not a broker
        result = subprocess.run(
            command, capture_output=True, text=True, check=False, timeout=timeout_s
        )
        if result.returncode != 0:
            raise LocalKafkaError(f"{main_class} failed:\n{result.stdout}{result.stderr}")
        return result.stdout

    def _java_command(self, libs: Path, main_class: str, *args: str) -> list[str]:
        return [
            require_tool("java", JAVA_HINT),
            f"-Xmx{self._settings.heap}",
            f"-Dlog4j2.configurationFile={self._config_dir / 'log4j2.properties'}",
            "-cp",
            f"{libs}/*",  # the JVM expands the wildcard itself
            main_class,
            *args,
        ]

    def _format_storage(self, libs: Path, scram_credentials: list[str], names: list[str]) -> None:
        if (self._data_dir / "meta.properties").exists():
            if names:
                refuse_other_scram_users(self._scram_users_file, names, self._data_dir)
            return
        quorum = self._quorum
        format_storage(
            self._java_command(libs, "kafka.tools.StorageTool"),
            self._config_dir / "server.properties",
            self._data_dir,
            cluster_id=quorum.cluster_id if quorum else None,
            scram_credentials=scram_credentials,
        )
        self._scram_users_file.write_text("".join(f"{name}\n" for name in names))

    def _start(self, libs: Path) -> int:
        command = self._java_command(
            libs, "kafka.Kafka", str(self._config_dir / "server.properties")
        )
        with self._stdout_path.open("ab") as stdout:
            # A new session detaches the broker from our terminal and makes its pid the
            # process group id, so down() can signal the whole group.
            self._process = subprocess.Popen(
                command,
                stdin=subprocess.DEVNULL,
                stdout=stdout,
                stderr=subprocess.STDOUT,
                start_new_session=True,
                cwd=self._home,
            )
        self._pid_file.write_text(f"{self._process.pid}\n")
        return self._process.pid

    def _wait_until_serving(self, pid: int) -> None:
        deadline = time.monotonic() + self._settings.start_timeout_s
        while time.monotonic() < deadline:
            if not self._is_alive(pid):
                self._pid_file.unlink(missing_ok=True)
                raise LocalKafkaError(
                    f"Kafka (pid {pid}) exited while starting.\n{self._log_tails()}"
                )
            if port_accepts(self._settings.port) and run_coroutine(
                metadata_answers(self.bootstrap, timeout_s=5.0)
            ):
                return
            time.sleep(POLL_INTERVAL_S)
        raise LocalKafkaError(
            f"Kafka (pid {pid}) did not answer on {self.bootstrap} within "
            f"{self._settings.start_timeout_s} s.\n{self._log_tails()}"
        )

    def _log_tails(self) -> str:
        return "\n".join(
            f"--- last {LOG_TAIL_LINES} lines of {path} ---\n{tail(path, LOG_TAIL_LINES)}"
            for path in (self._stdout_path, self.log_path)
        )

    def down(self) -> bool:
        """Stop the broker (SIGTERM, then SIGKILL after 30 s); return whether one was running."""
        with self._exclusive():
            return self._stop(self._running_pid(), signal.SIGTERM)

    def kill(self) -> bool:
        """SIGKILL the broker at once, as a crash would (for chaos tests); keep its data."""
        with self._exclusive():
            return self._stop(self._running_pid(), signal.SIGKILL)

    def _stop(self, pid: int | None, first_signal: signal.Signals) -> bool:
        if pid is not None:
            stop_group(pid, first_signal, self._is_alive, STOP_TIMEOUT_S)
        self._pid_file.unlink(missing_ok=True)
        return pid is not None

    def restart(self) -> str:
        """Stop the broker and start it again on the same data and listeners; return its
        bootstrap address."""
        self.down()
        return self.up(scram_users=self._scram_users)
