"""Pipelines written on the public API only (``pipeline.__all__``), one package each."""
