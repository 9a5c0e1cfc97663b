"""Dead-letter operations: list, show, replay and discard, with an audit trail.

Every replay or discard is written to ``<stage>.dlq.actions`` (compacted, keyed by the
dead letter's ``partition/offset``). A dead letter is replayed at most once: replaying
it again is a no-op, so it produces one downstream result. The verifier reads the same
log to account replayed events where they ended up.
"""

from __future__ import annotations

import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

import orjson
from aiokafka import AIOKafkaProducer

from pipeline.failures import provenance
from pipeline.failures.holds import parked_keys
from pipeline.failures.parked import parked_per_hold
from pipeline.kafka.connection import new_producer
from pipeline.kafka.topology import STAGE_NAMES, Naming
from pipeline.settings import KafkaSettings
from pipeline.verify import read_topic

REPLAY_OF = provenance.REPLAY_OF
REPLAYED = "replayed"
DISCARDED = "discarded"


@dataclass(slots=True)
class DeadLetter:
    """One record of a ``<stage>.dlq`` topic and what became of it."""

    stage: str
    partition: int
    offset: int
    key: bytes | None
    value: bytes
    timestamp_ms: int
    headers: dict[str, str]
    raw_headers: list[tuple[str, bytes]] = field(repr=False)
    action: str | None = None

    @property
    def id(self) -> str:
        """``stage:partition:offset``, how operators name a dead letter."""
        return f"{self.stage}:{self.partition}:{self.offset}"

    @property
    def position(self) -> str:
        """The key of this dead letter in the actions log."""
        return f"{self.partition}/{self.offset}"

    @property
    def hold(self) -> str | None:
        """The hold this dead letter keeps its key in (``on_dead_letter="hold"``)."""
        return self.headers.get(provenance.HOLD)

    @property
    def error_type(self) -> str:
        """The short name of the exception that dead-lettered it."""
        return self.headers.get(provenance.ERROR_TYPE, "?").rsplit(".", 1)[-1]

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view with every provenance header."""
        return {
            "id": self.id,
            "stage": self.stage,
            "partition": self.partition,
            "offset": self.offset,
            "key": self.key.decode(errors="replace") if self.key is not None else None,
            "timestamp": datetime.fromtimestamp(self.timestamp_ms / 1000, UTC).isoformat(),
            "error_type": self.error_type,
            "action": self.action,
            "hold": self.hold,
            "headers": self.headers,
            "value": self.value.decode(errors="replace"),
        }


@dataclass(frozen=True, slots=True)
class DeadLetterFilter:
    """Which dead letters an operation applies to."""

    stages: tuple[str, ...] = STAGE_NAMES
    exception: str | None = None
    key: str | None = None
    since: datetime | None = None
    until: datetime | None = None
    ids: tuple[str, ...] = ()
    include_handled: bool = False

    def matches(self, letter: DeadLetter) -> bool:
        """Whether ``letter`` is selected."""
        when = datetime.fromtimestamp(letter.timestamp_ms / 1000, UTC)
        return (
            (not self.ids or letter.id in self.ids)
            and (self.include_handled or letter.action is None)
            and (self.exception is None or self.exception.lower() in letter.error_type.lower())
            and (self.key is None or (letter.key or b"").decode(errors="replace") == self.key)
            and (self.since is None or when >= self.since)
            and (self.until is None or when <= self.until)
        )


async def read_actions(settings: KafkaSettings, naming: Naming, stage: str) -> dict[str, str]:
    """``partition/offset`` -> last action taken on that dead letter of ``stage``."""
    actions: dict[str, str] = {}
    for record in await read_topic(settings, naming.dead_letter_actions(stage)):
        if record.key is not None and record.value is not None:
            actions[record.key.decode()] = orjson.loads(record.value)["action"]
    return actions


async def list_dead_letters(
    settings: KafkaSettings, naming: Naming, selection: DeadLetterFilter
) -> list[DeadLetter]:
    """The selected dead letters, oldest first per stage."""
    letters: list[DeadLetter] = []
    for stage in selection.stages:
        actions = await read_actions(settings, naming, stage)
        for record in await read_topic(settings, naming.dead_letter(stage)):
            letter = DeadLetter(
                stage=stage,
                partition=record.partition,
                offset=record.offset,
                key=record.key,
                value=record.value or b"",
                timestamp_ms=record.timestamp,
                headers={k: v.decode(errors="replace") for k, v in record.headers},
                raw_headers=list(record.headers),
                action=actions.get(f"{record.partition}/{record.offset}"),
            )
            if selection.matches(letter):
                letters.append(letter)
    letters.sort(key=lambda letter: (letter.stage, letter.partition, letter.offset))
    return letters


async def _record_actions(
    producer: AIOKafkaProducer, naming: Naming, letters: Iterable[DeadLetter], action: str
) -> None:
    now = datetime.now(UTC).isoformat()
    for letter in letters:
        value = orjson.dumps({"action": action, "at": now})
        await producer.send_and_wait(
            naming.dead_letter_actions(letter.stage), value, key=letter.position.encode()
        )


def _origin(letter: DeadLetter, naming: Naming, sources: Mapping[str, str] | None) -> str:
    """The topic ``letter``'s stage read it from: its provenance says, else the stage's
    input (``sources``: stage -> logical input topic; ``None``: the checkout's)."""
    origin = letter.headers.get(provenance.ORIGIN_TOPIC)
    if origin:
        return origin
    return (
        naming.topic(sources[letter.stage]) if sources is not None else naming.source(letter.stage)
    )


async def replay(
    settings: KafkaSettings,
    naming: Naming,
    letters: list[DeadLetter],
    sources: Mapping[str, str] | None = None,
) -> list[DeadLetter]:
    """Re-publish ``letters`` to their stage's input, oldest first, with the attempt count
    reset and an audit header; returns those replayed (already handled ones are skipped).
    ``sources``: each stage's logical input topic (``None``: the checkout's)."""
    todo = [letter for letter in letters if letter.action is None]
    if not todo:
        return []
    producer = new_producer(settings)
    await producer.start()
    try:
        replayed_at = datetime.now(UTC).isoformat().encode()
        for letter in todo:
            origin = _origin(letter, naming, sources)
            headers = [
                (name, raw)
                for name, raw in letter.raw_headers
                if not name.startswith(provenance.HEADER_PREFIX)
            ] + [
                (REPLAY_OF, f"{naming.dead_letter(letter.stage)}/{letter.position}".encode()),
                (provenance.REPLAYED_AT, replayed_at),
            ]
            if letter.hold is not None:  # its key's parked events follow it once it succeeds
                headers.append((provenance.RELEASE_OF, letter.hold.encode()))
            await producer.send_and_wait(origin, letter.value, key=letter.key, headers=headers)
        # The audit entry goes last: a crash in between replays again, never loses one.
        await _record_actions(producer, naming, todo, REPLAYED)
    finally:
        await producer.stop()
    return todo


async def discard(
    settings: KafkaSettings,
    naming: Naming,
    letters: list[DeadLetter],
    sources: Mapping[str, str] | None = None,
) -> list[DeadLetter]:
    """Mark ``letters`` as dealt with, without replaying them; the parked events of a
    held key go on (a release marker to the stage's input, keyed like them).
    ``sources`` as for :func:`replay`."""
    todo = [letter for letter in letters if letter.action is None]
    if not todo:
        return []
    producer = new_producer(settings)
    await producer.start()
    try:
        for letter in todo:
            if letter.hold is None:
                continue
            origin = _origin(letter, naming, sources)
            marker = [
                (provenance.RELEASE_OF, letter.hold.encode()),
                (provenance.RELEASE_DISCARD, b"1"),
            ]
            await producer.send_and_wait(origin, b"", key=letter.key, headers=marker)
        await _record_actions(producer, naming, todo, DISCARDED)
    finally:
        await producer.stop()
    return todo


@dataclass(frozen=True, slots=True)
class HeldKey:
    """A key parked behind its dead letter (``on_dead_letter="hold"``)."""

    stage: str
    key: str
    hold: str
    state: str
    """``parked`` (waiting for the operator) or ``releasing``."""
    parked: int
    since: datetime | None

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view."""
        return {
            "stage": self.stage,
            "key": self.key,
            "hold": self.hold,
            "state": self.state,
            "parked": self.parked,
            "since": self.since.isoformat() if self.since else None,
        }


async def held_keys(
    settings: KafkaSettings, naming: Naming, stages: Iterable[str]
) -> list[HeldKey]:
    """The keys held behind dead letters, with how many events each has parked."""
    held: list[HeldKey] = []
    for stage in stages:
        current = parked_keys(await read_topic(settings, naming.holds(stage)))
        if not current:
            continue
        counts, _ = parked_per_hold(
            await read_topic(settings, naming.parked(stage)),
            {hold.head for hold in current.values()},
        )
        for key, hold in sorted(current.items()):
            since = datetime.fromtimestamp(hold.since_ms / 1000, UTC) if hold.since_ms else None
            held.append(
                HeldKey(
                    stage,
                    key.decode(errors="replace"),
                    hold.head,
                    hold.level,
                    counts[hold.head] - hold.released,
                    since,
                )
            )
    return held


def parse_when(text: str | None) -> datetime | None:
    """An ISO time, or a relative one like ``15m``, ``2h``, ``1d`` (ago)."""
    if text is None:
        return None
    units = {"s": 1, "m": 60, "h": 3600, "d": 86400}
    if text[-1:] in units and text[:-1].isdigit():
        return datetime.fromtimestamp(time.time() - int(text[:-1]) * units[text[-1]], UTC)
    parsed = datetime.fromisoformat(text)
    return parsed if parsed.tzinfo else parsed.replace(tzinfo=UTC)
