"""The local Kafka's processes from the outside: fetch their jars, tell whether they are
Kafka and answer, read what they logged, stop them. Used by :mod:`pipeline.kafka.local`."""

from __future__ import annotations

import asyncio
import logging
import os
import shutil
import signal
import socket
import subprocess
import time
from collections.abc import Callable, Coroutine
from concurrent.futures import ThreadPoolExecutor
from contextlib import suppress
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from pipeline.kafka.local_config import HOST, LocalKafkaError, render_pom

T = TypeVar("T")

logger = logging.getLogger("pipeline.kafka.local")

COMPLETE_MARKER = ".complete"
LOG_TAIL_LINES = 30
JAVA_HINT = "a Java 17+ runtime (e.g. `apt-get install openjdk-17-jre-headless`)"
MAVEN_HINT = "Apache Maven (e.g. `apt-get install maven`)"


def tail(path: Path, lines: int) -> str:
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


def is_kafka_process(pid: int) -> bool:
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


def port_accepts(port: int) -> bool:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.settimeout(0.5)
        return sock.connect_ex((HOST, port)) == 0


async def metadata_answers(bootstrap: str, timeout_s: float) -> bool:
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


def run_coroutine(coroutine: Coroutine[Any, Any, T]) -> T:
    # A fresh loop in a worker thread, so callers inside a running loop (async fixtures) work too.
    with ThreadPoolExecutor(max_workers=1, thread_name_prefix="local-kafka") as pool:
        return pool.submit(asyncio.run, coroutine).result()


def require_tool(name: str, install_hint: str) -> str:
    path = shutil.which(name)
    if path is None:
        raise LocalKafkaError(f"`{name}` is not on PATH; install {install_hint}.")
    return path


def fetch_jars(libs: Path, maven_home: Path, version: str) -> Path:
    """Resolve Kafka ``version``'s jars with Maven into ``libs`` unless they are complete
    there already; ``libs``."""
    require_tool("java", JAVA_HINT)
    if (libs / COMPLETE_MARKER).exists():
        return libs
    mvn = require_tool("mvn", MAVEN_HINT)
    shutil.rmtree(libs, ignore_errors=True)  # drop a half-finished earlier fetch
    pom = maven_home / f"maven-{version}" / "pom.xml"
    pom.parent.mkdir(parents=True, exist_ok=True)
    pom.write_text(render_pom(version))
    logger.info("fetching Kafka %s jars with Maven into %s", version, libs)
    command = [mvn, "-q", "-B", "-f", str(pom), "dependency:copy-dependencies"]
    command += [f"-DoutputDirectory={libs}", "-DincludeScope=runtime"]
    result = subprocess.run(command, capture_output=True, text=True, check=False)
    if result.returncode != 0:
        output = "\n".join((result.stdout + result.stderr).splitlines()[-LOG_TAIL_LINES:])
        raise LocalKafkaError(f"Maven could not fetch the Kafka jars:\n{output}")
    (libs / COMPLETE_MARKER).write_text("")
    return libs


def stop_group(
    pid: int, first_signal: signal.Signals, is_alive: Callable[[int], bool], timeout_s: float
) -> None:
    """Send ``first_signal`` to the process group ``pid`` leads, then SIGKILL if it
    outlives ``timeout_s``. The pid is the group id (the broker starts a new session), so
    any helper the JVM forked goes too."""
    _signal_group(pid, first_signal)
    if not _wait_for_exit(pid, is_alive, timeout_s):
        logger.warning(
            "Kafka pid %d outlived %s for %.0f s; killing it", pid, first_signal.name, timeout_s
        )
        _signal_group(pid, signal.SIGKILL)
        _wait_for_exit(pid, is_alive, timeout_s)


def _signal_group(pid: int, sig: signal.Signals) -> None:
    with suppress(ProcessLookupError):
        os.killpg(pid, sig)


def _wait_for_exit(pid: int, is_alive: Callable[[int], bool], timeout_s: float) -> bool:
    deadline = time.monotonic() + timeout_s
    while is_alive(pid):
        if time.monotonic() >= deadline:
            return False
        time.sleep(0.05)
    return True
