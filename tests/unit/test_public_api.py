"""The package's public surface: exactly what ``__all__`` names, each documented.

A change here is a change of the promise users build on; make it on purpose.
"""

from __future__ import annotations

import ast
import inspect
import re
from pathlib import Path

import pytest

import pipeline

pytestmark = pytest.mark.unit

PUBLIC = ["Depends", "FatalError", "Output", "Pipeline", "RetryableError", "Verdict"]


def test_the_package_exports_exactly_its_public_names() -> None:
    assert sorted(pipeline.__all__) == PUBLIC
    for name in PUBLIC:
        assert getattr(pipeline, name) is not None
    exported = {name for name in dir(pipeline) if not name.startswith("_")}
    # submodules are attributes too; nothing else may be
    others = exported - set(PUBLIC)
    assert all(inspect.ismodule(getattr(pipeline, name)) for name in others), others


@pytest.mark.parametrize("name", PUBLIC)
def test_every_public_name_has_a_docstring(name: str) -> None:
    assert inspect.getdoc(getattr(pipeline, name))


def test_the_guides_code_uses_only_public_names() -> None:
    """What the guide teaches must survive changes to everything private."""
    guide = Path(__file__).parents[2] / "docs" / "guide.md"
    blocks = re.findall(r"```python[^\n]*\n(.*?)```", guide.read_text(), re.DOTALL)
    assert blocks
    for block in blocks:
        for node in ast.walk(ast.parse(block)):
            if isinstance(node, ast.ImportFrom) and (node.module or "").startswith("pipeline"):
                assert node.module == "pipeline", node.module
                assert {alias.name for alias in node.names} <= set(PUBLIC)
            if isinstance(node, ast.Import):
                assert not any(a.name.startswith("pipeline.") for a in node.names)
