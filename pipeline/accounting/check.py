"""The accounting rule over records already read (pure: no Kafka; tests feed it).

Each stage is checked on its own, so a problem is found where it happens; a pipeline is
accounted for end to end when every stage is, because what one stage writes is what the
next one reads. For a stage that identifies its events (see :mod:`.facts`):

* every event it read (each distinct id on its input topic) has an outcome: output
  records (on its sink or other outputs, found by the ``pipeline.event.id`` header), a
  dead letter, an event parked behind a held key, or — only when its handler may return
  ``None`` or an empty list — none at all (**dropped**); otherwise it is **lost**;
* a **duplicate** is a second record for one event on the same topic under the same key,
  a second dead letter, or a dead letter (or parked event) beside outputs. Fan-out is
  not duplication: one event's outputs to different topics, or under different keys,
  are one each;
* **out of order**: along one output partition and key, the outputs of one input key
  must follow that key's input order (input offsets never go back). Events that were
  replayed from a dead letter are late by design and left out;
* **unknown**: an output or dead letter whose event id the stage never read.

A stage that does not identify its events leaves records with no event id: a loss there
cannot be told from a drop, nor an output traced to its input. Only byte-identical
records (same topic, key and value) among its outputs, or among its dead letters, are
counted as duplicates for it.
"""

from __future__ import annotations

from collections import Counter, defaultdict
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field

from aiokafka.structs import ConsumerRecord

from pipeline.accounting.facts import StageFacts
from pipeline.accounting.report import FlowReport, StageReport
from pipeline.failures.parked import origin_of
from pipeline.failures.provenance import EVENT_ID, RELEASE_DISCARD, REPLAY_OF
from pipeline.kafka.topology import entry_topics, terminal_topics

Records = Sequence[ConsumerRecord]
Identify = Callable[[bytes], str]
Place = tuple[str, bytes | None]
"""(topic, key) of an output record."""


@dataclass(frozen=True, slots=True)
class StageTrail:
    """What a stage left beside its outputs."""

    dead_letters: Records = ()
    """Its dead letters still waiting for an operator (discarded ones included)."""
    replayed: Records = ()
    """Its dead letters an operator sent back to its input."""
    parked: Records = ()
    """Events parked behind a held key's dead letter, the hold still in force."""


@dataclass(slots=True)
class _Read:
    """What an identifying stage read: each event's first input position (partition,
    key, offset), the ids that are positions (records it could not decode), and the
    events sent back from a dead letter (late by design)."""

    first: dict[str, tuple[int, bytes | None, int]] = field(default_factory=dict)
    positional: set[str] = field(default_factory=set)
    late: set[str] = field(default_factory=set)


def check_flow(
    pipeline: str,
    stages: Sequence[StageFacts],
    topics: Mapping[str, Records],
    trails: Mapping[str, StageTrail] | None = None,
) -> FlowReport:
    """Account for every event of ``stages``, given every record of their ``topics``
    (real name -> records) and each stage's dead letters and parked events."""
    trails = trails or {}
    report = FlowReport(pipeline)
    report.events = sum(
        1
        for topic in entry_topics(stages)
        for record in topics.get(topic, ())
        if not _has(record, RELEASE_DISCARD) and not _has(record, REPLAY_OF)
    )
    report.delivered = sum(len(topics.get(topic, ())) for topic in terminal_topics(stages))
    reports = {s.name: StageReport(s.name, s.identify is not None, s.may_drop) for s in stages}
    read = {
        s.name: _read(s.identify, topics.get(s.source, ()), reports[s.name])
        for s in stages
        if s.identify is not None
    }
    outputs = _outputs(stages, topics, read, reports)
    for stage in stages:
        trail = trails.get(stage.name, StageTrail())
        stage_report = reports[stage.name]
        stage_report.dead_lettered = len(trail.dead_letters)
        stage_report.replayed = len(trail.replayed)
        stage_report.parked = len(trail.parked)
        if stage.identify is None:
            _unidentified(topics.get(stage.source, ()), trail, stage_report)
        else:
            _account(stage, read[stage.name], outputs[stage.name], trail, stage_report)
    report.stages = list(reports.values())
    report.unverified = [s.name for s in stages if s.identify is None]
    report.notes = _notes(stages)
    return report


def _read(identify: Identify, records: Records, report: StageReport) -> _Read:
    read = _Read()
    for record in records:
        if _has(record, RELEASE_DISCARD):
            continue  # an operator's discard marker: no event
        try:
            event_id = identify(record.value or b"")
        except ValueError:  # undecodable: the runtime names it by its position too
            event_id = origin_of(record)
            read.positional.add(event_id)
        if _has(record, REPLAY_OF):
            read.late.add(event_id)
        read.first.setdefault(event_id, (record.partition, record.key, record.offset))
    report.consumed = len(read.first)
    return read


def _outputs(
    stages: Sequence[StageFacts],
    topics: Mapping[str, Records],
    read: Mapping[str, _Read],
    reports: Mapping[str, StageReport],
) -> dict[str, dict[str, Counter[Place]]]:
    """Per identifying stage: event id -> its output records per (topic, key); checks
    order on the way, and counts byte-identical copies on the outputs of stages that do
    not identify their events."""
    writers: dict[str, list[StageFacts]] = defaultdict(list)
    for stage in stages:
        for topic in stage.output_topics:
            writers[topic].append(stage)
    found: dict[str, dict[str, Counter[Place]]] = {name: defaultdict(Counter) for name in read}
    for topic, writing in writers.items():
        identifying = [s for s in writing if s.identify is not None]
        plain = [reports[s.name] for s in writing if s.identify is None]
        copies: Counter[tuple[bytes | None, bytes]] = Counter()
        last: dict[tuple[str, int, bytes | None, int, bytes | None], int] = {}
        for record in sorted(topics.get(topic, ()), key=lambda r: (r.partition, r.offset)):
            if _has(record, REPLAY_OF) or _has(record, RELEASE_DISCARD):
                continue  # an operator's, on the next stage's input: not this stage's output
            event_id = _stamped(record)
            if event_id is None and plain:
                copies[(record.key, record.value or b"")] += 1
                plain[0].outputs += 1
                continue
            owners = [s for s in identifying if event_id in read[s.name].first]
            if event_id is None or not owners:
                where = reports[writing[0].name]
                where.unknown += 1
                where.example("unknown", f"{_at(record)} event {event_id or '(none)'}")
                continue
            for stage in owners:
                places = found[stage.name][event_id]
                places[(topic, record.key)] += 1
                reports[stage.name].outputs += 1
                if places[(topic, record.key)] > 1 or not stage.ordered:
                    continue  # a duplicate is counted as such, not as disorder too
                if event_id in read[stage.name].late:
                    continue
                in_partition, in_key, in_offset = read[stage.name].first[event_id]
                lane = (stage.name, record.partition, record.key, in_partition, in_key)
                previous = last.get(lane)
                if previous is not None and in_offset < previous:
                    reports[stage.name].out_of_order = (reports[stage.name].out_of_order or 0) + 1
                    reports[stage.name].example(
                        "out_of_order",
                        f"{_at(record)} event {event_id}: input offset {in_offset} "
                        f"after {previous}",
                    )
                else:
                    last[lane] = in_offset
        if plain:
            _count_copies(plain[0], copies, topic)
    return found


def _account(
    stage: StageFacts,
    read: _Read,
    outputs: Mapping[str, Counter[Place]],
    trail: StageTrail,
    report: StageReport,
) -> None:
    """Every event ``stage`` read has exactly one outcome (fan-out aside)."""
    identify = stage.identify
    if identify is None:
        return
    dead = Counter(_trail_id(identify, record) for record in trail.dead_letters)
    parked = Counter(_trail_id(identify, record) for record in trail.parked)
    replayed = {_trail_id(identify, record) for record in trail.replayed}
    for event_id, count in (dead + parked).items():
        if event_id not in read.first:
            report.unknown += count
            report.example("unknown", f"dead letter or parked event {event_id}")
    for event_id in read.first:
        places = outputs.get(event_id)
        written = sum(places.values()) if places else 0
        extra = sum(count - 1 for count in places.values()) if places else 0
        held = dead[event_id] + parked[event_id]
        extra += held if written else max(0, held - 1)
        if extra:
            report.duplicated += extra
            report.example("duplicated", event_id)
        if written:
            report.passed = (report.passed or 0) + 1
        if written or held:
            continue
        if event_id in replayed and event_id in read.positional:
            continue  # an undecodable record's replay is a record of its own, accounted
        if stage.may_drop:
            report.dropped = (report.dropped or 0) + 1
        else:
            report.lost = (report.lost or 0) + 1
            report.example("lost", event_id)


def _unidentified(inputs: Records, trail: StageTrail, report: StageReport) -> None:
    """A stage without event ids: its records counted, its dead letters' copies."""
    report.consumed = sum(1 for record in inputs if not _has(record, RELEASE_DISCARD))
    report.passed = report.dropped = report.lost = report.out_of_order = None
    copies = Counter((record.key, record.value or b"") for record in trail.dead_letters)
    _count_copies(report, copies, f"{report.stage}.dlq")


def _count_copies(
    report: StageReport, copies: Counter[tuple[bytes | None, bytes]], topic: str
) -> None:
    for (key, _value), count in copies.items():
        if count > 1:
            report.duplicated += count - 1
            report.example("duplicated", f"{topic} key {_text(key)}: {count} identical records")


def _notes(stages: Sequence[StageFacts]) -> list[str]:
    notes = [
        f"{s.name} {s.unidentified_because}: a loss there cannot be told from a drop, so "
        "only byte-identical duplicates are checked for it (no loss, no order); declare "
        "identify= on the stage to verify it fully."
        for s in stages
        if s.identify is None
    ]
    notes += [
        f"{s.name} may drop events (its handler may return None or an empty list): an "
        "event with no outcome there counts as dropped."
        for s in stages
        if s.identify is not None and s.may_drop
    ]
    notes += [
        f"{s.name} does not keep key order (ordering=none): its order is not checked."
        for s in stages
        if s.identify is not None and not s.ordered
    ]
    return notes


def _trail_id(identify: Identify, record: ConsumerRecord) -> str:
    """The event a dead letter or parked event stands for: the id stamped on it, else
    its stage's identify of its value, else the position it was first read from."""
    stamped = _stamped(record)
    if stamped is not None:
        return stamped
    try:
        return identify(record.value or b"")
    except ValueError:
        return origin_of(record)


def _stamped(record: ConsumerRecord) -> str | None:
    for name, value in record.headers or ():
        if name == EVENT_ID:
            return bytes(value).decode(errors="replace")
    return None


def _has(record: ConsumerRecord, header: str) -> bool:
    return any(name == header for name, _ in record.headers or ())


def _at(record: ConsumerRecord) -> str:
    return f"{record.topic}[{record.partition}]@{record.offset} key {_text(record.key)}"


def _text(key: bytes | None) -> str:
    return "-" if key is None else key.decode(errors="replace")
