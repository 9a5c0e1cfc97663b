"""End-to-end latency reads the ``occurred_at`` of any model, or of the event it carries."""

from __future__ import annotations

from datetime import UTC, datetime

import pytest
from pydantic import BaseModel

from pipeline.telemetry.metrics import _occurred_at

pytestmark = pytest.mark.unit

WHEN = datetime(2026, 12, 2, tzinfo=UTC)


class Reading(BaseModel):
    occurred_at: datetime


class Progress(BaseModel):
    event: Reading


class Plain(BaseModel):
    value: int


def test_occurred_at_on_the_model_or_its_event_and_none_otherwise() -> None:
    assert _occurred_at(Reading(occurred_at=WHEN)) == WHEN
    assert _occurred_at(Progress(event=Reading(occurred_at=WHEN))) == WHEN
    assert _occurred_at(Plain(value=1)) is None
    assert _occurred_at(Plain(value=2)) is None  # decided once per model, asked again
