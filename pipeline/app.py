"""Builds a runnable pipeline process from settings: broker, stage routers, hooks, HTTP.

No broker exists at import time; every caller (CLI, tests, benchmark) builds its own.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from faststream import ContextRepo
from faststream.asgi import AsgiFastStream
from faststream.kafka import KafkaBroker
from faststream.kafka.opentelemetry import KafkaTelemetryMiddleware
from faststream.kafka.prometheus import KafkaPrometheusMiddleware
from opentelemetry.sdk.trace import TracerProvider
from prometheus_client import CollectorRegistry

from pipeline.errors import ConfigurationError
from pipeline.kafka.connection import broker_security
from pipeline.kafka.topology import Naming
from pipeline.runtime.observer import StageObserver
from pipeline.runtime.ports import RecordSink
from pipeline.runtime.stage import StageSpec
from pipeline.runtime.wiring import StageRuntime
from pipeline.settings import Settings
from pipeline.stages import checkout, checkout_services
from pipeline.stages.services import Services, simulated_services
from pipeline.telemetry.http import http_routes
from pipeline.telemetry.metrics import PipelineMetrics, PrometheusObserver
from pipeline.telemetry.tracing import RecordTracing, tracer_provider_from_env


@dataclass(slots=True)
class PipelineApp:
    """A process's FastStream app with the stages it runs."""

    app: AsgiFastStream
    broker: KafkaBroker
    runtimes: list[StageRuntime]
    registry: CollectorRegistry

    async def start(self) -> None:
        """Start producers, then the broker and its consumers."""
        await self.app.start()

    async def check_topics(self) -> None:
        """Raise :class:`~pipeline.errors.MissingTopics` naming what a stage of this
        process needs and the broker does not have (``start`` checks too; a process that
        serves HTTP checks first, so the refusal is not lost in the server's start-up)."""
        for runtime in self.runtimes:
            await runtime.check_topics()

    async def stop(self) -> None:
        """Drain and commit every stage, then stop the broker (leaving the groups)."""
        await self.app.stop()

    @property
    def failure(self) -> BaseException | None:
        """The first fatal failure of any stage, if one happened."""
        return next((r.engine.failure for r in self.runtimes if r.engine.failure), None)


def create_app(
    settings: Settings,
    stage_names: Sequence[str] | None = None,
    *,
    services: Services | None = None,
    observers: dict[str, StageObserver] | None = None,
    sink_factory: Callable[[KafkaBroker], RecordSink] | None = None,
    http: bool = True,
    catalog: Mapping[str, StageSpec[Any, Any]] = checkout.stages,
    tracer_provider: TracerProvider | None = None,
    dependency_overrides: Mapping[Any, Any] | None = None,
) -> PipelineApp:
    """A FastStream app running ``stage_names`` of ``catalog`` (all of them when ``None``);
    ``catalog`` is a :class:`~pipeline.Pipeline`'s ``stages`` for a user's pipeline."""
    names = list(stage_names or catalog)
    unknown = [name for name in names if name not in catalog]
    if unknown:
        raise ConfigurationError(f"unknown stage(s) {unknown}; known: {list(catalog)}")
    for name in names:
        # one retry topic per delay, and `topics apply` creates PIPELINE_TOPICS_RETRY_LEVELS
        delays = catalog[name].settings_for(settings.stage).retry_delays_s
        if len(delays) != settings.topics.retry_levels:
            raise ConfigurationError(
                f"stage {name} declares {len(delays)} retry delays but "
                f"PIPELINE_TOPICS_RETRY_LEVELS is {settings.topics.retry_levels}: a stage "
                "has one retry topic per delay"
            )
    registry = CollectorRegistry()
    metrics = PipelineMetrics(registry)
    observers = observers or {name: PrometheusObserver(metrics, name) for name in names}
    provider = tracer_provider or tracer_provider_from_env(f"pipeline-{'-'.join(names)}")
    middlewares: list[Any] = [
        KafkaPrometheusMiddleware(registry=registry, app_name="order-pipeline")
    ]
    if provider is not None:
        middlewares.append(KafkaTelemetryMiddleware(tracer_provider=provider))
    context = ContextRepo()
    services = services or simulated_services(settings.services)
    context.set_global("services", services)
    overrides = {checkout_services: lambda: services, **(dependency_overrides or {})}
    broker = KafkaBroker(
        settings.kafka.bootstrap_hosts,
        security=broker_security(settings.kafka),
        client_id=settings.kafka.client_id_prefix,
        context=context,
        request_timeout_ms=settings.kafka.request_timeout_ms,
        # FastStream logs every batch at INFO; per-batch lines belong at DEBUG. Its lines
        # go through the pipeline's logging configuration like everything else.
        log_level=logging.DEBUG,
        logger=logging.getLogger("pipeline.faststream"),
        middlewares=middlewares,
    )
    naming = Naming.of(settings.topics)
    runtimes = [
        StageRuntime(
            catalog[name],
            settings.kafka,
            catalog[name].settings_for(settings.stage),
            context.get("services"),
            observer=observers.get(name),
            sink=sink_factory(broker) if sink_factory else None,
            naming=naming,
            tracing=RecordTracing(provider, name, naming.group(name)) if provider else None,
            dependency_overrides=overrides,
        )
        for name in names
    ]
    for runtime in runtimes:
        broker.include_router(runtime.router)

    async def start_producers() -> None:
        for runtime in runtimes:
            await runtime.start()

    async def drain_stages() -> None:
        for runtime in runtimes:
            await runtime.stop()

    app = AsgiFastStream(
        broker,
        on_startup=[start_producers],
        on_shutdown=[drain_stages],
        context=context,
    )
    pipeline = PipelineApp(app=app, broker=broker, runtimes=runtimes, registry=registry)
    if http:
        app.routes.extend(http_routes(pipeline.runtimes, registry))
    return pipeline
