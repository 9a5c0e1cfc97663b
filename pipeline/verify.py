"""The invariant checker: every input event accounted for exactly once, in order.

It reads ``orders.events``, ``orders.fulfilled`` and every dead-letter topic from the
beginning up to their current end (committed transactions only) and checks:

* **lost** — an input event that is neither fulfilled nor dead-lettered;
* **duplicated** — extra copies of an input event among the outputs;
* **out of order** — an order's fulfilled events whose sequence does not strictly grow
  along ``orders.fulfilled`` (one order is one key, so one partition, so offsets order it).

Tests, the demo, the benchmark and the chaos run all use this one checker.
"""

from __future__ import annotations

import asyncio
from collections import Counter
from collections.abc import Iterable
from dataclasses import asdict, dataclass, field
from typing import Any

import orjson
from aiokafka.structs import ConsumerRecord

from pipeline.failures import provenance
from pipeline.failures.holds import parked_keys
from pipeline.failures.parked import hold_of
from pipeline.kafka.admin import topic_partitions
from pipeline.kafka.connection import assign_from_beginning, stop_consumer, topic_reader
from pipeline.kafka.topology import ORDERS_EVENTS, ORDERS_FULFILLED, STAGE_NAMES, Naming
from pipeline.settings import KafkaSettings


@dataclass(slots=True)
class VerifyReport:
    """What the verifier found; ``clean`` when nothing is lost, duplicated or reordered."""

    events: int = 0
    fulfilled: int = 0
    dead_lettered: int = 0
    replayed: int = 0
    parked: int = 0
    """Events parked behind a held key's dead letter, not released yet (not lost)."""
    lost: int = 0
    duplicated: int = 0
    out_of_order: int = 0
    unknown: int = 0
    statuses: dict[str, int] = field(default_factory=dict)
    dead_letter_reasons: dict[str, int] = field(default_factory=dict)
    examples: dict[str, list[str]] = field(default_factory=dict)

    @property
    def accounted(self) -> int:
        """Input events seen at least once among the outputs."""
        return self.events - self.lost

    @property
    def clean(self) -> bool:
        """No loss, no duplicate, no reordering, no output without an input."""
        return not (self.lost or self.duplicated or self.out_of_order or self.unknown)

    def as_dict(self) -> dict[str, Any]:
        """A JSON-ready view, with ``clean``."""
        return {**asdict(self), "clean": self.clean}


async def read_topic(
    settings: KafkaSettings, topic: str, *, timeout_s: float = 120.0
) -> list[ConsumerRecord]:
    """Every committed record of ``topic`` up to its end now, partition by partition."""
    tps = await topic_partitions(settings, [topic])
    if not tps:
        return []
    consumer = topic_reader(settings, max_partition_fetch_bytes=4 * 1024 * 1024)
    await consumer.start()
    try:
        ends = await assign_from_beginning(consumer, tps)
        remaining = {tp for tp in tps if ends[tp] > 0}
        records: list[ConsumerRecord] = []
        async with asyncio.timeout(timeout_s):
            while remaining:
                batch = await consumer.getmany(*remaining, timeout_ms=500, max_records=10_000)
                for tp, got in batch.items():
                    records.extend(r for r in got if r.offset < ends[tp])
                for tp in list(remaining):
                    if await consumer.position(tp) >= ends[tp]:
                        remaining.discard(tp)
        return records
    finally:
        await stop_consumer(consumer)


def _input_id(record: ConsumerRecord) -> tuple[str, str | None, int | None]:
    """(identity, order id, sequence) of an input record; undecodable ones by position."""
    try:
        event = orjson.loads(record.value or b"")
        event_id = str(event["event_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError, ValueError):
        return f"{record.topic}/{record.partition}/{record.offset}", None, None
    order_id = event.get("order_id")
    sequence = event.get("sequence")
    return (
        event_id,
        str(order_id) if order_id is not None else None,
        sequence if isinstance(sequence, int) else None,
    )


def _dead_letter_id(record: ConsumerRecord) -> str:
    """The input identity a dead-lettered record stands for."""
    try:
        value = orjson.loads(record.value or b"")
        event = value.get("event", value)
        return str(event["event_id"])
    except (orjson.JSONDecodeError, KeyError, TypeError, AttributeError, ValueError):
        headers = dict(record.headers)
        origin = (
            headers.get(provenance.ORIGIN_TOPIC, b"").decode(),
            headers.get(provenance.ORIGIN_PARTITION, b"").decode(),
            headers.get(provenance.ORIGIN_OFFSET, b"").decode(),
        )
        return "/".join(origin)


def check(
    inputs: Iterable[ConsumerRecord],
    fulfilled: Iterable[ConsumerRecord],
    dead_letters: Iterable[ConsumerRecord],
    replayed: Iterable[ConsumerRecord] = (),
    parked: Iterable[ConsumerRecord] = (),
) -> VerifyReport:
    """Check the invariants over already-read records (pure; tests feed it directly).

    ``replayed`` are dead letters an operator sent back: they are accounted where their
    replay ended, and, being late by design, left out of the order check. ``parked``
    are events of held keys still waiting for their release: accounted there, unless
    they were released already (then they are where the release took them).
    """
    report = VerifyReport()
    late = {_dead_letter_id(record) for record in replayed}
    report.replayed = len(late)
    known: set[str] = set()
    for record in inputs:
        if not any(name == provenance.RELEASE_DISCARD for name, _ in record.headers or ()):
            known.add(_input_id(record)[0])  # a discard marker is no event
    report.events = len(known)
    seen: Counter[str] = Counter()
    statuses: Counter[str] = Counter()
    last_sequence: dict[str, int] = {}
    examples: dict[str, list[str]] = {"lost": [], "duplicated": [], "out_of_order": []}
    for record in sorted(fulfilled, key=lambda r: (r.partition, r.offset)):
        value = orjson.loads(record.value or b"")
        event = value["event"]
        event_id, order_id, sequence = event["event_id"], event["order_id"], event["sequence"]
        seen[event_id] += 1
        report.fulfilled += 1
        statuses[value.get("status", "?")] += 1
        if event_id in late:
            continue
        previous = last_sequence.get(order_id)
        if previous is not None and sequence <= previous:
            report.out_of_order += 1
            examples["out_of_order"].append(f"{order_id}: {sequence} after {previous}")
        last_sequence[order_id] = max(sequence, previous or 0)
    reasons: Counter[str] = Counter()
    for record in dead_letters:
        seen[_dead_letter_id(record)] += 1
        report.dead_lettered += 1
        headers = dict(record.headers)
        stage = headers.get(provenance.STAGE, b"?").decode()
        kind = headers.get(provenance.ERROR_TYPE, b"?").decode().rsplit(".", 1)[-1]
        reasons[f"{stage}: {kind}"] += 1
    for record in parked:
        event_id = _dead_letter_id(record)
        if not seen.get(event_id):
            seen[event_id] = 1
            report.parked += 1
    for event_id in known:
        if not seen.get(event_id):
            report.lost += 1
            examples["lost"].append(event_id)
    for event_id, count in seen.items():
        if event_id not in known:
            report.unknown += count
        elif count > 1:
            report.duplicated += count - 1
            examples["duplicated"].append(event_id)
    report.statuses = dict(statuses)
    report.dead_letter_reasons = dict(reasons)
    report.examples = {name: found[:5] for name, found in examples.items() if found}
    return report


async def verify(settings: KafkaSettings, naming: Naming | None = None) -> VerifyReport:
    """Read the pipeline's topics from the broker and check the invariants."""
    naming = naming or Naming()
    inputs, fulfilled, *dead = await asyncio.gather(
        read_topic(settings, naming.topic(ORDERS_EVENTS)),
        read_topic(settings, naming.topic(ORDERS_FULFILLED)),
        *(read_topic(settings, naming.dead_letter(stage)) for stage in STAGE_NAMES),
    )
    waiting: list[ConsumerRecord] = []
    replayed: list[ConsumerRecord] = []
    for stage, records in zip(STAGE_NAMES, dead, strict=True):
        actions = await read_topic(settings, naming.dead_letter_actions(stage))
        sent_back = {
            record.key
            for record in actions
            if record.key is not None and b'"replayed"' in (record.value or b"")
        }
        for record in records:
            position = f"{record.partition}/{record.offset}".encode()
            (replayed if position in sent_back else waiting).append(record)
    return check(inputs, fulfilled, waiting, replayed, await _still_parked(settings, naming))


async def _still_parked(settings: KafkaSettings, naming: Naming) -> list[ConsumerRecord]:
    """The parked events of keys still held (each stage's journal says which)."""
    waiting: list[ConsumerRecord] = []
    for stage in STAGE_NAMES:
        waiting += await still_parked(settings, naming, stage)
    return waiting


async def still_parked(settings: KafkaSettings, naming: Naming, stage: str) -> list[ConsumerRecord]:
    """The parked events of ``stage``'s keys still held (its journal says which)."""
    holds = parked_keys(await read_topic(settings, naming.holds(stage)))
    current = {hold.head for hold in holds.values()}
    if not current:
        return []
    parked = await read_topic(settings, naming.parked(stage))
    return [record for record in parked if hold_of(record) in current]
