"""Settings of the HTTP ingress (``PIPELINE_API_*``), part of the one settings tree."""

from pipeline.settings import IngressSettings

__all__ = ["IngressSettings"]
