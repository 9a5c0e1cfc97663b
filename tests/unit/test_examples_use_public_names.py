"""The examples are written on the public API only: the bundled checkout flow
(``pipeline/stages/``), the guide's pipeline and the packages under ``examples/`` import
nothing from the package but the names in ``pipeline.__all__`` (besides their own
modules, pydantic, the standard library, and for the checkout its event models). If an
example needs more, the public API is missing something."""

from __future__ import annotations

import ast
import re
import sys
from pathlib import Path

import pytest

import pipeline

pytestmark = pytest.mark.unit

ROOT = Path(__file__).parents[2]
CHECKOUT = sorted((ROOT / "pipeline" / "stages").glob("*.py"))
EXAMPLES = sorted((ROOT / "examples").rglob("*.py"))
ALLOWED = {"schemas", "pydantic", "__future__", *sys.stdlib_module_names}
EXAMPLE_ALLOWED = ALLOWED - {"schemas"}  # the checkout's event models are not theirs


def guide_code() -> str:
    [code] = re.findall(
        r"```python sensors\.py\n(.*?)```", (ROOT / "docs/guide.md").read_text(), re.S
    )
    return code


def imports(source: str) -> list[tuple[str, list[str]]]:
    """``(module, names)`` of every import in ``source``."""
    found: list[tuple[str, list[str]]] = []
    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Import):
            found += [(alias.name, []) for alias in node.names]
        elif isinstance(node, ast.ImportFrom) and node.module is not None:
            found.append((node.module, [alias.name for alias in node.names]))
    return found


def outside_the_public_api(source: str, own: str, allowed: set[str] = ALLOWED) -> list[str]:
    wrong = []
    for module, names in imports(source):
        top = module.split(".")[0]
        if module == "pipeline":
            wrong += [f"pipeline.{n}" for n in names if n not in pipeline.__all__]
        elif module == own or module.startswith(own + "."):
            continue
        elif top == "pipeline" or top not in allowed:
            wrong.append(module)
    return wrong


@pytest.mark.parametrize("path", CHECKOUT, ids=lambda p: p.name)
def test_the_checkout_uses_only_public_names(path: Path) -> None:
    assert outside_the_public_api(path.read_text(), own="pipeline.stages") == []


def test_the_guides_pipeline_uses_only_public_names() -> None:
    assert outside_the_public_api(guide_code(), own="sensors") == []


def own_package(path: Path) -> str:
    """``examples.<name>``: the example package a file under ``examples/`` belongs to."""
    parts = path.relative_to(ROOT).with_suffix("").parts
    return ".".join(parts[:2]) if len(parts) > 2 else parts[0]


def test_there_are_examples() -> None:
    assert ROOT / "examples" / "sensors" / "flow.py" in EXAMPLES


@pytest.mark.parametrize("path", EXAMPLES, ids=lambda p: str(p.relative_to(ROOT / "examples")))
def test_the_examples_use_only_public_names(path: Path) -> None:
    wrong = outside_the_public_api(path.read_text(), own=own_package(path), allowed=EXAMPLE_ALLOWED)
    assert wrong == []


def test_an_example_may_not_import_another_example() -> None:
    source = "from examples.sensors.models import Reading\nfrom examples.other import x\n"
    assert outside_the_public_api(source, own="examples.sensors", allowed=EXAMPLE_ALLOWED) == [
        "examples.other"
    ]


def test_the_check_catches_a_private_import() -> None:
    source = (
        "from pipeline import Pipeline, Output\n"
        "from pipeline.runtime.engine import StageEngine\n"
        "from pipeline import api\n"
    )
    assert outside_the_public_api(source, own="x") == ["pipeline.runtime.engine", "pipeline.api"]


def test_the_checkouts_topics_are_the_ones_the_runtime_serves() -> None:
    from pipeline.kafka.topology import STAGE_TOPICS
    from pipeline.stages import checkout

    assert {name: (s.source, s.sink) for name, s in checkout.stages.items()} == STAGE_TOPICS
