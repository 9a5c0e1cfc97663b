"""Consumer lag of the stages' groups, and waiting for the pipeline to drain."""

from __future__ import annotations

import asyncio
import time
from collections.abc import Mapping, Sequence

from aiokafka.structs import TopicPartition

from pipeline.kafka.admin import admin_client, topic_partitions
from pipeline.kafka.connection import stop_consumer, topic_reader
from pipeline.kafka.topology import Naming
from pipeline.settings import KafkaSettings


async def end_offsets(settings: KafkaSettings, topics: Sequence[str]) -> dict[TopicPartition, int]:
    """The current end offset of every partition of ``topics``."""
    tps = await topic_partitions(settings, list(topics))
    if not tps:
        return {}
    consumer = topic_reader(settings)
    await consumer.start()
    try:
        return dict(await consumer.end_offsets(tps))
    finally:
        await stop_consumer(consumer)


TRANSACTION_ABORT_CHECK_S = 10.0
"""How often a broker looks for transactions open past their timeout
(``transaction.abort.timed.out.transaction.cleanup.interval.ms``, 10 s by default)."""


async def wait_for_open_transactions(
    settings: KafkaSettings, topics: Sequence[str], timeout_s: float
) -> float:
    """Wait until no transaction is open on ``topics``: every partition's last stable
    offset (the end a read_committed reader sees) has reached its end. Returns how long
    it waited (0.0 when none was open); :class:`TimeoutError` after ``timeout_s``, naming
    the partitions still held and whether they were still being written to.

    Records after the first offset of an open transaction are invisible to
    read_committed readers (stages and verifiers alike), whoever wrote them. A process
    killed with a transaction open, and no successor with its transactional id to fence
    it, leaves it open until the broker aborts it: ``transaction_timeout_ms`` after it
    began, found within :data:`TRANSACTION_ABORT_CHECK_S`.
    """
    started = time.monotonic()
    tps = await topic_partitions(settings, list(topics))
    if not tps:
        return 0.0
    stable = topic_reader(settings)
    written = topic_reader(settings, isolation_level="read_uncommitted")
    try:
        await stable.start()
        await written.start()
        first_ends: dict[TopicPartition, int] | None = None
        while True:
            # stable ends first: equal to the ends read after them, nothing was open then
            stable_ends = await stable.end_offsets(tps)
            ends = await written.end_offsets(tps)
            if stable_ends == ends:
                return 0.0 if first_ends is None else time.monotonic() - started
            first_ends = first_ends or ends
            if time.monotonic() - started > timeout_s:
                raise TimeoutError(_still_open(stable_ends, ends, first_ends, timeout_s))
            await asyncio.sleep(0.5)  # the broker aborts on its own schedule
    finally:
        await stop_consumer(stable)
        await stop_consumer(written)


def _still_open(
    stable: Mapping[TopicPartition, int],
    ends: Mapping[TopicPartition, int],
    first_ends: Mapping[TopicPartition, int],
    timeout_s: float,
) -> str:
    held = sorted((tp for tp in ends if stable[tp] < ends[tp]), key=lambda tp: tp[:2])
    shown = ", ".join(
        f"{tp.topic}/{tp.partition} readable to {stable[tp]} of {ends[tp]}" for tp in held[:5]
    )
    more = f" and {len(held) - 5} more" if len(held) > 5 else ""
    if any(ends[tp] != first_ends[tp] for tp in held):
        why = "they are still being written to (a running exactly-once stage keeps one open)"
    else:
        why = (
            "nothing was written to them meanwhile: a process killed mid-transaction keeps "
            "its own open until the broker aborts it (PIPELINE_STAGE_TRANSACTION_TIMEOUT_MS "
            "after it began)"
        )
    return f"transactions still open after {timeout_s:.0f}s on {shown}{more}; {why}"


Stages = Mapping[str, str] | Sequence[str]
"""Stage name -> the (logical) topic it reads, for any pipeline (``LoadedPipeline.sources``);
or the names of checkout stages, whose topics the topology knows."""


def _sources(stages: Stages, naming: Naming) -> dict[str, str]:
    """Stage name -> the real name of its input topic."""
    if isinstance(stages, Mapping):
        return {stage: naming.topic(source) for stage, source in stages.items()}
    return {stage: naming.source(stage) for stage in stages}


async def stage_lag(
    settings: KafkaSettings,
    stages: Stages,
    naming: Naming | None = None,
    retry_levels: int = 3,
) -> dict[str, int]:
    """Per stage: records of its input and retry topics not yet committed by its group."""
    naming = naming or Naming()
    consumed = {
        stage: [source] + [naming.retry(stage, level) for level in range(1, retry_levels + 1)]
        for stage, source in _sources(stages, naming).items()
    }
    ends = await end_offsets(settings, [topic for topics in consumed.values() for topic in topics])
    behind: dict[str, dict[TopicPartition, int]] = {}
    async with admin_client(settings) as admin:
        for stage in consumed:
            committed = await admin.list_consumer_group_offsets(naming.group(stage))
            behind[stage] = {
                tp: committed[tp].offset if tp in committed and committed[tp].offset >= 0 else 0
                for tp in ends
                if tp.topic in consumed[stage]
            }
    # A transactional upstream ends a partition with a commit marker: an offset with no
    # record behind it, which a group that consumed everything may not have passed.
    close = {
        tp: offset
        for positions in behind.values()
        for tp, offset in positions.items()
        if 0 < ends[tp] - offset <= _MARKERS_AT_MOST
    }
    only_markers = await _only_markers_left(settings, close, ends) if close else set()
    return {
        stage: sum(
            ends[tp] - offset
            for tp, offset in positions.items()
            if not (tp in only_markers and close[tp] == offset)
        )
        for stage, positions in behind.items()
    }


_MARKERS_AT_MOST = 2
"""Lag this small may be transaction markers only; larger lag is records for sure."""


async def _only_markers_left(
    settings: KafkaSettings, starts: dict[TopicPartition, int], ends: dict[TopicPartition, int]
) -> set[TopicPartition]:
    """Partitions with no committed record between ``starts`` and their end."""
    consumer = topic_reader(settings)
    await consumer.start()
    empty: set[TopicPartition] = set()
    try:
        consumer.assign(list(starts))
        for tp, offset in starts.items():
            consumer.seek(tp, offset)
        pending = set(starts)
        for _ in range(3):
            batch = await consumer.getmany(*pending, timeout_ms=200)
            pending -= {tp for tp, records in batch.items() if records}
            for tp in list(pending):
                if await consumer.position(tp) >= ends[tp]:
                    pending.discard(tp)
                    empty.add(tp)
            if not pending:
                break
    finally:
        await stop_consumer(consumer)
    return empty


async def wait_until_drained(
    settings: KafkaSettings,
    stages: Stages,
    *,
    naming: Naming | None = None,
    retry_levels: int = 3,
    timeout_s: float,
    poll_s: float = 0.5,
) -> dict[str, int]:
    """Poll until every stage's group has committed up to the end of its input, twice in
    a row (an upstream commit can add records downstream); returns the last lag seen."""
    deadline = time.monotonic() + timeout_s
    clean_checks = 0
    lag: dict[str, int] = {}
    while time.monotonic() < deadline:
        lag = await stage_lag(settings, stages, naming, retry_levels)
        clean_checks = clean_checks + 1 if not any(lag.values()) else 0
        if clean_checks >= 2:
            return lag
        await asyncio.sleep(poll_s)
    raise TimeoutError(f"pipeline did not drain within {timeout_s:.0f}s; lag {lag}")


async def wait_until_settled(
    settings: KafkaSettings,
    stages: Stages,
    topics: Sequence[str],
    *,
    naming: Naming | None = None,
    retry_levels: int = 3,
    timeout_s: float,
) -> float:
    """:func:`wait_until_drained`, and until no transaction is open on ``topics`` (the
    pipeline's); drained again when one was, since records behind it were invisible to
    the stages. Returns the seconds spent waiting for open transactions;
    :class:`TimeoutError` after ``timeout_s``."""
    deadline = time.monotonic() + timeout_s
    waited_for_transactions = 0.0
    while True:
        remaining = deadline - time.monotonic()
        if remaining <= 0:
            raise TimeoutError(f"pipeline did not settle within {timeout_s:.0f}s")
        await wait_until_drained(
            settings, stages, naming=naming, retry_levels=retry_levels, timeout_s=remaining
        )
        waited = await wait_for_open_transactions(
            settings, topics, max(0.0, deadline - time.monotonic())
        )
        if not waited:
            return waited_for_transactions
        waited_for_transactions += waited
