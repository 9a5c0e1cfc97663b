"""The ``pipeline`` command line: thin commands that parse, call and print."""

from __future__ import annotations

from pipeline.cli.main import app

__all__ = ["app"]
