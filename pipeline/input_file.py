"""Input records for any pipeline from a JSON-lines file (``pipeline produce`` and
``pipeline chaos`` with ``--input``).

One record per line: ``{"key": "device-7", "value": {...}}``, plus ``"topic"`` when the
pipeline has more than one entry topic (a topic its stages read and none writes). The
value is written as its JSON. A line that is not such an object stops the run with its
line number: a file that cannot be read whole is not produced in part.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from pathlib import Path
from typing import Any

from pipeline.errors import ConfigurationError
from pipeline.workload import WorkloadRecord


def read_input_records(path: Path, entry_topics: Sequence[str]) -> dict[str, list[WorkloadRecord]]:
    """The file's records by (logical) entry topic, each topic's in file order."""
    if not entry_topics:
        raise ConfigurationError("the pipeline has no entry topic: every topic it reads, it writes")
    by_topic: dict[str, list[WorkloadRecord]] = {}
    with path.open("rb") as lines:
        for number, line in enumerate(lines, start=1):
            if line.strip():
                topic, record = _parse(line, entry_topics, f"{path}:{number}")
                by_topic.setdefault(topic, []).append(record)
    return by_topic


def _parse(line: bytes, entry_topics: Sequence[str], where: str) -> tuple[str, WorkloadRecord]:
    try:
        item: Any = json.loads(line)
    except ValueError as exc:
        raise ConfigurationError(f"{where}: not JSON ({exc})") from exc
    if not isinstance(item, dict) or "value" not in item or not isinstance(item.get("key"), str):
        raise ConfigurationError(f'{where}: expected {{"key": "<string>", "value": ...}}')
    topic = item.get("topic")
    if topic is None:
        if len(entry_topics) > 1:
            raise ConfigurationError(
                f"{where}: the pipeline reads several entry topics {list(entry_topics)}; say "
                'which with "topic"'
            )
        topic = entry_topics[0]
    if topic not in entry_topics:
        raise ConfigurationError(f"{where}: {topic!r} is not an entry topic {list(entry_topics)}")
    value = json.dumps(item["value"], separators=(",", ":")).encode()
    return topic, WorkloadRecord(key=item["key"].encode(), value=value)
