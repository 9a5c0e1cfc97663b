"""The ``PIPELINE_*`` variables the settings tree reads, for tests that check deploy
files against the code."""

from __future__ import annotations

import os

import pytest
from pydantic import AliasChoices
from pydantic_settings import BaseSettings

from pipeline.settings import Settings


def settings_env_names() -> set[str]:
    """Every ``PIPELINE_*`` variable the settings tree reads: each branch's env_prefix plus
    its field names, or a field's own aliases (pydantic-settings matches them
    case-insensitively)."""
    names: set[str] = set()
    for branch_field in Settings.model_fields.values():
        branch = branch_field.annotation
        assert isinstance(branch, type), branch
        assert issubclass(branch, BaseSettings), branch
        prefix = branch.model_config.get("env_prefix", "")
        for name, field in branch.model_fields.items():
            alias = field.validation_alias
            if isinstance(alias, AliasChoices):
                names |= {str(choice).upper() for choice in alias.choices}
            else:
                names.add(f"{prefix}{name}".upper())
    return names


def settings_from(environment: dict[str, str], monkeypatch: pytest.MonkeyPatch) -> Settings:
    """The settings a process with exactly this ``PIPELINE_*`` environment would build."""
    for name in list(os.environ):
        if name.upper().startswith("PIPELINE_"):
            monkeypatch.delenv(name)
    for name, value in environment.items():
        monkeypatch.setenv(name, value)
    return Settings()
