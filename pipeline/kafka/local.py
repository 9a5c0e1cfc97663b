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

The renderers (:func:`render_pom`, :func:`render_server_properties`,
:func:`render_log4j2_properties`, :func:`render_scram_credential`) are pure, so they are
tested without Java.
"""

from __future__ import annotations

import asyncio
import base64
import fcntl
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
import uuid
from collections.abc import Coroutine, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from contextlib import contextmanager, suppress
from dataclasses import dataclass
from pathlib import Path
from typing import Any, TypeVar
from xml.sax.saxutils import escape

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from pipeline.settings import LocalKafkaSettings

__all__ = [
    "LOG4J_SLF4J_VERSION",
    "LocalKafka",
    "LocalKafkaError",
    "LocalKafkaStatus",
    "new_cluster_id",
    "render_log4j2_properties",
    "render_pom",
    "render_scram_credential",
    "render_server_properties",
]

logger = logging.getLogger(__name__)

# Kafka logs through SLF4J 1.x; without a binding the broker prints nothing at all.
LOG4J_SLF4J_VERSION = "2.24.3"
HOST = "127.0.0.1"
STOP_TIMEOUT_S = 30.0
POLL_INTERVAL_S = 0.25
LOG_TAIL_LINES = 30
COMPLETE_MARKER = ".complete"
SCRAM_MECHANISM = "SCRAM-SHA-512"
# StorageTool reads `MECHANISM=[name=...,password=...]` by splitting on these characters.
SCRAM_FORBIDDEN_CHARACTERS = frozenset(',=[]"')
JAVA_HINT = "a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)"
MAVEN_HINT = "Apache Maven (e.g. `apt-get install maven`)"
T = TypeVar("T")


class LocalKafkaError(Exception):
    """The local broker could not be fetched, started or stopped; the message says why."""


@dataclass(frozen=True)
class LocalKafkaStatus:
    """A snapshot of the local broker: whether its process runs, and where it lives."""

    running: bool
    pid: int | None
    bootstrap: str
    log_path: Path
    home: Path


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
    *, port: int, controller_port: int, data_dir: Path, sasl_port: int | None = None
) -> str:
    """Return server.properties for one node that is both broker and KRaft controller;
    with ``sasl_port``, also a SASL_PLAINTEXT listener that accepts SCRAM-SHA-512 only."""
    client_listeners = {"PLAINTEXT": port}
    if sasl_port is not None:
        client_listeners["SASL_PLAINTEXT"] = sasl_port
    advertised = ",".join(f"{name}://{HOST}:{p}" for name, p in client_listeners.items())
    protocols = ",".join(f"{name}:{name}" for name in client_listeners)
    entries: dict[str, object] = {
        "process.roles": "broker,controller",
        "node.id": 1,
        "controller.quorum.bootstrap.servers": f"{HOST}:{controller_port}",
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
    entries |= {
        "log.dirs": data_dir,
        # The defaults ask for 3 replicas of the internal topics; on one node the group
        # and transaction coordinators would then never start.
        "offsets.topic.replication.factor": 1,
        "transaction.state.log.replication.factor": 1,
        "transaction.state.log.min.isr": 1,
        "share.coordinator.state.topic.replication.factor": 1,
        "share.coordinator.state.topic.min.isr": 1,
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


def _tail(path: Path, lines: int) -> str:
    """The last ``lines`` lines of a log, without Java stack frames."""
    try:
        text = path.read_text(errors="replace")
    except FileNotFoundError:
        return "(missing)"
    # Frames would push the one line that says why (e.g. "Address already in use") out of view.
    events = [line for line in text.splitlines() if not _is_stack_frame(line)]
    return "\n".join(events[-lines:]) or "(empty)"


def _is_stack_frame(line: str) -> bool:
    stripped = line.lstrip()
    return line != stripped and (stripped.startswith("at ") or stripped.startswith("... "))


def _is_kafka_process(pid: int) -> bool:
    """Whether ``pid`` is a live ``kafka.Kafka`` JVM (not a zombie, not a recycled pid)."""
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if not Path("/proc").is_dir():
        return True  # no procfs: trust the signal probe
    cmdline = Path(f"/proc/{pid}/cmdline")
    try:
        # A zombie's cmdline is empty, so it counts as gone.
        return b"kafka.Kafka" in cmdline.read_bytes()
    except OSError:
        return False


def _port_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


async def _metadata_answers(bootstrap: str, timeout_s: float) -> bool:
    # An open port is not yet a serving broker: only a metadata answer with a broker is.
    admin = AIOKafkaAdminClient(
        bootstrap_servers=bootstrap,
        client_id="local-kafka-probe",
        request_timeout_ms=int(timeout_s * 1000),
    )
    try:
        async with asyncio.timeout(timeout_s):
            await admin.start()
            cluster: dict[str, Any] = await admin.describe_cluster()
        return bool(cluster.get("brokers"))
    except (KafkaError, OSError, TimeoutError):
        return False
    finally:
        await admin.close()


def _run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    # A fresh loop in a worker thread, so callers inside a running loop (async fixtures) work too.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-kafka") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def _require_tool(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LocalKafkaError(f"`{name}` is not on PATH; install {install_hint}.")
    return path


class LocalKafka:
    """Fetches, starts and stops one local Kafka broker described by :class:`LocalKafkaSettings`.

    ``sasl_port`` is where the opt-in SCRAM listener of ``up(scram_users=...)`` listens
    (default: the PLAINTEXT port + 2, i.e. 9094 beside 9092 and the controller's 9093).
    """

    def __init__(self, settings: LocalKafkaSettings, *, sasl_port: int | None = None) -> None:
        self._settings = settings
        self._home = settings.home.expanduser().resolve()
        self._sasl_port = settings.port + 2 if sasl_port is None else sasl_port
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
        return self._home / f"libs-{self._settings.version}"

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
        _require_tool("java", JAVA_HINT)
        libs = self.libs_dir
        if (libs / COMPLETE_MARKER).exists():
            return libs
        mvn = _require_tool("mvn", MAVEN_HINT)
        shutil.rmtree(libs, ignore_errors=True)  # drop a half-finished earlier fetch
        pom = self._home / f"maven-{self._settings.version}" / "pom.xml"
        pom.parent.mkdir(parents=True, exist_ok=True)
        pom.write_text(render_pom(self._settings.version))
        logger.info("fetching Kafka %s jars with Maven into %s", self._settings.version, libs)
        command = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
        command += [f"-DoutputDirectory={libs}", "-DincludeScope=runtime"]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            output = "\n".join((result.stdout + result.stderr).splitlines()[-LOG_TAIL_LINES:])
            raise LocalKafkaError(f"Maven could not fetch the Kafka jars:\n{output}")
        (libs / COMPLETE_MARKER).write_text("")
        return libs

    def _read_pid(self) -> int | None:
        try:
            return int(self._pid_file.read_text().strip())
        except (FileNotFoundError, ValueError):
            return None

    def _is_alive(self, pid: int) -> bool:
        if self._process is not None and self._process.pid == pid:
            # poll() also reaps our own child, which would otherwise linger as a zombie.
            return self._process.poll() is None
        return _is_kafka_process(pid)

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
            self._refuse_taken_ports(sasl=scram_users is not None)
            libs = self._ensure_jars()
            started_at = time.monotonic()
            self._write_config(sasl=scram_users is not None)
            self._format_storage(libs, credentials, sorted(scram_users or ()))
            self._scram_users = dict(scram_users) if scram_users is not None else None
            pid = self._start(libs)
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

    def _scram_credentials(self, scram_users: Mapping[str, str] | None) -> list[str]:
        """The ``--add-scram`` arguments, checked before anything starts."""
        if scram_users is None:
            return []
        if not scram_users:
            raise LocalKafkaError("a SCRAM listener needs at least one user")
        ports = {self._settings.port, self._settings.controller_port, self._sasl_port}
        if len(ports) != 3:
            raise LocalKafkaError(
                f"the SASL port {self._sasl_port} collides with port {self._settings.port} "
                f"or controller port {self._settings.controller_port}"
            )
        return [render_scram_credential(name, password) for name, password in scram_users.items()]

    def _refuse_other_listeners(self, scram_users: Mapping[str, str] | None) -> None:
        # A running broker keeps its listeners and users: asking for others needs a restart.
        if scram_users is None:
            return
        try:
            running_config = (self._config_dir / "server.properties").read_text()
        except FileNotFoundError:
            running_config = ""
        if f"SASL_PLAINTEXT://{self.sasl_bootstrap}" not in running_config:
            raise LocalKafkaError(
                f"the broker in {self._home} already runs without the SASL listener on "
                f"{self.sasl_bootstrap}; stop it first (down()) to start it with SCRAM users"
            )
        self._refuse_other_scram_users(sorted(scram_users))

    def _refuse_other_scram_users(self, names: list[str]) -> None:
        try:
            formatted_with = self._scram_users_file.read_text().split()
        except FileNotFoundError:
            formatted_with = []
        if formatted_with != names:
            raise LocalKafkaError(
                f"the storage in {self._data_dir} holds SCRAM users {formatted_with}, not "
                f"{names}; users are only added when it is formatted: remove that folder "
                "(or use another home) to start afresh"
            )

    def _refuse_taken_ports(self, *, sasl: bool) -> None:
        # A foreign listener would make the JVM die on bind, or worse, answer our probe.
        ports = [self._settings.port, self._settings.controller_port]
        if sasl:
            ports.append(self._sasl_port)
        taken = [str(port) for port in ports if _port_accepts(port)]
        if taken:
            raise LocalKafkaError(
                f"{HOST} port(s) {', '.join(taken)} are taken by a process this LocalKafka "
                "did not start; stop it or set PIPELINE_LOCAL_KAFKA_PORT / _CONTROLLER_PORT"
                + (" / the SASL port" if sasl else "")
            )

    def _write_config(self, *, sasl: bool) -> None:
        self._config_dir.mkdir(parents=True, exist_ok=True)
        self.log_path.parent.mkdir(parents=True, exist_ok=True)
        server_properties = render_server_properties(
            port=self._settings.port,
            controller_port=self._settings.controller_port,
            data_dir=self._data_dir,
            sasl_port=self._sasl_port if sasl else None,
        )
        (self._config_dir / "server.properties").write_text(server_properties)
        (self._config_dir / "log4j2.properties").write_text(render_log4j2_properties(self.log_path))

    def _java_command(self, libs: Path, main_class: str, *args: str) -> list[str]:
        return [
            _require_tool("java", JAVA_HINT),
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
                self._refuse_other_scram_users(names)
            return
        server_properties = str(self._config_dir / "server.properties")
        # --standalone makes this node the single voter of the controller quorum.
        command = self._java_command(
            libs,
            "kafka.tools.StorageTool",
            "format",
            "--standalone",
            "-t",
            new_cluster_id(),
            "-c",
            server_properties,
        )
        for credential in scram_credentials:
            # KRaft stores SCRAM users in the metadata log; this is how the first ones get
            # there before any client could authenticate to create them.
            command += ["--add-scram", credential]
        result = subprocess.run(command, capture_output=True, text=True, check=False)
        if result.returncode != 0:
            raise LocalKafkaError(
                f"formatting {self._data_dir} failed:\n{result.stdout}{result.stderr}"
            )
        self._scram_users_file.write_text("".join(f"{name}\n" for name in names))
        logger.info("formatted Kafka storage in %s", self._data_dir)

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
            if _port_accepts(self._settings.port) and _run_coroutine(
                _metadata_answers(self.bootstrap, timeout_s=5.0)
            ):
                return
            time.sleep(POLL_INTERVAL_S)
        raise LocalKafkaError(
            f"Kafka (pid {pid}) did not answer on {self.bootstrap} within "
            f"{self._settings.start_timeout_s} s.\n{self._log_tails()}"
        )

    def _log_tails(self) -> str:
        return "\n".join(
            f"--- last {LOG_TAIL_LINES} lines of {path} ---\n{_tail(path, LOG_TAIL_LINES)}"
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
            self._signal_group(pid, first_signal)
            if not self._wait_for_exit(pid, STOP_TIMEOUT_S):
                logger.warning(
                    "Kafka pid %d outlived %s for %.0f s; killing it",
                    pid,
                    first_signal.name,
                    STOP_TIMEOUT_S,
                )
                self._signal_group(pid, signal.SIGKILL)
                self._wait_for_exit(pid, STOP_TIMEOUT_S)
        self._pid_file.unlink(missing_ok=True)
        return pid is not None

    def restart(self) -> str:
        """Stop the broker and start it again on the same data and listeners; return its
        bootstrap address."""
        self.down()
        return self.up(scram_users=self._scram_users)

    def _signal_group(self, pid: int, sig: signal.Signals) -> None:
        # The pid is the group id (start_new_session), so any helper the JVM forked goes too.
        with suppress(ProcessLookupError):
            os.killpg(pid, sig)

    def _wait_for_exit(self, pid: int, timeout_s: float) -> bool:
        deadline = time.monotonic() + timeout_s
        while self._is_alive(pid):
            if time.monotonic() >= deadline:
                return False
            time.sleep(0.05)
        return True
