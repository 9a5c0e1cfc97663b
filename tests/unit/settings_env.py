"""The ``PIPELINE_*`` variables the settings tree reads, for tests that check deploy
files against the code."""

from __future__ import annotations

import os

import pytest
from pydantic_settings import BaseSettings

from pipeline.settings import Settings


def settings_env_names() -> set[str]:
    """Every ``PIPELINE_*`` variable the settings tree reads: each branch's env_prefix plus
    its field names (pydantic-settings matches them case-insensitively)."""
    names: set[str] = set()
    for branch_field in Settings.model_fields.values():
        branch = branch_field.annotation
        assert isinstance(branch, type), branch
        assert issubclass(branch, BaseSettings), branch
        prefix = branch.model_config.get("env_prefix", "")
        names |= {f"{prefix}{name}".upper() for name in branch.model_fields}
    return names


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process with exactly this ``PIPELINE_*`` environment would build."""
    for name in list(os.environ):
        if name.upper().startswith("PIPELINE_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings()
