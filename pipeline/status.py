"""``pipeline status``: what each stage is doing, read from Kafka alone (no Grafana, no
scrape): its group's members, its backlog, how fast it consumes, what waits on its
retry ladder and how many records it dead-lettered."""

from __future__ import annotations

import time
from collections.abc import Mapping
from dataclasses import asdict, dataclass

from aiokafka.errors import KafkaError

from pipeline.kafka.admin import admin_client, group_members
from pipeline.kafka.lag import end_offsets
from pipeline.kafka.topology import Naming
from pipeline.settings import KafkaSettings


@dataclass(frozen=True, slots=True)
class StageStatus:
    """One stage at one moment."""

    stage: str
    members: int
    lag: int
    """Records of its input and retry topics its group has not committed yet."""
    retrying: int
    """Of those, the records on its retry topics (waiting for their due time)."""
    dead_letters: int
    """Records in its dead-letter topic (all time, within retention)."""
    consumed: int
    """Offsets its group has committed, summed over its input and retry partitions."""
    events_per_s: float | None = None
    """Consumed per second since the previous sample (``None`` on the first)."""


async def sample(
    settings: KafkaSettings, stages: Mapping[str, str], naming: Naming, retry_levels: int
) -> list[StageStatus]:
    """Every stage's status now; ``stages`` maps each stage to its (logical) input."""
    sources = {stage: [naming.topic(source)] for stage, source in stages.items()}
    retries = {
        stage: [naming.retry(stage, level) for level in range(1, retry_levels + 1)]
        for stage in stages
    }
    dead = {stage: naming.dead_letter(stage) for stage in stages}
    every = [t for s in stages for t in (*sources[s], *retries[s], dead[s])]
    ends = await end_offsets(settings, every)
    found: list[StageStatus] = []
    async with admin_client(settings) as admin:
        for stage in stages:
            committed = await admin.list_consumer_group_offsets(naming.group(stage))
            consumed_topics = {*sources[stage], *retries[stage]}
            position = {
                tp: max(0, committed[tp].offset) if tp in committed else 0
                for tp in ends
                if tp.topic in consumed_topics
            }
            behind = {tp: max(0, ends[tp] - offset) for tp, offset in position.items()}
            try:
                members = await group_members(settings, naming.group(stage))
            except KafkaError:
                members = 0
            found.append(
                StageStatus(
                    stage=stage,
                    members=members,
                    lag=sum(behind.values()),
                    retrying=sum(n for tp, n in behind.items() if tp.topic in retries[stage]),
                    dead_letters=sum(n for tp, n in ends.items() if tp.topic == dead[stage]),
                    consumed=sum(position.values()),
                )
            )
    return found


def with_rates(
    now: list[StageStatus], before: list[StageStatus] | None, seconds: float
) -> list[StageStatus]:
    """``now`` with events/s computed against ``before``, taken ``seconds`` earlier."""
    if before is None or seconds <= 0:
        return now
    previous = {status.stage: status.consumed for status in before}
    return [
        StageStatus(
            **{
                **asdict(status),
                "events_per_s": round(
                    max(0, status.consumed - previous.get(status.stage, status.consumed)) / seconds,
                    1,
                ),
            }
        )
        for status in now
    ]


class Sampler:
    """Successive samples, each with the rate since the one before."""

    def __init__(
        self,
        settings: KafkaSettings,
        stages: Mapping[str, str],
        naming: Naming,
        retry_levels: int,
    ) -> None:
        self._args = (settings, stages, naming, retry_levels)
        self._last: list[StageStatus] | None = None
        self._at = 0.0

    async def next(self) -> list[StageStatus]:
        """A new sample."""
        now = await sample(*self._args)
        at = time.monotonic()
        rated = with_rates(now, self._last, at - self._at)
        self._last, self._at = now, at
        return rated
