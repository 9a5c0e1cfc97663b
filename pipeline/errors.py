"""The pipeline's one exception tree.

::

    PipelineError
    ├── RetryableError        try again later: timeouts, a service's "try later"
    │   └── DatabaseUnavailable   the ingress's database does not answer (HTTP 503)
    ├── FatalError            retrying cannot help: the record goes to the dead-letter topic
    │   ├── UndecodableRecord   bytes that are not JSON or do not fit the schema
    │   ├── NoOutput            a handler returned something that is not an output
    │   └── BusinessRuleViolation
    └── ConfigurationError    the pipeline is set up wrong; stop instead of processing
        ├── BrokerUnavailable     nothing answers at the bootstrap address
        └── CredentialsRejected   a broker answers but refuses the SASL credentials

Stages raise meaning; the runtime decides what to do with it (see
:mod:`pipeline.failures.classify`).
"""

from __future__ import annotations


class PipelineError(Exception):
    """Base of every error the pipeline raises on purpose."""


class RetryableError(PipelineError):
    """A failure that may go away if the same record is tried again later."""


class DatabaseUnavailable(RetryableError):
    """The ingress's database refused a connection, dropped one or did not answer in
    time; the API answers 503 and the projection retries the batch."""


class FatalError(PipelineError):
    """A failure that no retry can fix; the record is dead-lettered at once."""


class UndecodableRecord(FatalError):
    """A record's bytes are not a valid event of the stage's input schema."""


class BusinessRuleViolation(FatalError):
    """An event breaks a rule declared fatal by its stage."""


class ConfigurationError(PipelineError):
    """The pipeline cannot run with the given settings or environment."""


class BrokerUnavailable(ConfigurationError):
    """No Kafka broker answers at the configured address."""


class CredentialsRejected(ConfigurationError):
    """A broker answers but refuses the configured SASL user name or password."""


class MissingTopics(ConfigurationError):
    """Topics a stage reads or writes do not exist on the broker (they are created from
    the code by ``pipeline topics apply``, or as Strimzi ``KafkaTopic`` resources)."""


class NoOutput(FatalError):
    """A handler returned something that is neither an event, an :class:`Output`, a
    list of them, nor ``None``; or an output to a topic its stage did not declare."""
