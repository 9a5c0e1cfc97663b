"""Provenance headers: where a failed record came from and why, kept across failures."""

from __future__ import annotations

from collections import Counter
from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import pytest
from aiokafka.structs import ConsumerRecord

from pipeline.failures import provenance
from pipeline.failures.provenance import Failure, failure_headers
from pipeline.stages.services import ServiceUnavailable
from tests.unit.records import consumer_record

pytestmark = pytest.mark.unit

FIRST = datetime(2026, 1, 1, 12, 0, tzinfo=UTC)
LATER = FIRST + timedelta(minutes=5)
TRACEPARENT = b"00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"

PROVENANCE = (
    provenance.STAGE,
    provenance.ATTEMPT,
    provenance.ORIGIN_TOPIC,
    provenance.ORIGIN_PARTITION,
    provenance.ORIGIN_OFFSET,
    provenance.ORIGIN_TIMESTAMP,
    provenance.ORIGIN_KEY,
    provenance.ERROR_TYPE,
    provenance.ERROR_MESSAGE,
    provenance.ERROR_STACK,
    provenance.FIRST_FAILURE_AT,
    provenance.LAST_FAILURE_AT,
)


def _record(
    topic: str = "orders.events",
    partition: int = 3,
    offset: int = 42,
    key: bytes | None = b"ord-1",
    headers: Sequence[tuple[str, bytes]] = (),
) -> ConsumerRecord[bytes, bytes]:
    return consumer_record(
        topic, offset, key, b"{}", partition=partition, headers=headers, timestamp=1_767_268_800_000
    )


def _raised(error: Exception) -> Exception:
    try:
        raise error
    except Exception as caught:
        return caught


def _failure(error: Exception | None = None, attempt: int = 1) -> Failure:
    return Failure(error or ServiceUnavailable("inventory down"), attempt, FIRST, LATER)


def test_failure_headers_name_stage_origin_and_error() -> None:
    headers = dict(failure_headers(_record(), "reserve", _failure(attempt=3)))

    assert set(PROVENANCE) <= set(headers)
    assert headers[provenance.STAGE] == b"reserve"
    assert headers[provenance.ATTEMPT] == b"3"
    assert headers[provenance.ORIGIN_TOPIC] == b"orders.events"
    assert headers[provenance.ORIGIN_PARTITION] == b"3"
    assert headers[provenance.ORIGIN_OFFSET] == b"42"
    assert headers[provenance.ORIGIN_TIMESTAMP] == b"1767268800000"
    assert headers[provenance.ORIGIN_KEY] == b"ord-1"
    assert headers[provenance.ERROR_TYPE] == b"pipeline.stages.services.ServiceUnavailable"
    assert headers[provenance.ERROR_MESSAGE] == b"inventory down"
    assert headers[provenance.FIRST_FAILURE_AT] == FIRST.isoformat().encode()
    assert headers[provenance.LAST_FAILURE_AT] == LATER.isoformat().encode()


def test_builtin_exception_type_is_named_without_module() -> None:
    headers = dict(failure_headers(_record(), "pay", _failure(TimeoutError("slow"))))

    assert headers[provenance.ERROR_TYPE] == b"TimeoutError"


def test_record_without_key_gets_an_empty_origin_key() -> None:
    headers = dict(failure_headers(_record(key=None), "pay", _failure()))

    assert headers[provenance.ORIGIN_KEY] == b""


def test_stack_of_a_raised_exception_names_where_it_was_raised() -> None:
    error = _raised(ServiceUnavailable("inventory down"))

    headers = dict(failure_headers(_record(), "reserve", _failure(error)))

    stack = headers[provenance.ERROR_STACK].decode()
    assert "_raised" in stack
    assert stack.rstrip().endswith("ServiceUnavailable: inventory down")


def test_second_failure_keeps_the_original_origin_and_replaces_old_provenance() -> None:
    first = failure_headers(_record(headers=[("traceparent", TRACEPARENT)]), "reserve", _failure())
    retried = _record(topic="retry.reserve", partition=0, offset=7, headers=first)

    second = failure_headers(retried, "reserve", _failure(TimeoutError("again"), attempt=2))

    names = Counter(name for name, _ in second)
    assert all(count == 1 for count in names.values()), names
    headers = dict(second)
    assert headers[provenance.ORIGIN_TOPIC] == b"orders.events"
    assert headers[provenance.ORIGIN_PARTITION] == b"3"
    assert headers[provenance.ORIGIN_OFFSET] == b"42"
    assert headers[provenance.ORIGIN_TIMESTAMP] == b"1767268800000"
    assert headers[provenance.ATTEMPT] == b"2"
    assert headers[provenance.ERROR_TYPE] == b"TimeoutError"
    assert headers[provenance.ERROR_MESSAGE] == b"again"
    assert headers["traceparent"] == TRACEPARENT


def test_a_replay_marker_survives_a_new_failure() -> None:
    marker = [
        (provenance.REPLAY_OF, b"pay.dlq/0/7"),
        (provenance.REPLAYED_AT, b"2026-01-01T00:00:00+00:00"),
    ]

    headers = dict(failure_headers(_record(headers=marker), "pay", _failure()))

    assert headers[provenance.REPLAY_OF] == b"pay.dlq/0/7"
    assert headers[provenance.REPLAYED_AT] == b"2026-01-01T00:00:00+00:00"


def test_earlier_failure_provenance_is_replaced() -> None:
    failed = _record(headers=[(provenance.ERROR_TYPE, b"OldError")])

    headers = failure_headers(failed, "pay", _failure())

    assert [value for name, value in headers if name == provenance.ERROR_TYPE] != [b"OldError"]
    assert sum(name == provenance.ERROR_TYPE for name, _ in headers) == 1


def test_records_own_headers_are_kept_in_order_before_provenance() -> None:
    own = [("traceparent", TRACEPARENT), ("tracestate", b"vendor=1"), ("tenant", b"eu")]

    headers = failure_headers(_record(headers=own), "validate", _failure())

    assert headers[: len(own)] == own
    assert sorted(name for name, _ in headers[len(own) :]) == sorted(PROVENANCE)


def test_long_message_and_stack_are_truncated() -> None:
    error = _raised(ServiceUnavailable("x" * 10_000))

    headers = dict(failure_headers(_record(), "reserve", _failure(error)))

    assert headers[provenance.ERROR_MESSAGE] == b"x" * provenance.MAX_MESSAGE_CHARS
    stack = headers[provenance.ERROR_STACK]
    assert len(stack) == provenance.MAX_STACK_CHARS
    assert stack.endswith(b"x" * 100 + b"\n")  # the tail, where the error is, survives
