"""The default error policy: which failures retry, dead-letter, or stop the stage."""

from __future__ import annotations

import pytest
from aiokafka.errors import MessageSizeTooLargeError, NotLeaderForPartitionError
from pydantic import BaseModel, ValidationError

from pipeline.errors import (
    BrokerUnavailable,
    BusinessRuleViolation,
    ConfigurationError,
    FatalError,
    PipelineError,
    RetryableError,
    UndecodableRecord,
)
from pipeline.failures.classify import Verdict, default_error_policy
from pipeline.stages.services import ServiceUnavailable

pytestmark = pytest.mark.unit


class _Quantity(BaseModel):
    quantity: int


def _validation_error() -> ValidationError:
    try:
        _Quantity.model_validate({"quantity": "many"})
    except ValidationError as exc:
        return exc
    raise AssertionError("the model accepted an invalid quantity")


@pytest.mark.parametrize(
    "error",
    [RetryableError("later"), ServiceUnavailable("inventory down")],
    ids=type,
)
def test_retryable_errors_retry(error: Exception) -> None:
    assert default_error_policy(error) is Verdict.RETRY


@pytest.mark.parametrize(
    "error",
    [FatalError("no"), UndecodableRecord("not JSON"), BusinessRuleViolation("total < 0")],
    ids=type,
)
def test_fatal_errors_dead_letter_at_once(error: Exception) -> None:
    assert default_error_policy(error) is Verdict.DEAD_LETTER


@pytest.mark.parametrize(
    "error",
    [ConfigurationError("no topic"), BrokerUnavailable("nothing at localhost:9092")],
    ids=type,
)
def test_configuration_errors_stop_the_stage(error: Exception) -> None:
    assert default_error_policy(error) is Verdict.FAIL_STAGE


def test_schema_validation_error_dead_letters() -> None:
    assert default_error_policy(_validation_error()) is Verdict.DEAD_LETTER


def test_timeout_retries() -> None:
    assert default_error_policy(TimeoutError("payment took too long")) is Verdict.RETRY


def test_connection_error_retries() -> None:
    assert default_error_policy(ConnectionRefusedError("inventory")) is Verdict.RETRY


def test_unexpected_runtime_error_retries() -> None:
    assert default_error_policy(RuntimeError("surprise")) is Verdict.RETRY


def test_pipeline_error_of_no_particular_kind_retries() -> None:
    assert default_error_policy(PipelineError("unspecified")) is Verdict.RETRY


def test_retriable_kafka_error_retries() -> None:
    assert default_error_policy(NotLeaderForPartitionError()) is Verdict.RETRY


def test_non_retriable_kafka_error_dead_letters() -> None:
    assert default_error_policy(MessageSizeTooLargeError()) is Verdict.DEAD_LETTER
