"""All configuration of the pipeline, read from ``PIPELINE_*`` environment variables.

Nothing else in the package reads the environment: a :class:`Settings` object is built
once at the edge (the CLI, a test fixture) and passed down.
"""

from __future__ import annotations

import os
import socket
from pathlib import Path
from typing import Literal

from pydantic import AliasChoices, BaseModel, Field, SecretStr, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict


class KafkaSettings(BaseSettings):
    """How to reach the Kafka cluster (``PIPELINE_KAFKA_*``)."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_KAFKA_", extra="ignore")

    bootstrap_servers: str = Field(
        default="127.0.0.1:9092",
        description="Comma-separated host:port list, as managed Kafka services hand it out.",
    )
    security_protocol: Literal["PLAINTEXT", "SSL", "SASL_PLAINTEXT", "SASL_SSL"] = "PLAINTEXT"
    sasl_mechanism: Literal["PLAIN", "SCRAM-SHA-256", "SCRAM-SHA-512"] | None = None
    sasl_username: str | None = None
    sasl_password: SecretStr | None = None
    ssl_cafile: Path | None = None
    ssl_certfile: Path | None = None
    ssl_keyfile: Path | None = None
    client_id_prefix: str = "order-pipeline"
    request_timeout_ms: int = 30_000

    @field_validator("bootstrap_servers")
    @classmethod
    def _one_host_list(cls, value: str) -> str:
        hosts = bootstrap_hosts(value)
        if not hosts:
            raise ValueError("bootstrap_servers names no host")
        return ",".join(hosts)

    @property
    def bootstrap_hosts(self) -> list[str]:
        """The bootstrap servers as a list of ``host:port``: the one form every client
        takes. FastStream's broker wraps a plain string into a one-element list, so a
        comma-separated string reaches aiokafka as a single host and cannot bootstrap."""
        return bootstrap_hosts(self.bootstrap_servers)


def bootstrap_hosts(servers: str) -> list[str]:
    """``"h1:9092, h2:9092,,h3:9092"`` -> ``["h1:9092", "h2:9092", "h3:9092"]``; a host
    without a port gets Kafka's default 9092, an entry with a bad port is refused."""
    hosts: list[str] = []
    for entry in servers.split(","):
        entry = entry.strip()
        if not entry:
            continue
        host, sep, port = entry.rpartition(":")
        if not sep or "]" in port:  # no port (or an IPv6 literal without one)
            host, port = entry, "9092"
        if not host or not port.isdigit() or not 0 < int(port) < 65536:
            raise ValueError(f"bootstrap server {entry!r} is not host:port")
        hosts.append(f"{host}:{port}")
    return hosts


class LocalKafkaSettings(BaseSettings):
    """The single-node broker that ``pipeline kafka up`` runs (``PIPELINE_LOCAL_KAFKA_*``)."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_LOCAL_KAFKA_", extra="ignore")

    version: str = "4.1.1"
    home: Path = Path(".cache/kafka")
    port: int = 9092
    controller_port: int = 9093
    heap: str = "1g"
    start_timeout_s: float = 90.0
    brokers: int = Field(default=1, ge=1, description="3: a local three-node KRaft cluster.")
    cluster_heap: str = Field(default="512m", description="Heap of each node of a cluster.")
    port_step: int = Field(default=10, description="Port distance between cluster nodes.")


class TopologySettings(BaseSettings):
    """Shape of the pipeline's topics (``PIPELINE_TOPICS_*``)."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_TOPICS_", extra="ignore")

    prefix: str = Field(default="", description="Prepended to every topic and group id.")
    partitions: int = Field(default=12, ge=1)
    retry_levels: int = Field(default=3, ge=0, description="Retry topics per stage.")
    replication_factor: int = Field(default=1, ge=1)
    min_insync_replicas: int | None = Field(
        default=None,
        ge=1,
        description="Replicas that must have a write before it is acknowledged (acks=all); "
        "production: 2 with a replication factor of 3. None: the broker's default.",
    )
    retention_ms: int = 7 * 24 * 3600 * 1000
    dlq_retention_ms: int = 30 * 24 * 3600 * 1000


Guarantee = Literal["at_least_once", "exactly_once"]
"""``exactly_once``: a stage's outputs and its input offsets commit in one transaction."""

TransactionScheme = Literal["auto", "per_process", "per_partition"]
"""``exactly_once``'s producers: one per process (KIP-447 brokers, Kafka 2.5+), one per
input partition (older brokers), or ``auto``: the first the broker supports."""


class StageSettings(BaseSettings):
    """Tuning shared by every stage (``PIPELINE_STAGE_*``)."""

    model_config = SettingsConfigDict(
        env_prefix="PIPELINE_STAGE_", extra="ignore", populate_by_name=True
    )

    max_in_flight: int = Field(default=10_000, ge=1)
    fetch_max_records: int = Field(default=2_000, ge=1)
    fetch_timeout_ms: int = Field(default=100, ge=1)
    commit_interval_ms: int = Field(default=500, ge=10)
    lag_interval_s: float = Field(
        default=15.0,
        gt=0,
        description="How often a stage asks the broker for its partitions' end offsets to "
        "report lag (a stalled stage commits nothing, yet its lag must show).",
    )
    revoke_drain_timeout_s: float = Field(default=10.0, ge=0)
    shutdown_drain_timeout_s: float = Field(default=20.0, ge=0)
    max_poll_interval_ms: int = 300_000
    session_timeout_ms: int = 10_000
    group_instance_id: str | None = Field(
        default=None,
        description="Static group membership (group.instance.id): a process restarted "
        "under the same id within the session timeout takes its partitions back without "
        "a rebalance. Kubernetes: the pod's stable name (a StatefulSet's).",
    )
    rebalance_timeout_ms: int = 30_000
    producer_linger_ms: int = 5
    producer_max_batch_bytes: int = 512 * 1024
    dedupe_window: int = Field(default=60_000, ge=0)
    in_process_attempts: int = Field(default=3, ge=1)
    retry_delays_s: list[float] = Field(default_factory=lambda: [1.0, 10.0, 60.0])
    ordering: Literal["key", "none"] = "key"
    on_dead_letter: Literal["release", "hold"] = Field(
        default="release",
        description="When a key's event is dead-lettered: release (its later events go "
        "on) or hold (they are parked in <stage>.parked until an operator replays or "
        "discards the dead letter; needs ordering=key).",
    )
    processing_guarantee: Guarantee = Field(
        default="at_least_once",
        validation_alias=AliasChoices(
            "PIPELINE_PROCESSING_GUARANTEE", "PIPELINE_STAGE_PROCESSING_GUARANTEE"
        ),
        description="For every stage; PIPELINE_STAGE_PROCESSING_GUARANTEES overrides per stage.",
    )
    processing_guarantees: dict[str, Guarantee] = Field(
        default_factory=dict,
        description='Per stage, e.g. {"pay": "exactly_once"}; wins over the global one.',
    )
    transaction_interval_ms: int = Field(
        default=100, ge=10, description="exactly_once: how often a stage commits its transaction."
    )
    transaction_drain_timeout_s: float = Field(
        default=10.0,
        ge=0,
        description="exactly_once: how long a commit waits for in-flight records to finish.",
    )
    transaction_timeout_ms: int = Field(
        default=20_000,
        ge=1_000,
        description="exactly_once: the broker aborts a transaction open this long — also "
        "how long a killed process's open transaction holds up read_committed readers "
        "when no restart under the same instance id fences it sooner.",
    )
    transactions: TransactionScheme = Field(
        default="auto",
        description="exactly_once: per_process (one transactional producer per stage "
        "process, fenced by group generation), per_partition, or auto.",
    )

    @property
    def instance_id(self) -> str:
        """This process's stable name where one is configured (``group_instance_id``),
        else its host and pid: the suffix of its transactional id."""
        if self.group_instance_id:
            return self.group_instance_id
        return f"{socket.gethostname()}-{os.getpid()}"

    def guarantee_of(self, stage: str) -> Guarantee:
        """The processing guarantee ``stage`` runs with."""
        return self.processing_guarantees.get(stage, self.processing_guarantee)


class ServiceSettings(BaseSettings):
    """Behaviour of the in-process inventory and payment services (``PIPELINE_SERVICES_*``)."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_SERVICES_", extra="ignore")

    latency_ms: float = Field(default=0.0, ge=0)
    transient_failure_rate: float = Field(default=0.0, ge=0, le=1)
    decline_rate: float = Field(default=0.02, ge=0, le=1)
    out_of_stock_rate: float = Field(default=0.02, ge=0, le=1)
    seed: int | None = None


class HttpSettings(BaseSettings):
    """The per-process HTTP endpoint for /metrics, /health and /ready (``PIPELINE_HTTP_*``)."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_HTTP_", extra="ignore")

    host: str = "127.0.0.1"
    port: int = 8000
    enabled: bool = True


class IngressSettings(BaseSettings):
    """The order API: where it listens, how long a publish may take, its projection,
    who may call it and how much."""

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
    database_url: SecretStr = Field(
        default=SecretStr("sqlite+aiosqlite:///.cache/ingress.db"),
        description="Where order status and Idempotency-Keys live: the embedded SQLite file "
        "by default (one replica), or postgresql+asyncpg://user:password@host/db shared by "
        "several replicas. A secret: it may hold a password, and is logged masked.",
    )
    database_timeout_s: float = Field(
        default=5.0,
        gt=0,
        description="How long a connection attempt or query may take before the API "
        "answers 503 and /ready turns false.",
    )
    database_pool_size: int = Field(
        default=5, ge=1, description="Pooled PostgreSQL connections per replica (twice at peak)."
    )
    database_migrate: bool = Field(
        default=True,
        description="Upgrade the schema at start-up (under a lock, so replicas may start "
        "together); False: run `pipeline db upgrade` as a release step instead.",
    )
    idempotency_lease_s: float = Field(
        default=60.0,
        gt=0,
        description="How long a request holds its Idempotency-Key while it publishes; "
        "must exceed publish_timeout_s (plus clock skew between replicas).",
    )
    auth_disabled: bool = Field(
        default=False,
        description="Local development only: serve every request without a token, as an "
        "operator. The API warns at startup; never set it in a deployment.",
    )
    auth_issuer: str | None = Field(
        default=None,
        description="The tokens' expected `iss` (the OIDC issuer URL); required unless "
        "auth is disabled.",
    )
    auth_audience: str = Field(default="order-api", description="The tokens' expected `aud`.")
    auth_jwks_url: str | None = Field(
        default=None,
        description="The issuer's JWKS endpoint; keys are cached and fetched again when a "
        "token names an unknown `kid` (key rotation).",
    )
    auth_jwks: str | None = Field(
        default=None, description="Instead of a URL: the JWKS document (JSON) of the keys."
    )
    auth_jwks_file: Path | None = Field(
        default=None, description="Instead of a URL: a file holding the JWKS document."
    )
    auth_algorithms: list[str] = Field(
        default_factory=lambda: ["RS256", "PS256", "ES256", "EdDSA"],
        description="Signature algorithms accepted; asymmetric ones only.",
    )
    auth_jwks_cache_s: float = Field(
        default=300, gt=0, description="How long fetched keys are used before a refetch."
    )
    auth_jwks_refetch_interval_s: float = Field(
        default=10,
        ge=0,
        description="Least time between fetches caused by an unknown `kid`, so that "
        "made-up key ids cannot hammer the issuer.",
    )
    auth_leeway_s: float = Field(default=30, ge=0, description="Clock skew allowed on exp/nbf.")
    auth_customer_claim: str = Field(
        default="sub", description="The claim holding the caller's customer id."
    )
    auth_operator_scope: str = Field(
        default="orders:read-all",
        description="The `scope` that lets a token read every order, not only its own.",
    )
    max_body_bytes: int = Field(
        default=64 * 1024, ge=1, description="Larger request bodies are refused with 413."
    )
    rate_limit_per_s: float = Field(
        default=20, gt=0, description="Requests per second per caller (its token's subject)."
    )
    rate_limit_burst: int = Field(
        default=40, ge=1, description="Requests a caller may make at once before the limit."
    )


class ScheduleSettings(BaseSettings):
    """The periodic jobs (``PIPELINE_SCHEDULE_*``)."""

    model_config = SettingsConfigDict(env_prefix="PIPELINE_SCHEDULE_", extra="ignore")

    redrivable_errors: list[str] = Field(
        default_factory=lambda: ["ServiceUnavailable", "TimeoutError"],
        description="Exception type names (without module) whose dead letters are re-driven.",
    )
    redrive_interval_s: int = Field(default=300, ge=1)
    redrive_max_per_event: int = Field(
        default=3, ge=1, description="Replays of one event after which it is left alone."
    )
    reconcile_interval_s: int = Field(default=900, ge=1)
    group: str = Field(default="pipeline-jobs", description="Consumer group of the job runner.")
    metrics_host: str = "127.0.0.1"
    metrics_port: int = 8002


class Settings(BaseModel):
    """The whole configuration tree; each branch reads its own ``PIPELINE_*`` variables."""

    kafka: KafkaSettings = Field(default_factory=KafkaSettings)
    local_kafka: LocalKafkaSettings = Field(default_factory=LocalKafkaSettings)
    topics: TopologySettings = Field(default_factory=TopologySettings)
    stage: StageSettings = Field(default_factory=StageSettings)
    services: ServiceSettings = Field(default_factory=ServiceSettings)
    http: HttpSettings = Field(default_factory=HttpSettings)
    api: IngressSettings = Field(default_factory=IngressSettings)
    schedule: ScheduleSettings = Field(default_factory=ScheduleSettings)

    @model_validator(mode="after")
    def _one_delay_per_retry_topic(self) -> Settings:
        if len(self.stage.retry_delays_s) != self.topics.retry_levels:
            raise ValueError(
                f"PIPELINE_STAGE_RETRY_DELAYS_S has {len(self.stage.retry_delays_s)} delays "
                f"but PIPELINE_TOPICS_RETRY_LEVELS is {self.topics.retry_levels}"
            )
        return self


def load_settings() -> Settings:
    """Read the configuration from the environment."""
    return Settings()
