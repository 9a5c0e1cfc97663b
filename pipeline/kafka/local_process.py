"""The local Kafka's processes from the outside: are they Kafka, do they answer, what
did they log. Used by :mod:`pipeline.kafka.local`."""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
from collections.abc import Coroutine
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, TypeVar

from aiokafka.admin import AIOKafkaAdminClient
from aiokafka.errors import KafkaError

from pipeline.kafka.local_config import HOST, LocalKafkaError

T = TypeVar("T")


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
