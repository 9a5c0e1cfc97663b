"""Input files for a user's pipeline (``pipeline produce|chaos MODULE:ATTR --input``)."""

from __future__ import annotations

import json
from pathlib import Path

import pytest

from pipeline.errors import ConfigurationError
from pipeline.input_file import read_input_records

pytestmark = pytest.mark.unit


def write(path: Path, *lines: object) -> Path:
    path.write_text("".join((x if isinstance(x, str) else json.dumps(x)) + "\n" for x in lines))
    return path


def test_records_go_to_the_only_entry_topic_in_file_order(tmp_path: Path) -> None:
    path = write(
        tmp_path / "in.jsonl",
        {"key": "a", "value": {"n": 1}},
        "",
        {"key": "b", "value": [1, 2]},
    )

    records = read_input_records(path, ["readings"])

    assert [(r.key, r.value) for r in records["readings"]] == [
        (b"a", b'{"n":1}'),
        (b"b", b"[1,2]"),
    ]


def test_several_entry_topics_need_a_topic_on_every_line(tmp_path: Path) -> None:
    named = write(
        tmp_path / "named.jsonl",
        {"topic": "clicks", "key": "u1", "value": 1},
        {"topic": "views", "key": "u1", "value": 2},
    )
    unnamed = write(tmp_path / "unnamed.jsonl", {"key": "u1", "value": 1})

    records = read_input_records(named, ["clicks", "views"])

    assert {topic: len(r) for topic, r in records.items()} == {"clicks": 1, "views": 1}
    with pytest.raises(ConfigurationError, match=r"unnamed.jsonl:1: .*several entry topics"):
        read_input_records(unnamed, ["clicks", "views"])


@pytest.mark.parametrize(
    ("line", "why"),
    [
        ("{not json", "not JSON"),
        ({"value": 1}, "expected"),
        ({"key": 7, "value": 1}, "expected"),
        ({"key": "a"}, "expected"),
        ({"topic": "elsewhere", "key": "a", "value": 1}, "not an entry topic"),
    ],
)
def test_a_bad_line_is_refused_with_its_number(tmp_path: Path, line: object, why: str) -> None:
    path = write(tmp_path / "in.jsonl", {"key": "a", "value": 1}, line)

    with pytest.raises(ConfigurationError, match=rf"in.jsonl:2: .*{why}"):
        read_input_records(path, ["readings"])
