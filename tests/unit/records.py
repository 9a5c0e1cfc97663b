"""Hand-made consumer records for tests that read what the broker would hand out."""

from __future__ import annotations

from collections.abc import Sequence

from aiokafka.structs import ConsumerRecord


def consumer_record(
    topic: str,
    offset: int,
    key: bytes | None,
    value: bytes,
    *,
    partition: int = 0,
    headers: Sequence[tuple[str, bytes]] = (),
    timestamp: int = 1_767_225_600_000,
) -> ConsumerRecord[bytes, bytes]:
    """A record as aiokafka would deliver it."""
    return ConsumerRecord(
        topic=topic,
        partition=partition,
        offset=offset,
        timestamp=timestamp,
        timestamp_type=0,
        key=key,
        value=value,
        checksum=None,
        serialized_key_size=len(key or b""),
        serialized_value_size=len(value),
        headers=list(headers),
    )
