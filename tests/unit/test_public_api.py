"""The package's public surface: exactly what ``__all__`` names, each documented.

A change here is a change of the promise users build on; make it on purpose.
"""

from __future__ import annotations

import inspect

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
