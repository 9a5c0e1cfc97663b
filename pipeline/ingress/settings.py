"""Settings of the HTTP ingress (``PIPELINE_API_*``).

To be folded into :class:`pipeline.settings.Settings` as ``api``; until then the CLI
builds it beside the main settings.
"""

from __future__ import annotations

from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict


class IngressSettings(BaseSettings):
    """The order API: where it listens, how long a publish may take, its projection."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_API_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8080
    publish_timeout_s: float = Field(
        default=10.0, gt=0, description="How long POST /orders waits for Kafka's ack."
    )
    projection_group: str = Field(
        default="ingress-projection",
        description="Consumer group of the status projection (prefixed like every group).",
    )
    projection_batch: int = Field(default=500, ge=1)
    idempotency_ttl_s: float = Field(
        default=24 * 3600, gt=0, description="How long an Idempotency-Key is remembered."
    )
    idempotency_max_keys: int = Field(
        default=100_000, ge=1, description="Keys the in-process store keeps at most."
    )
