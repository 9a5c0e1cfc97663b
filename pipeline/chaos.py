"""``pipeline chaos``: a pipeline under kill -9, a broker restart, rebalances and
SIGTERM, checked afterwards by the verifier.

Every stage runs as its own ``pipeline run [MODULE:ATTR] STAGE`` process in a fresh
topic namespace. While events are produced (the checkout's generated orders, or a user
pipeline's input file), random stage processes are killed with SIGKILL and started
again, one stage is scaled 1 -> 3 -> 1, and the local broker is restarted once. The
pauses between actions are random on purpose: chaos picks its moments, it does not wait
for conditions. The checkout is checked by its own verifier, any other pipeline by the
one derived from its stages (:mod:`pipeline.accounting`).
"""

from __future__ import annotations

import asyncio
import json
import os
import random
import signal
import subprocess
import sys
import time
import uuid
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

from aiokafka.errors import KafkaError

from pipeline.accounting import FlowReport, verify_pipeline
from pipeline.kafka.admin import apply_topics, delete_topics, group_members
from pipeline.kafka.lag import TRANSACTION_ABORT_CHECK_S, wait_until_settled
from pipeline.kafka.local import LocalKafka
from pipeline.kafka.produce import produce_by_topic, produce_records
from pipeline.kafka.topology import ORDERS_EVENTS, Naming, pipeline_topics
from pipeline.loading import LoadedPipeline, load_pipeline
from pipeline.settings import Settings
from pipeline.verify import VerifyReport, verify
from pipeline.workload import WorkloadRecord, generate

PIPELINE_BIN = Path(sys.executable).with_name("pipeline")


@dataclass(slots=True)
class ChaosLog:
    """What the chaos run did."""

    kills: list[str] = field(default_factory=list)
    restarts: int = 0
    broker_restarts: int = 0
    rebalances: int = 0
    graceful_exits: list[int] = field(default_factory=list)
    graceful_seconds: list[float] = field(default_factory=list)
    # Seconds the drain waited for transactions left open by killed processes to be
    # aborted by the broker (records written after them were invisible meanwhile).
    open_transactions_waited_s: float = 0.0


@dataclass(slots=True)
class ChaosResult:
    """The verifier's report plus what was done."""

    report: VerifyReport | FlowReport
    log: ChaosLog
    seconds: float

    guarantee: str = "at_least_once"

    def as_dict(self) -> dict[str, Any]:
        """JSON-ready view: the verify summary, then the actions."""
        return {
            **self.report.as_dict(),
            "guarantee": self.guarantee,
            "actions": asdict(self.log),
            "seconds": self.seconds,
        }

    @property
    def clean(self) -> bool:
        """Nothing lost, reordered or unknown; in exactly-once mode nothing duplicated.
        Not clean either when loss could not be checked (a stage of a user's pipeline
        without ``identify``): a run that cannot tell is not a run that passed."""
        report = self.report
        duplicates_allowed = self.guarantee != "exactly_once"
        if isinstance(report, FlowReport) and not report.loss_verified:
            return False
        return (
            report.lost == 0
            and report.out_of_order == 0
            and report.unknown == 0
            and (duplicates_allowed or report.duplicated == 0)
        )


class _Stages:
    """The stage processes, restarted when they die."""

    def __init__(
        self, env: dict[str, str], log_dir: Path | None, names: list[str], app_path: str | None
    ) -> None:
        self._env = env
        self._log_dir = log_dir
        self._started = 0
        self._names = names
        self._run = [str(PIPELINE_BIN), "run", *([app_path] if app_path else [])]
        self.processes: dict[str, list[subprocess.Popen[bytes]]] = {s: [] for s in names}

    def start(self, stage: str) -> subprocess.Popen[bytes]:
        self._started += 1
        output: Any = subprocess.DEVNULL
        if self._log_dir is not None:
            self._log_dir.mkdir(parents=True, exist_ok=True)
            output = (self._log_dir / f"{self._started:03d}-{stage}.log").open("wb")
        process = subprocess.Popen(
            [*self._run, stage],
            env=self._env,
            stdout=output,
            stderr=subprocess.STDOUT,
        )
        self.processes[stage].append(process)
        return process

    def revive(self, log: ChaosLog) -> None:
        """Start again every stage whose processes all died (a stage may exit 1 when the
        broker goes away under it; that is a restart, not a loss)."""
        for stage, processes in self.processes.items():
            alive = [p for p in processes if p.poll() is None]
            self.processes[stage] = alive
            if not alive:
                self.start(stage)
                log.restarts += 1

    def kill_random(self, rng: random.Random, log: ChaosLog) -> None:
        stage = rng.choice(self._names)
        alive = [p for p in self.processes[stage] if p.poll() is None]
        if alive:
            victim = rng.choice(alive)
            victim.send_signal(signal.SIGKILL)
            victim.wait()
            log.kills.append(stage)
        self.revive(log)

    def stop(self, process: subprocess.Popen[bytes], log: ChaosLog, grace_s: float) -> None:
        started = time.monotonic()
        process.send_signal(signal.SIGTERM)
        try:
            code = process.wait(timeout=grace_s)
        except subprocess.TimeoutExpired:
            process.kill()
            code = -9
        log.graceful_exits.append(code)
        log.graceful_seconds.append(round(time.monotonic() - started, 2))

    def stop_all(self, log: ChaosLog, grace_s: float) -> None:
        for processes in self.processes.values():
            for process in processes:
                if process.poll() is None:
                    self.stop(process, log, grace_s)


async def drain_reviving(
    stages: _Stages,
    run: Settings,
    naming: Naming,
    log: ChaosLog,
    deadline: float,
    sources: dict[str, str],
    topics: list[str],
) -> None:
    """Wait until every stage's group has committed everything and no transaction is
    open on ``topics``, starting again any stage whose processes all died meanwhile;
    :class:`TimeoutError` after ``deadline`` (``time.monotonic()``).

    A process killed mid-transaction hides what was written after it from every
    read_committed reader until the broker aborts it: the groups look drained, yet
    records behind it are still to come. So after a wait for that, drain again.
    """
    # An attempt outlasts the broker's abort of a killed process's transaction, so the
    # time waited for it is counted; between attempts, stages that died are revived.
    attempt_s = run.stage.transaction_timeout_ms / 1000 + TRANSACTION_ABORT_CHECK_S + 20
    while True:
        stages.revive(log)
        try:
            log.open_transactions_waited_s += await wait_until_settled(
                run.kafka,
                sources,
                topics,
                naming=naming,
                retry_levels=run.topics.retry_levels,
                timeout_s=attempt_s,
            )
            return
        except TimeoutError:
            if time.monotonic() > deadline:
                raise


def _env(settings: Settings, prefix: str) -> dict[str, str]:
    return {
        **os.environ,
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": settings.kafka.bootstrap_servers,
        "PIPELINE_TOPICS_PREFIX": prefix,
        "PIPELINE_HTTP_ENABLED": "false",
        "PIPELINE_STAGE_COMMIT_INTERVAL_MS": "200",
        "PIPELINE_STAGE_RETRY_DELAYS_S": json.dumps(settings.stage.retry_delays_s),
        "PIPELINE_TOPICS_RETRY_LEVELS": str(settings.topics.retry_levels),
        "PIPELINE_SERVICES_LATENCY_MS": str(settings.services.latency_ms),
        "PIPELINE_SERVICES_TRANSIENT_FAILURE_RATE": str(settings.services.transient_failure_rate),
        "PIPELINE_PROCESSING_GUARANTEE": settings.stage.processing_guarantee,
        "PIPELINE_STAGE_PROCESSING_GUARANTEES": json.dumps(settings.stage.processing_guarantees),
    }


async def _until_members(run: Settings, group: str, members: int, timeout_s: float) -> None:
    """Wait (polling the group coordinator) until the group has ``members`` members."""
    async with asyncio.timeout(timeout_s):
        while True:
            try:
                if await group_members(run.kafka, group) >= members:
                    return
            except KafkaError:
                pass  # the coordinator may be moving (a broker restart): ask again
            await asyncio.sleep(0.5)


async def run_chaos(
    settings: Settings,
    *,
    orders: int,
    kills: int,
    restart_broker: bool = True,
    scale_stage: str | None = None,
    seed: int | None = None,
    drain_timeout_s: float = 600.0,
    log_dir: Path | None = None,
    app_path: str | None = None,
    inputs: dict[str, list[WorkloadRecord]] | None = None,
) -> ChaosResult:
    """Run the chaos scenario in a fresh namespace and verify what came out.

    ``app_path`` (``MODULE:ATTR``) runs a user's pipeline on ``inputs`` (records by
    entry topic, see :mod:`pipeline.input_file`) instead of the checkout on ``orders``
    generated orders; ``scale_stage`` defaults to ``pay`` or the pipeline's middle stage.
    """
    rng = random.Random(seed)
    loaded = load_pipeline(app_path)
    names = list(loaded.stages)
    prefix = f"chaos{uuid.uuid4().hex[:8]}."
    run = settings.model_copy(
        update={"topics": settings.topics.model_copy(update={"prefix": prefix})}
    )
    naming = Naming.of(run.topics)
    topics = pipeline_topics(run.topics, loaded.flow, names)
    await apply_topics(run.kafka, topics)
    stages = _Stages(_env(run, prefix), log_dir, names, app_path)
    log = ChaosLog()
    grace_s = run.stage.shutdown_drain_timeout_s + 10
    scaled = scale_stage or ("pay" if app_path is None else names[len(names) // 2])
    started = time.monotonic()
    for stage in names:
        stages.start(stage)
    producing = asyncio.create_task(_produce(run, naming, app_path, orders, inputs))
    try:
        broker_restart_at = kills // 2 if restart_broker else -1
        for index in range(kills):
            await asyncio.sleep(rng.uniform(0.3, 1.5))
            stages.kill_random(rng, log)
            if index == broker_restart_at:
                await asyncio.to_thread(LocalKafka(run.local_kafka).restart)
                log.broker_restarts += 1
                stages.revive(log)
            if index == kills // 3:
                extra = [stages.start(scaled) for _ in range(2)]
                await _until_members(run, naming.group(scaled), 3, timeout_s=60)
                log.rebalances += 1
                await asyncio.sleep(rng.uniform(0.5, 1.5))
                for process in extra:
                    stages.stop(process, log, grace_s)
                log.rebalances += 1
        await producing
        await drain_reviving(
            stages,
            run,
            naming,
            log,
            started + drain_timeout_s,
            loaded.sources,
            [topic.name for topic in topics],
        )
    finally:
        if not producing.done():
            producing.cancel()
        stages.stop_all(log, grace_s)
    log.open_transactions_waited_s = round(log.open_transactions_waited_s, 1)
    report = await _verify(run, naming, loaded, app_path)
    seconds = round(time.monotonic() - started, 1)
    await delete_topics(run.kafka, [topic.name for topic in topics])
    return ChaosResult(
        report=report, log=log, seconds=seconds, guarantee=run.stage.processing_guarantee
    )


async def _produce(
    run: Settings,
    naming: Naming,
    app_path: str | None,
    orders: int,
    inputs: dict[str, list[WorkloadRecord]] | None,
) -> None:
    if app_path is None:
        await produce_records(run.kafka, naming.topic(ORDERS_EVENTS), generate(orders))
        return
    await produce_by_topic(run.kafka, naming, inputs or {})


async def _verify(
    run: Settings, naming: Naming, loaded: LoadedPipeline, app_path: str | None
) -> VerifyReport | FlowReport:
    if app_path is None:
        return await verify(run.kafka, naming)
    return await verify_pipeline(run, loaded.name, loaded.stages)
