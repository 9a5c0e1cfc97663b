"""The generated workload: per-order sequences in emission order, keyed by order id."""

from __future__ import annotations

from collections import defaultdict
from itertools import groupby

import orjson
import pytest
from pydantic import ValidationError

from pipeline.workload import WorkloadRecord, generate
from schemas import ORDER_EVENT_ADAPTER

pytestmark = pytest.mark.unit


def _valid(records: list[WorkloadRecord]) -> list[WorkloadRecord]:
    return [record for record in records if not record.key.startswith(b"bad-")]


def test_each_orders_sequence_starts_at_one_and_grows_by_one_in_emission_order() -> None:
    records = list(generate(200, invalid_every=0, run_id="r1"))

    sequences: dict[str, list[int]] = defaultdict(list)
    for record in records:
        event = ORDER_EVENT_ADAPTER.validate_json(record.value)
        sequences[event.order_id].append(event.sequence)

    assert len(sequences) == 200
    for order_sequences in sequences.values():
        assert order_sequences == list(range(1, len(order_sequences) + 1))


def test_orders_are_interleaved_within_the_window() -> None:
    interleaved = [r.key for r in generate(50, invalid_every=0, run_id="r1")]
    one_by_one = [r.key for r in generate(50, invalid_every=0, window=1, run_id="r1")]

    assert len({key for key, _ in groupby(one_by_one)}) == 50  # each order in one run
    assert len([key for key, _ in groupby(interleaved)]) > 50


def test_record_key_is_the_events_order_id() -> None:
    for record in generate(100, invalid_every=0, run_id="r1"):
        event = ORDER_EVENT_ADAPTER.validate_json(record.value)
        assert record.key == event.order_id.encode()


def test_event_ids_are_unique() -> None:
    records = list(generate(300, invalid_every=50, run_id="r1"))
    event_ids = [orjson.loads(r.value)["event_id"] for r in records if r.value[:1] == b"{"]

    assert len(event_ids) == len(set(event_ids))


def test_a_pair_of_invalid_records_follows_every_configured_number_of_orders() -> None:
    records = list(generate(10, invalid_every=3, run_id="r1"))

    invalid = [record for record in records if record.key.startswith(b"bad-")]
    assert len(invalid) == 6  # after orders 3, 6 and 9
    for record in invalid:
        with pytest.raises(ValidationError):
            ORDER_EVENT_ADAPTER.validate_json(record.value)
    not_json = [r for r in invalid if r.value[:1] != b"{"]
    assert len(not_json) == 3
    for record in _valid(records):
        ORDER_EVENT_ADAPTER.validate_json(record.value)


def test_invalid_every_zero_generates_only_valid_records() -> None:
    records = list(generate(100, invalid_every=0, run_id="r1"))

    assert _valid(records) == records


def test_order_ids_carry_the_run_id() -> None:
    keys = {record.key for record in generate(20, invalid_every=0, run_id="r42")}

    assert keys == {f"ord-r42-{number}".encode() for number in range(20)}


def test_two_runs_without_run_id_share_no_order_id() -> None:
    first = {record.key for record in generate(50, invalid_every=10)}
    second = {record.key for record in generate(50, invalid_every=10)}

    assert first.isdisjoint(second)
