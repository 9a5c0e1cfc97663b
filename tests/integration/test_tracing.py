"""One trace per order event across validate -> reserve -> pay -> fulfil, retries
included, with parent/child links carried in Kafka headers."""

from __future__ import annotations

import random
from collections import defaultdict
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager

from opentelemetry.sdk.trace import TracerProvider
from opentelemetry.sdk.trace.export import SimpleSpanProcessor
from opentelemetry.sdk.trace.export.in_memory_span_exporter import InMemorySpanExporter

from pipeline.app import PipelineApp, create_app
from pipeline.kafka.admin import apply_topics
from pipeline.kafka.topology import STAGE_NAMES, Naming, pipeline_topics
from pipeline.settings import Settings
from pipeline.stages.services import Services, SimulatedPayment
from pipeline.workload import WorkloadRecord, order_lifecycle
from tests.integration.helpers import drain_and_verify, produce
from tests.integration.test_retry_ladder import FlakyInventory


@asynccontextmanager
async def traced(
    settings: Settings, services: Services, provider: TracerProvider
) -> AsyncIterator[PipelineApp]:
    pipeline = create_app(settings, services=services, http=False, tracer_provider=provider)
    await pipeline.start()
    try:
        yield pipeline
    finally:
        await pipeline.stop()


async def test_each_order_event_is_one_trace_through_all_stages_including_a_retry(
    settings: Settings, topics: Naming
) -> None:
    stage = settings.stage.model_copy(update={"retry_delays_s": [0.2], "in_process_attempts": 2})
    settings = settings.model_copy(
        update={"stage": stage, "topics": settings.topics.model_copy(update={"retry_levels": 1})}
    )
    await apply_topics(settings.kafka, pipeline_topics(settings.topics))
    exporter = InMemorySpanExporter()
    provider = TracerProvider()
    provider.add_span_processor(SimpleSpanProcessor(exporter))
    rng = random.Random(5)
    placed = [order_lifecycle(f"ord-trace-{n}", rng)[0] for n in range(20)]
    records = [
        WorkloadRecord(e.order_id.encode(), e.__pydantic_serializer__.to_json(e)) for e in placed
    ]
    retried_order = "ord-trace-7"
    services = Services(
        inventory=FlakyInventory({retried_order: 2}),  # both in-process attempts fail
        payment=SimulatedPayment(settings.services),
    )
    async with traced(settings, services, provider):
        await produce(settings, records)
        report = await drain_and_verify(settings)
    assert report.clean, report.as_dict()

    spans_by_key: dict[str, list] = defaultdict(list)
    for span in exporter.get_finished_spans():
        attributes = span.attributes or {}
        if "pipeline.stage" in attributes:
            spans_by_key[str(attributes["messaging.kafka.message.key"])].append(span)
    for event in placed:
        spans = spans_by_key[event.order_id]
        assert len({span.context.trace_id for span in spans}) == 1, event
        stages = [span.attributes["pipeline.stage"] for span in spans]
        assert set(stages) == set(STAGE_NAMES)
        by_id = {span.context.span_id: span for span in spans}
        roots = [span for span in spans if span.parent is None]
        assert [root.attributes["pipeline.stage"] for root in roots] == ["validate"]
        for span in spans:
            if span.parent is not None:
                assert span.parent.span_id in by_id  # every hop's parent is in the trace
    retried = [
        s for s in spans_by_key[retried_order] if s.attributes["pipeline.stage"] == "reserve"
    ]
    first, second = sorted(retried, key=lambda span: span.start_time)
    assert first.attributes["pipeline.outcome"] == "retried"
    assert second.parent.span_id == first.context.span_id  # the retry is a child of the failure
    assert second.attributes["messaging.destination.name"] == topics.retry("reserve", 1)
