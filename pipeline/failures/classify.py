"""What to do with a record whose handler raised: the error policy of a stage."""

from __future__ import annotations

from collections.abc import Callable

from aiokafka.errors import (
    AuthenticationFailedError,
    GroupAuthorizationFailedError,
    KafkaError,
    KafkaTimeoutError,
    ProducerFenced,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
from pydantic import ValidationError

from pipeline.errors import ConfigurationError, FatalError, RetryableError
from pipeline.failures.verdict import Verdict

__all__ = ["FENCED_OR_FORBIDDEN", "ErrorPolicy", "Verdict", "default_error_policy"]


FENCED_OR_FORBIDDEN = (
    ProducerFenced,
    AuthenticationFailedError,
    GroupAuthorizationFailedError,
    TopicAuthorizationFailedError,
    TransactionalIdAuthorizationFailed,
)
"""Errors that say this instance must not go on: another one took over, or it may not."""

ErrorPolicy = Callable[[BaseException], Verdict]
"""Maps an exception raised for one record to a :class:`Verdict`."""


def default_error_policy(exc: BaseException) -> Verdict:
    """Fatal and invalid data dead-letter at once; configuration, fencing and missing
    permissions stop the stage; the rest
    (timeouts, unavailable services, unexpected bugs) retries and ends in the dead-letter
    topic if it never succeeds."""
    if isinstance(exc, ConfigurationError):
        return Verdict.FAIL_STAGE
    if isinstance(exc, FatalError | ValidationError | ValueError | TypeError | KeyError):
        return Verdict.DEAD_LETTER
    if isinstance(exc, FENCED_OR_FORBIDDEN):
        return Verdict.FAIL_STAGE
    if isinstance(exc, KafkaTimeoutError):
        return Verdict.RETRY
    if isinstance(exc, KafkaError) and not exc.retriable:
        return Verdict.DEAD_LETTER
    if isinstance(exc, RetryableError | TimeoutError | ConnectionError | KafkaError):
        return Verdict.RETRY
    return Verdict.RETRY
