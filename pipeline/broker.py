"""Finding a broker: the configured one, or the local one started on demand."""

from __future__ import annotations

import asyncio

from pipeline.errors import BrokerUnavailable
from pipeline.kafka.admin import broker_reachable
from pipeline.kafka.local import LocalKafka
from pipeline.settings import Settings


def uses_local_broker(settings: Settings) -> bool:
    """Whether the configured address is the one ``pipeline kafka up`` serves."""
    return settings.kafka.bootstrap_servers in (
        f"127.0.0.1:{settings.local_kafka.port}",
        f"localhost:{settings.local_kafka.port}",
    )


async def ensure_broker(settings: Settings, *, start_local: bool = True) -> str:
    """The bootstrap address of a broker that answers, starting the local one if the
    configuration points at it; :class:`BrokerUnavailable` otherwise."""
    if await broker_reachable(settings.kafka):
        return settings.kafka.bootstrap_servers
    if start_local and uses_local_broker(settings):
        # LocalKafka.up blocks (Maven, the JVM): keep the event loop free meanwhile.
        return await asyncio.to_thread(LocalKafka(settings.local_kafka).up)
    raise BrokerUnavailable(
        f"no Kafka broker answers at {settings.kafka.bootstrap_servers}; start one with "
        "`pipeline kafka up` or point PIPELINE_KAFKA_BOOTSTRAP_SERVERS at a running broker"
    )
