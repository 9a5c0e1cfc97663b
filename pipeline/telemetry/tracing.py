"""Tracing: one span per record per stage, its context carried in Kafka headers.

Each record's span is a child of the span that produced it (W3C ``traceparent`` in the
record's headers), so an order event's way through validate, reserve, pay and fulfil,
its retries and its dead letter form one trace. The tracer provider comes from the
standard ``OTEL_*`` variables; without an exporter configured, tracing is off and costs
one ``is None`` check per record.
"""

from __future__ import annotations

import logging

from aiokafka.structs import ConsumerRecord
from opentelemetry import trace
from opentelemetry.context import Context
from opentelemetry.propagate import extract, inject
from opentelemetry.propagators.textmap import Getter
from opentelemetry.sdk.resources import Resource
from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import BatchSpanProcessor
from opentelemetry.trace import Span, SpanKind, Status, StatusCode, Tracer
from pydantic import Field
from pydantic_settings import BaseSettings, SettingsConfigDict

from pipeline.failures.provenance import Headers

TRACE_HEADERS = frozenset({"traceparent", "tracestate", "baggage"})


class OtelSettings(BaseSettings):
    """The standard OpenTelemetry variables the pipeline honours (``OTEL_*``)."""

    model_config = SettingsConfigDict(env_prefix="OTEL_", extra="ignore")

    sdk_disabled: bool = False
    service_name: str | None = None
    traces_exporter: str = Field(default="otlp")
    exporter_otlp_endpoint: str | None = None
    exporter_otlp_traces_endpoint: str | None = None


def tracer_provider_from_env(default_service: str) -> TracerProvider | None:
    """A provider exporting over OTLP/HTTP when an endpoint is configured, else ``None``.

    Sampling follows ``OTEL_TRACES_SAMPLER``/``_ARG``, read by the SDK itself.
    """
    otel = OtelSettings()
    endpoint = otel.exporter_otlp_traces_endpoint or otel.exporter_otlp_endpoint
    if otel.sdk_disabled or otel.traces_exporter == "none" or not endpoint:
        return None
    from opentelemetry.exporter.otlp.proto.http.trace_exporter import OTLPSpanExporter

    provider = TracerProvider(
        resource=Resource.create({"service.name": otel.service_name or default_service})
    )
    provider.add_span_processor(BatchSpanProcessor(OTLPSpanExporter()))
    return provider


class _HeaderGetter(Getter[dict[str, bytes]]):
    def get(self, carrier: dict[str, bytes], key: str) -> list[str] | None:
        value = carrier.get(key)
        return [value.decode()] if value is not None else None

    def keys(self, carrier: dict[str, bytes]) -> list[str]:
        return list(carrier)


_GETTER = _HeaderGetter()


class RecordTracing:
    """Starts, ends and propagates the per-record spans of one stage."""

    def __init__(self, provider: TracerProvider, stage: str, group: str) -> None:
        self._tracer: Tracer = provider.get_tracer("order-pipeline")
        self._stage = stage
        self._group = group

    def start(self, record: ConsumerRecord) -> Span:
        """A consumer span for ``record``, child of the span that produced it."""
        carrier = {k: v for k, v in record.headers or () if k in TRACE_HEADERS}
        parent: Context = extract(carrier, getter=_GETTER) if carrier else Context()
        return self._tracer.start_span(
            f"{record.topic} process",
            context=parent,
            kind=SpanKind.CONSUMER,
            attributes={
                "messaging.system": "kafka",
                "messaging.operation.type": "process",
                "messaging.destination.name": record.topic,
                "messaging.destination.partition.id": str(record.partition),
                "messaging.kafka.offset": record.offset,
                "messaging.kafka.message.key": (record.key or b"").decode(errors="replace"),
                "messaging.consumer.group.name": self._group,
                "pipeline.stage": self._stage,
            },
        )

    @staticmethod
    def inject(span: Span, headers: Headers) -> Headers:
        """``headers`` with the trace context of ``span`` instead of the input's."""
        carrier: dict[str, str] = {}
        inject(carrier, context=trace.set_span_in_context(span))
        kept = [(k, v) for k, v in headers if k not in TRACE_HEADERS]
        return kept + [(k, v.encode()) for k, v in carrier.items()]

    @staticmethod
    def end(span: Span, outcome: str, error: BaseException | None = None) -> None:
        """Close ``span`` with the record's outcome (and error, if any)."""
        span.set_attribute("pipeline.outcome", outcome)
        if error is not None:
            span.record_exception(error)
            span.set_status(Status(StatusCode.ERROR, type(error).__name__))
        span.end()


class TraceContextFilter(logging.Filter):
    """Adds ``trace_id`` and ``span_id`` of the current span to log records."""

    def filter(self, record: logging.LogRecord) -> bool:
        context = trace.get_current_span().get_span_context()
        record.trace_id = format(context.trace_id, "032x") if context.is_valid else "-"
        record.span_id = format(context.span_id, "016x") if context.is_valid else "-"
        return True
