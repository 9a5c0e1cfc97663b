"""Creating and checking the pipeline's topics through Kafka's admin API."""

from __future__ import annotations

import asyncio
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from dataclasses import dataclass, field
from typing import Any

from aiokafka.admin import AIOKafkaAdminClient, NewTopic
from aiokafka.admin.config_resource import ConfigResource, ConfigResourceType
from aiokafka.errors import (
    AuthenticationFailedError,
    KafkaConnectionError,
    KafkaError,
    SaslAuthenticationFailed,
    TopicAlreadyExistsError,
    for_code,
)
from aiokafka.structs import TopicPartition
from tenacity import retry, retry_if_exception, stop_after_delay, wait_exponential

from pipeline.errors import BrokerUnavailable, CredentialsRejected
from pipeline.kafka.connection import client_options
from pipeline.kafka.internals import open_connection
from pipeline.kafka.topology import TopicSpec
from pipeline.settings import KafkaSettings


@dataclass(slots=True)
class TopicsReport:
    """What ``apply_topics`` did and what differs from the wanted topology."""

    created: list[str] = field(default_factory=list)
    unchanged: list[str] = field(default_factory=list)
    drift: dict[str, list[str]] = field(default_factory=dict)

    @property
    def clean(self) -> bool:
        """True when every topic exists as specified."""
        return not self.drift


@asynccontextmanager
async def admin_client(settings: KafkaSettings, timeout_s: float = 15.0) -> AsyncIterator[Any]:
    """A started admin client; fails with :class:`BrokerUnavailable` if nothing answers."""
    client = AIOKafkaAdminClient(**client_options(settings))
    try:
        await asyncio.wait_for(client.start(), timeout_s)
    except (TimeoutError, KafkaConnectionError, KafkaError, OSError) as exc:
        await client.close()
        refusal = await _sasl_refusal(settings, timeout_s)
        if refusal is not None:
            raise CredentialsRejected(
                f"Kafka at {settings.bootstrap_servers} refused the credentials of SASL user "
                f"{settings.sasl_username!r} ({settings.sasl_mechanism}): authentication "
                f"failed ({refusal}); check PIPELINE_KAFKA_SASL_USERNAME / _SASL_PASSWORD"
            ) from exc
        raise BrokerUnavailable(
            f"no Kafka broker answers at {settings.bootstrap_servers} ({exc!r}); "
            "start the local one with `pipeline kafka up` or set "
            "PIPELINE_KAFKA_BOOTSTRAP_SERVERS"
        ) from exc
    try:
        yield client
    finally:
        await client.close()


async def _sasl_refusal(settings: KafkaSettings, timeout_s: float) -> str | None:
    """Why the first bootstrap server refused our SASL credentials, if it did.

    aiokafka's bootstrap only logs an authentication failure and then raises "Unable to
    bootstrap", which reads like a missing broker; one direct connection tells them apart.
    """
    if not settings.security_protocol.startswith("SASL"):
        return None
    options = client_options(settings)
    host, _, port = settings.bootstrap_hosts[0].rpartition(":")
    try:
        async with asyncio.timeout(timeout_s):
            connection = await open_connection(
                host,
                int(port),
                client_id=settings.client_id_prefix,
                request_timeout_ms=settings.request_timeout_ms,
                ssl_context=options.get("ssl_context"),
                security_protocol=settings.security_protocol,
                sasl_mechanism=options["sasl_mechanism"],
                sasl_plain_username=options["sasl_plain_username"],
                sasl_plain_password=options["sasl_plain_password"],
            )
    except (SaslAuthenticationFailed, AuthenticationFailedError) as exc:
        return type(exc).__name__
    except (TimeoutError, KafkaError, OSError, ValueError):
        return None
    connection.close()
    return None


async def broker_reachable(settings: KafkaSettings, timeout_s: float = 5.0) -> bool:
    """Whether a broker answers a metadata request at the configured address."""
    try:
        async with admin_client(settings, timeout_s) as client:
            await asyncio.wait_for(client.describe_cluster(), timeout_s)
    except (BrokerUnavailable, TimeoutError, KafkaError):
        return False
    return True


def _transient(exc: BaseException) -> bool:
    return isinstance(exc, KafkaError) and bool(exc.retriable)


metadata_retries = retry(
    retry=retry_if_exception(_transient),
    stop=stop_after_delay(30),
    wait=wait_exponential(multiplier=0.2, max=2),
    reraise=True,
)
"""For the admin client's metadata reads. aiokafka sends them to a random broker of its
cached metadata, which lists a broker that just died until the controller fences it
(NodeNotReadyError); another attempt picks another broker."""


@metadata_retries
async def topic_partitions(settings: KafkaSettings, topics: list[str]) -> list[TopicPartition]:
    """Every partition of the given topics that exist."""
    async with admin_client(settings) as client:
        existing = set(await client.list_topics())
        wanted = [topic for topic in topics if topic in existing]
        if not wanted:
            return []
        described = await client.describe_topics(wanted)
    return sorted(
        TopicPartition(meta["topic"], part["partition"])
        for meta in described
        for part in meta["partitions"]
    )


@metadata_retries
async def missing_topics(
    settings: KafkaSettings, topics: list[str], wait_s: float = 5.0
) -> list[str]:
    """Those of ``topics`` the broker does not have, in the order given.

    Asked as the list of every topic: a metadata request by name lets a broker with
    ``auto.create.topics.enable`` (Kafka's default) create a missing topic with its
    default partitions. That list trails a creation by a second or so, so topics just
    created get up to ``wait_s`` to show in it.
    """
    deadline = time.monotonic() + wait_s
    async with admin_client(settings) as client:
        while True:
            existing = set(await client.list_topics())
            missing = [topic for topic in topics if topic not in existing]
            if not missing or time.monotonic() >= deadline:
                return missing
            await asyncio.sleep(0.25)  # no notification exists for it: look again


async def _partition_counts(
    client: Any, names: list[str], timeout_s: float = 15.0
) -> dict[str, int]:
    """Partition count per topic, waiting out metadata that lags a fresh creation."""
    if not names:
        return {}
    async with asyncio.timeout(timeout_s):
        while True:
            described = await client.describe_topics(names)
            counts = {meta["topic"]: len(meta["partitions"]) for meta in described}
            if all(meta["error_code"] == 0 for meta in described) and all(counts.values()):
                return counts
            # No notification exists for metadata propagation: ask again shortly.
            await asyncio.sleep(0.1)


async def _topic_configs(client: Any, names: list[str]) -> dict[str, dict[str, str]]:
    if not names:
        return {}
    resources = [ConfigResource(ConfigResourceType.TOPIC, name) for name in names]
    configs: dict[str, dict[str, str]] = {}
    for response in await client.describe_configs(resources):
        for _error, _message, _type, name, entries in response.resources:
            configs[name] = {entry[0]: entry[1] for entry in entries}
    return configs


async def apply_topics(settings: KafkaSettings, wanted: list[TopicSpec]) -> TopicsReport:
    """Create missing topics; report existing ones whose partitions or configs differ.

    Existing topics are never altered: changing partitions moves keys between
    partitions and breaks per-key order, so that stays a deliberate operator action.
    """
    report = TopicsReport()
    async with admin_client(settings) as client:
        existing = set(await client.list_topics())
        missing = [spec for spec in wanted if spec.name not in existing]
        if missing:
            new_topics = [
                NewTopic(s.name, s.partitions, s.replication_factor, topic_configs=s.config)
                for s in missing
            ]
            # Metadata lags behind creations: a topic missing from the list may exist.
            response = await client.create_topics(new_topics)
            errors = {name: code for name, code, *_ in response.topic_errors}
            for spec in missing:
                code = errors.get(spec.name, 0)
                if code == TopicAlreadyExistsError.errno:
                    existing.add(spec.name)
                elif code:
                    raise for_code(code)(f"creating {spec.name} failed")
                else:
                    report.created.append(spec.name)
        present = [spec for spec in wanted if spec.name in existing]
        described = await _partition_counts(client, [s.name for s in present])
        configs = await _topic_configs(client, [s.name for s in present])
        for spec in present:
            differences = []
            if described.get(spec.name) != spec.partitions:
                differences.append(
                    f"partitions: wanted {spec.partitions}, found {described.get(spec.name)}"
                )
            for key, value in spec.config.items():
                found = configs.get(spec.name, {}).get(key)
                if found != value:
                    differences.append(f"{key}: wanted {value}, found {found}")
            if differences:
                report.drift[spec.name] = differences
            else:
                report.unchanged.append(spec.name)
    return report


@metadata_retries
async def delete_topics(
    settings: KafkaSettings, names: list[str], *, timeout_s: float = 60.0
) -> None:
    """Delete the named topics that exist and wait until the broker no longer lists them
    (deletion is asynchronous; recreating too early fails). Kafka drops the groups'
    committed offsets of deleted topics with them."""
    async with admin_client(settings) as client:
        existing = set(await client.list_topics())
        doomed = [name for name in names if name in existing]
        if not doomed:
            return
        await client.delete_topics(doomed)
        async with asyncio.timeout(timeout_s):
            # The broker offers no notification for finished deletions: poll it.
            while set(doomed) & set(await client.list_topics()):  # noqa: ASYNC110
                await asyncio.sleep(0.2)


async def wait_for_leaders(
    settings: KafkaSettings, topics: list[str], *, timeout_s: float = 120.0
) -> None:
    """Return once every partition of ``topics`` has a leader: just after a topic is
    created (or a cluster started) its metadata reaches the brokers over seconds, and
    producers meanwhile see UnknownTopicOrPartition."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                async with admin_client(settings) as client:
                    described = await client.describe_topics(topics)
                led = [
                    all(part["leader"] >= 0 for part in meta["partitions"])
                    and bool(meta["partitions"])
                    and not meta.get("error_code")
                    for meta in described
                ]
                if len(led) == len(topics) and all(led):
                    return
            except KafkaError:
                pass  # a broker is still joining: ask again
            await asyncio.sleep(0.5)


@metadata_retries
async def group_members(settings: KafkaSettings, group: str) -> int:
    """How many members the consumer group has right now."""
    async with admin_client(settings) as client:
        [description] = await client.describe_consumer_groups([group])
    # DescribeGroups response: groups[i] = (error, group, state, protocol type, protocol,
    # members, ...)
    return len(description.groups[0][5])
