"""The verifier of any pipeline over hand-built records: every event a stage read has one
outcome; fan-out is not duplication; loss, duplicates and disorder are found where they
happen; a stage without identify is only checked for byte-identical copies."""

from __future__ import annotations

import json
from dataclasses import replace

import pytest
from aiokafka.structs import ConsumerRecord
from pydantic import BaseModel

from pipeline import Output, Pipeline
from pipeline.accounting import StageFacts, StageTrail, check_flow, stage_facts
from pipeline.failures.provenance import (
    EVENT_ID,
    ORIGIN_OFFSET,
    ORIGIN_PARTITION,
    ORIGIN_TOPIC,
    REPLAY_OF,
)
from pipeline.kafka.topology import Naming
from pipeline.settings import StageSettings
from tests.unit.records import consumer_record

pytestmark = pytest.mark.unit

Records = list[ConsumerRecord[bytes, bytes]]


def _identify(value: bytes) -> str:
    try:
        return str(json.loads(value)["id"])
    except (json.JSONDecodeError, KeyError, TypeError) as exc:
        raise ValueError(str(exc)) from exc


CLEAN = StageFacts("clean", "raw", ("clean",), _identify, may_drop=True)
CHECK = StageFacts("check", "clean", ("checked", "alerts"), _identify, may_drop=False)
STAGES = [CLEAN, CHECK]


def _value(event_id: str, key: str) -> bytes:
    return json.dumps({"id": event_id, "device": key}).encode()


def _inputs(topic: str, *events: tuple[str, str]) -> Records:
    """Records of ``topic``: (event id, key) each, in offset order."""
    return [
        consumer_record(topic, offset, key.encode(), _value(event_id, key))
        for offset, (event_id, key) in enumerate(events)
    ]


def _outputs(topic: str, *events: tuple[str, str]) -> Records:
    """Records a stage wrote to ``topic``, stamped with their input's event id."""
    return [
        consumer_record(
            topic,
            offset,
            key.encode(),
            _value(event_id, key),
            headers=[(EVENT_ID, event_id.encode())],
        )
        for offset, (event_id, key) in enumerate(events)
    ]


def _dead_letter(topic: str, event_id: str, key: str) -> ConsumerRecord[bytes, bytes]:
    return consumer_record(
        topic, 0, key.encode(), _value(event_id, key), headers=[(EVENT_ID, event_id.encode())]
    )


RAW = _inputs("raw", ("e1", "d1"), ("e2", "d1"), ("e3", "d2"), ("e4", "d2"))


def _flow(**overrides: Records) -> dict[str, Records]:
    """e4 dropped by clean; e1..e3 checked, e1 also alerted (fan-out) under its site."""
    topics = {
        "raw": RAW,
        "clean": _outputs("clean", ("e1", "d1"), ("e2", "d1"), ("e3", "d2")),
        "checked": _outputs("checked", ("e1", "d1"), ("e2", "d1"), ("e3", "d2")),
        "alerts": _outputs("alerts", ("e1", "site-a")),
    }
    return {**topics, **overrides}


def test_a_flow_with_a_filter_and_fan_out_is_clean() -> None:
    report = check_flow("sensors", STAGES, _flow())

    assert report.clean, report.as_dict()
    assert (report.events, report.delivered, report.dropped) == (4, 4, 1)
    clean, check = report.stages
    assert (clean.consumed, clean.passed, clean.dropped) == (4, 3, 1)
    assert (check.consumed, check.passed, check.outputs) == (3, 3, 4)
    assert report.loss_verified
    assert report.notes == [
        "clean may drop events (its handler may return None or an empty list): an event "
        "with no outcome there counts as dropped."
    ]


def test_fan_out_to_one_topic_under_different_keys_is_not_a_duplicate() -> None:
    alerts = _outputs("alerts", ("e1", "site-a"), ("e1", "site-b"))

    report = check_flow("sensors", STAGES, _flow(alerts=alerts))

    assert report.clean, report.as_dict()


def test_a_second_record_on_the_same_topic_and_key_is_a_duplicate() -> None:
    checked = _outputs("checked", ("e1", "d1"), ("e2", "d1"), ("e1", "d1"), ("e3", "d2"))

    report = check_flow("sensors", STAGES, _flow(checked=checked))

    assert (report.duplicated, report.out_of_order, report.lost) == (1, 0, 0)
    assert report.stages[1].examples == {"duplicated": ["e1"]}
    assert not report.clean


def test_an_event_both_written_and_dead_lettered_is_a_duplicate() -> None:
    trails = {"check": StageTrail(dead_letters=[_dead_letter("check.dlq", "e2", "d1")])}

    report = check_flow("sensors", STAGES, _flow(), trails)

    assert (report.duplicated, report.stages[1].dead_lettered) == (1, 1)


def test_an_event_dead_lettered_instead_of_written_is_accounted() -> None:
    checked = _outputs("checked", ("e1", "d1"), ("e3", "d2"))
    trails = {"check": StageTrail(dead_letters=[_dead_letter("check.dlq", "e2", "d1")])}

    report = check_flow("sensors", STAGES, _flow(checked=checked), trails)

    assert report.clean, report.as_dict()
    assert report.dead_lettered == 1


def test_an_event_with_no_outcome_is_lost_where_the_handler_cannot_drop() -> None:
    checked = _outputs("checked", ("e1", "d1"), ("e3", "d2"))

    report = check_flow("sensors", STAGES, _flow(checked=checked))

    assert (report.lost, report.dropped) == (1, 1)  # e2 lost at check; e4 dropped at clean
    assert report.stages[1].examples == {"lost": ["e2"]}
    assert not report.clean


def test_outputs_of_one_input_key_must_keep_its_input_order() -> None:
    checked = _outputs("checked", ("e2", "d1"), ("e1", "d1"), ("e3", "d2"))

    report = check_flow("sensors", STAGES, _flow(checked=checked))

    assert report.out_of_order == 1
    assert "input offset 0 after 1" in report.stages[1].examples["out_of_order"][0]


def test_different_input_keys_rekeyed_to_one_key_may_interleave() -> None:
    alerts = _outputs("alerts", ("e3", "site-a"), ("e1", "site-a"), ("e2", "site-a"))

    report = check_flow("sensors", STAGES, _flow(alerts=alerts))

    assert report.clean, report.as_dict()


def test_a_replayed_dead_letter_is_late_by_design() -> None:
    replay = consumer_record(
        "clean", 3, b"d1", _value("e1", "d1"), headers=[(REPLAY_OF, b"check.dlq/0/0")]
    )
    clean = [*_flow()["clean"], replay]
    checked = _outputs("checked", ("e2", "d1"), ("e3", "d2"), ("e1", "d1"))
    trails = {"check": StageTrail(replayed=[_dead_letter("check.dlq", "e1", "d1")])}

    report = check_flow("sensors", STAGES, _flow(clean=clean, checked=checked), trails)

    assert report.clean, report.as_dict()
    assert report.stages[1].replayed == 1


def test_an_undecodable_record_is_named_by_its_position() -> None:
    garbage = consumer_record("raw", 4, b"d3", b"not json")
    dead = consumer_record(
        "clean.dlq",
        0,
        b"d3",
        b"not json",
        headers=[(ORIGIN_TOPIC, b"raw"), (ORIGIN_PARTITION, b"0"), (ORIGIN_OFFSET, b"4")],
    )

    accounted = check_flow(
        "sensors", STAGES, _flow(raw=[*RAW, garbage]), {"clean": StageTrail([dead])}
    )
    # without its dead letter it would be dropped: clean may drop
    missing = check_flow("sensors", [replace(CLEAN, may_drop=False)], {"raw": [garbage]})

    assert accounted.clean
    assert accounted.dead_lettered == 1
    assert accounted.stages[0].dropped == 1  # e4 only
    assert missing.lost == 1
    assert missing.stages[0].examples == {"lost": ["raw/0/4"]}


def test_an_output_for_no_event_read_is_unknown() -> None:
    checked = _outputs("checked", ("e1", "d1"), ("e2", "d1"), ("e3", "d2"), ("e9", "d9"))

    report = check_flow("sensors", STAGES, _flow(checked=checked))

    assert report.unknown == 1
    assert not report.clean


def test_without_identify_only_byte_identical_copies_are_checked() -> None:
    plain = [
        StageFacts("clean", "raw", ("clean",), None, unidentified_because="declares no identify"),
        StageFacts("check", "clean", ("checked", "alerts"), None, may_drop=False),
    ]
    unstamped = {
        topic: [consumer_record(r.topic, r.offset, r.key, r.value or b"") for r in records]
        for topic, records in _flow().items()
    }
    copy = unstamped["checked"][0]
    unstamped["checked"] = [
        *unstamped["checked"],
        consumer_record("checked", 3, copy.key, copy.value or b""),
    ]
    del unstamped["alerts"][0]  # lost: nobody can tell

    report = check_flow("sensors", plain, unstamped)

    assert (report.duplicated, report.lost, report.unknown) == (1, 0, 0)
    assert report.unverified == ["clean", "check"]
    assert not report.loss_verified
    assert report.stages[0].lost is None
    assert report.stages[0].out_of_order is None
    assert report.notes[0].startswith("clean declares no identify: a loss there cannot be")


class Reading(BaseModel):
    id: str
    device: str


def test_what_a_stage_may_drop_is_read_from_its_handler() -> None:
    pipeline = Pipeline("p")

    @pipeline.stage(source="a", sink="b", identify=lambda r: r.id)
    async def screen(reading: Reading) -> Reading | None:
        return reading

    @pipeline.stage(source="b", sink="c", outputs=["d"], identify=lambda r: r.id)
    async def fan(reading: Reading) -> list[Output]:
        return [Output("c", reading)]

    @pipeline.stage(source="c", sink="e", identify=lambda r: r.id)
    async def store(readings: list[Reading]) -> list[Reading | Exception]:
        return list(readings)

    @pipeline.stage(source="e", sink="f")
    async def plain(reading: Reading) -> Reading:
        return reading

    settings = StageSettings()
    facts = {
        name: stage_facts(spec, settings, Naming("t.")) for name, spec in pipeline.stages.items()
    }

    assert {name: f.may_drop for name, f in facts.items()} == {
        "screen": True,
        "fan": True,
        "store": False,
        "plain": False,
    }
    assert facts["fan"].output_topics == ("t.c", "t.d")
    assert facts["store"].identify is not None
    assert facts["store"].identify(b'{"id": "r1", "device": "d"}') == "r1"
    with pytest.raises(ValueError, match="Invalid JSON"):
        facts["store"].identify(b"not json")
    assert facts["plain"].identify is None
    assert facts["plain"].unidentified_because == "declares no identify"
    no_window = stage_facts(pipeline.stages["screen"], StageSettings(dedupe_window=0), Naming())
    assert no_window.identify is None
    assert "dedupe_window 0" in no_window.unidentified_because
