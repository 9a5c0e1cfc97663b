"""Frozen JSON Schemas of the event models, one folder per ``schema_version``.

``v1/<Model>.json`` is what consumers of version 1 rely on. ``tests/unit/
test_schema_compat.py`` checks the current models against the baseline of the current
:data:`~schemas.orders.SCHEMA_VERSION` with :func:`schemas.compat.breaking_changes`.
After a deliberate break, bump ``SCHEMA_VERSION`` and freeze the new version's
baseline with ``python -m schemas.baseline`` (it never overwrites one).
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

from pydantic import BaseModel

from schemas.orders import SCHEMA_VERSION, OrderAmended, OrderCancelled, OrderPlaced
from schemas.progress import OrderProgress

BASELINE_DIR = Path(__file__).parent

VERSIONED_MODELS: dict[str, type[BaseModel]] = {
    model.__name__: model for model in (OrderPlaced, OrderAmended, OrderCancelled, OrderProgress)
}
"""The models that travel on the topics and carry ``schema_version``."""


def baseline_dir(version: int = SCHEMA_VERSION) -> Path:
    """Where the baseline of ``version`` lives."""
    return BASELINE_DIR / f"v{version}"


def current_schemas() -> dict[str, dict[str, Any]]:
    """Model name -> the JSON Schema the code produces now (validation mode)."""
    return {name: model.model_json_schema() for name, model in VERSIONED_MODELS.items()}


def load_baseline(version: int = SCHEMA_VERSION) -> dict[str, dict[str, Any]]:
    """Model name -> the frozen JSON Schema of ``version``."""
    return {
        path.stem: json.loads(path.read_text())
        for path in sorted(baseline_dir(version).glob("*.json"))
    }


def render(schema: dict[str, Any]) -> str:
    """The file text of a frozen schema: stable key order, one trailing newline."""
    return json.dumps(schema, indent=2, sort_keys=True) + "\n"


def freeze(version: int = SCHEMA_VERSION) -> list[Path]:
    """Write the current schemas as the baseline of ``version``; refuses to overwrite."""
    folder = baseline_dir(version)
    if folder.exists() and any(folder.glob("*.json")):
        raise FileExistsError(f"{folder} is frozen already; bump SCHEMA_VERSION first")
    folder.mkdir(parents=True, exist_ok=True)
    written = []
    for name, schema in current_schemas().items():
        path = folder / f"{name}.json"
        path.write_text(render(schema))
        written.append(path)
    return written
