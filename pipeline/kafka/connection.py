"""Connection options for aiokafka clients and the FastStream broker, from settings."""

from __future__ import annotations

import asyncio
import ssl
from typing import Any

from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.structs import TopicPartition
from faststream.security import BaseSecurity, SASLPlaintext, SASLScram256, SASLScram512

from pipeline.errors import ConfigurationError
from pipeline.kafka.internals import pace_metadata_updates
from pipeline.settings import KafkaSettings


def ssl_context(settings: KafkaSettings) -> ssl.SSLContext | None:
    """A TLS context for SSL and SASL_SSL, with a client certificate for mutual TLS."""
    if settings.security_protocol not in ("SSL", "SASL_SSL"):
        return None
    context = ssl.create_default_context(
        cafile=str(settings.ssl_cafile) if settings.ssl_cafile else None
    )
    if settings.ssl_certfile:
        context.load_cert_chain(
            str(settings.ssl_certfile),
            str(settings.ssl_keyfile) if settings.ssl_keyfile else None,
        )
    return context


def client_options(settings: KafkaSettings) -> dict[str, Any]:
    """Keyword arguments shared by aiokafka's consumer, producer and admin client."""
    options: dict[str, Any] = {
        "bootstrap_servers": settings.bootstrap_hosts,
        "security_protocol": settings.security_protocol,
        "request_timeout_ms": settings.request_timeout_ms,
    }
    context = ssl_context(settings)
    if context is not None:
        options["ssl_context"] = context
    if settings.security_protocol.startswith("SASL"):
        if not (settings.sasl_mechanism and settings.sasl_username and settings.sasl_password):
            raise ConfigurationError(
                "SASL needs PIPELINE_KAFKA_SASL_MECHANISM, _SASL_USERNAME and _SASL_PASSWORD"
            )
        options["sasl_mechanism"] = settings.sasl_mechanism
        options["sasl_plain_username"] = settings.sasl_username
        options["sasl_plain_password"] = settings.sasl_password.get_secret_value()
    return options


def broker_security(settings: KafkaSettings) -> BaseSecurity | None:
    """FastStream's security object for the same connection, or ``None`` for PLAINTEXT."""
    context = ssl_context(settings)
    if not settings.security_protocol.startswith("SASL"):
        return BaseSecurity(ssl_context=context, use_ssl=True) if context else None
    if not (settings.sasl_mechanism and settings.sasl_username and settings.sasl_password):
        raise ConfigurationError(
            "SASL needs PIPELINE_KAFKA_SASL_MECHANISM, _SASL_USERNAME and _SASL_PASSWORD"
        )
    mechanisms: dict[str, type[SASLPlaintext | SASLScram256 | SASLScram512]] = {
        "PLAIN": SASLPlaintext,
        "SCRAM-SHA-256": SASLScram256,
        "SCRAM-SHA-512": SASLScram512,
    }
    return mechanisms[settings.sasl_mechanism](
        username=settings.sasl_username,
        password=settings.sasl_password.get_secret_value(),
        ssl_context=context,
        use_ssl=context is not None,
    )


async def stop_consumer(consumer: AIOKafkaConsumer) -> None:
    """Stop a short-lived consumer.

    aiokafka's group-less coordinator cancels a helper task on close and awaits it; when
    that task never got to run, the ``CancelledError`` leaks out of ``stop()``. Swallow
    that one, but never a cancellation aimed at the caller.
    """
    try:
        await consumer.stop()
    except asyncio.CancelledError:
        task = asyncio.current_task()
        if task is not None and task.cancelling():
            raise


def new_producer(settings: KafkaSettings, **options: Any) -> AIOKafkaProducer:
    """An idempotent producer (retries never duplicate or reorder) to ``settings``'
    cluster, ``options`` added, that waits out a broker outage instead of asking for
    metadata in a loop (:func:`~pipeline.kafka.internals.pace_metadata_updates`). Every
    producer the pipeline builds itself comes from here."""
    producer = AIOKafkaProducer(
        **client_options(settings), **{"enable_idempotence": True, **options}
    )
    pace_metadata_updates(producer)
    return producer


def topic_reader(settings: KafkaSettings, **options: Any) -> AIOKafkaConsumer:
    """A consumer with no group that reads committed records of partitions it is told
    (a stage's journal and dedupe tails on assignment, the verifier, lag checks).

    It asks for metadata again after 20 ms, not aiokafka's 100: a fresh client knows
    no topic yet, and every offset lookup on a topic it has not seen waited out the
    backoff — a stage reading its holds journal and its two dedupe tails on assignment
    spent 0.3 s doing so.
    """
    defaults: dict[str, Any] = {
        "enable_auto_commit": False,
        "isolation_level": "read_committed",
        "retry_backoff_ms": 20,
    }
    return AIOKafkaConsumer(**client_options(settings), **{**defaults, **options})


async def assign_from_beginning(
    consumer: AIOKafkaConsumer, partitions: list[TopicPartition]
) -> dict[TopicPartition, int]:
    """Assign ``consumer`` (started, no group) the ``partitions`` that hold records, from
    their beginning; their end offsets now (every partition's).

    The ends are asked first: an assigned partition is long-polled at once, the broker
    answers a connection's requests in order, and an end-offsets request queued behind
    the fetch of an empty partition waits out ``fetch_max_wait_ms`` (half a second, on
    every stage start that reads its empty holds journal).
    """
    ends: dict[TopicPartition, int] = await consumer.end_offsets(partitions)
    holding = [tp for tp in partitions if ends[tp] > 0]
    if holding:
        consumer.assign(holding)
        await consumer.seek_to_beginning(*holding)
    return ends
