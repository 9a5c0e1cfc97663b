"""The engine's core imports neither asyncio nor the Kafka client, directly or not."""

from __future__ import annotations

import pkgutil
import subprocess
import sys

import pytest

import pipeline.runtime.core

pytestmark = pytest.mark.unit


def test_the_core_modules_import_neither_asyncio_nor_aiokafka() -> None:
    modules = [
        f"pipeline.runtime.core.{info.name}"
        for info in pkgutil.iter_modules(pipeline.runtime.core.__path__)
    ]
    assert {"ledger", "offsets", "checkpoint", "decisions"} <= {
        m.rsplit(".", 1)[1] for m in modules
    }
    probe = (
        "import sys\n"
        + "".join(f"import {module}\n" for module in modules)
        + "print(sorted(m for m in ('asyncio', 'aiokafka') if m in sys.modules))"
    )
    result = subprocess.run(
        [sys.executable, "-c", probe], capture_output=True, text=True, check=True
    )
    assert result.stdout.strip() == "[]", result.stdout
