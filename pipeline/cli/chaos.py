"""``pipeline chaos``: stages killed, the broker restarted, rebalances — on one local
broker, a local three-node cluster (``--brokers 3``) or while a stage's replicas roll
(``--rolling-restart``); then the verifier."""

from __future__ import annotations

import json
import logging
import time
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console

from pipeline import loop
from pipeline.cli.inputs import InputFile, PipelinePath, pipeline_inputs
from pipeline.cli.logs import configure_logging
from pipeline.cli.verify import print_flow_report, print_report
from pipeline.kafka.topology import STAGE_NAMES
from pipeline.settings import Guarantee, load_settings
from pipeline.verify import VerifyReport

console = Console()
err_console = Console(stderr=True)


def chaos(
    app_path: PipelinePath = None,
    input_file: InputFile = None,
    orders: Annotated[int, typer.Option(help="Orders to produce during the run.")] = 20_000,
    kills: Annotated[int, typer.Option(help="Stage processes to kill -9.")] = 20,
    restart_broker: Annotated[bool, typer.Option(help="Restart the local broker once.")] = True,
    fail_rate: Annotated[float, typer.Option(help="Transient service failures.")] = 0.05,
    json_output: Annotated[bool, typer.Option("--json")] = False,
    seed: int | None = None,
    guarantee: Annotated[
        Guarantee | None,
        typer.Option(help="Processing guarantee of every stage (default: from settings)."),
    ] = None,
    brokers: Annotated[
        int,
        typer.Option(
            help="1: kill stages on the local broker. 3: kill brokers of a local "
            "three-node cluster instead (the failover cases), each case in turn."
        ),
    ] = 1,
    case: Annotated[
        list[str] | None,
        typer.Option(help="With --brokers 3: leader, controller, bounce (default: all)."),
    ] = None,
    rolling_restart: Annotated[
        str | None,
        typer.Option(
            metavar="STAGE",
            help="Instead: roll STAGE's three replicas, without and with static "
            "membership, and report how long its output stood still.",
        ),
    ] = None,
) -> None:
    """Kill stages, restart the broker, rebalance, SIGTERM; then verify. Exit 0 only
    when nothing was lost or reordered (and, exactly-once, nothing duplicated).

    Your pipeline (``MODULE:ATTR --input FILE``) runs the same way on the file's
    records, checked by the verifier derived from its stages.

    With ``--brokers 3``: a local three-node cluster loses a broker while the pipeline
    runs (the partition leader, the active controller, or one that comes back); each
    case reports its longest pause in output."""
    from pipeline.broker import ensure_broker
    from pipeline.chaos import run_chaos

    if app_path is not None and (brokers > 1 or rolling_restart is not None):
        raise typer.BadParameter("--brokers 3 and --rolling-restart run the checkout flow only")
    inputs = pipeline_inputs(app_path, input_file)
    if brokers > 1:
        _failover_cases(brokers, case, orders, guarantee, json_output)
        return
    if rolling_restart is not None:
        _rolling_restarts(rolling_restart, json_output)
        return

    configure_logging(False)
    for noisy in ("faststream", "faststream.access.kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    settings = load_settings()
    services = settings.services.model_copy(
        update={"transient_failure_rate": fail_rate, "latency_ms": 1.0}
    )
    stage = settings.stage.model_copy(update={"retry_delays_s": [0.5, 1.0, 2.0]})
    if guarantee is not None:
        stage = stage.model_copy(
            update={"processing_guarantee": guarantee, "processing_guarantees": {}}
        )
    settings = settings.model_copy(update={"services": services, "stage": stage})

    async def run() -> Any:
        await ensure_broker(settings)
        return await run_chaos(
            settings,
            orders=orders,
            kills=kills,
            restart_broker=restart_broker,
            seed=seed,
            app_path=app_path,
            inputs=inputs,
        )

    result = loop.run(run())
    if json_output:
        typer.echo(json.dumps(result.as_dict()))
    else:
        if isinstance(result.report, VerifyReport):
            print_report(result.report)
        else:
            print_flow_report(result.report)
        console.print(result.as_dict()["actions"])
    raise typer.Exit(0 if result.clean else 1)


def _rolling_restarts(stage: str, json_output: bool) -> None:
    from pipeline.broker import ensure_broker
    from pipeline.rolling import run_rolling_restart

    if stage not in STAGE_NAMES:
        raise typer.BadParameter(f"unknown stage {stage}; known: {list(STAGE_NAMES)}")
    configure_logging(False)
    for noisy in ("faststream", "faststream.access.kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    settings = load_settings()
    loop.run(ensure_broker(settings))
    clean = True
    for static in (False, True):
        result = loop.run(run_rolling_restart(settings, stage=stage, static=static))
        clean = clean and result.clean
        if json_output:
            typer.echo(json.dumps(result.as_dict()))
        else:
            console.print(result.as_dict())
    raise typer.Exit(0 if clean else 1)


def _failover_cases(
    brokers: int,
    cases: list[str] | None,
    orders: int,
    guarantee: Guarantee | None,
    json_output: bool,
) -> None:
    from pipeline.failover import CASES, run_failover
    from pipeline.kafka.local_cluster import LocalCluster

    unknown = [c for c in cases or () if c not in CASES]
    if unknown:
        raise typer.BadParameter(f"unknown case(s) {unknown}; known: {list(CASES)}")
    configure_logging(False)
    for noisy in ("faststream", "faststream.access.kafka", "aiokafka"):
        logging.getLogger(noisy).setLevel(logging.CRITICAL)
    settings = load_settings()
    cluster = LocalCluster(settings.local_kafka, brokers)
    cluster.up()
    clean = True
    logs = Path(".cache") / "chaos-logs" / time.strftime("%Y%m%d-%H%M%S")
    for name in cases or CASES:
        result = loop.run(
            run_failover(
                settings,
                cluster,
                name,  # type: ignore[arg-type]
                orders=orders,
                guarantee=guarantee or settings.stage.processing_guarantee,
                log_dir=logs / name,
            )
        )
        clean = clean and result.clean
        if json_output:
            typer.echo(json.dumps(result.as_dict()))
        else:
            print_report(result.report)
            console.print({k: v for k, v in result.as_dict().items() if k != "report"})
    err_console.print(f"stage logs: {logs}")
    raise typer.Exit(0 if clean else 1)
