"""The pipeline against a broker that demands SCRAM-SHA-512 on a SASL_PLAINTEXT listener.

A second local broker, with its own home, ports and SCRAM user, runs for this module's
session only (another ~400 MB JVM, so it is stopped at the end). The configuration comes
from ``PIPELINE_KAFKA_*`` variables, as in a deployment: the stages authenticate and the
flow stays clean, a wrong password fails at once with one error, and the password shows up
in no log line, metric, dead letter or settings repr.
"""

from __future__ import annotations

import logging
import os
import socket
import subprocess
import time
import uuid
from collections.abc import Iterator
from contextlib import ExitStack, contextmanager

import prometheus_client
import pytest

from pipeline.kafka.admin import apply_topics
from pipeline.kafka.local import LocalKafka, LocalKafkaError
from pipeline.kafka.topology import Naming, pipeline_topics
from pipeline.settings import LocalKafkaSettings, Settings
from pipeline.verify import read_topic
from tests.integration.helpers import PIPELINE_BIN, drain_and_verify, produce_orders, running

USER = "pipeline"
# Distinctive, so that a leak cannot hide among ordinary words such as "secret".
PASSWORD = f"scram-{uuid.uuid4().hex}"
WRONG_PASSWORD = f"wrong-{uuid.uuid4().hex}"


def _free_ports(count: int) -> list[int]:
    """Ports nothing listens on now (held open together, so they are distinct)."""
    with ExitStack() as stack:
        sockets = [stack.enter_context(socket.socket()) for _ in range(count)]
        for sock in sockets:
            sock.bind(("127.0.0.1", 0))
        return [sock.getsockname()[1] for sock in sockets]


@pytest.fixture(scope="session")
def scram_kafka(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LocalKafka]:
    """A second local broker whose SASL_PLAINTEXT listener knows one SCRAM-SHA-512 user."""
    shared = LocalKafkaSettings()
    try:
        jars = LocalKafka(shared).ensure_jars()  # the project's cache; fetched once if missing
    except LocalKafkaError as exc:
        pytest.fail(f"no jars for the SCRAM broker: {exc}", pytrace=False)
    home = tmp_path_factory.mktemp("scram-kafka")
    (home / jars.name).symlink_to(jars)
    port, controller_port, sasl_port = _free_ports(3)
    local = LocalKafka(
        LocalKafkaSettings(
            home=home, version=shared.version, port=port, controller_port=controller_port
        ),
        sasl_port=sasl_port,
    )
    try:
        local.up(scram_users={USER: PASSWORD})
    except LocalKafkaError as exc:
        pytest.fail(f"the SCRAM broker did not start: {exc}", pytrace=False)
    try:
        yield local
    finally:
        local.down()


@contextmanager
def capturing_every_logger(handler: logging.Handler) -> Iterator[None]:
    """Also send the records of loggers that do not propagate to the root (FastStream's
    access logger) to ``handler``, at DEBUG."""
    names = {"faststream", "faststream.access.kafka"}
    names |= {
        name
        for name, logger in logging.Logger.manager.loggerDict.items()
        if isinstance(logger, logging.Logger) and not logger.propagate
    }
    loggers = [logging.getLogger(name) for name in sorted(names)]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    try:
        yield
    finally:
        for logger, level in zip(loggers, levels, strict=True):
            logger.removeHandler(handler)
            logger.setLevel(level)


def scram_env(local: LocalKafka, password: str, prefix: str) -> dict[str, str]:
    """The ``PIPELINE_*`` variables a deployment would set for this broker."""
    return {
        "PIPELINE_KAFKA_BOOTSTRAP_SERVERS": local.sasl_bootstrap,
        "PIPELINE_KAFKA_SECURITY_PROTOCOL": "SASL_PLAINTEXT",
        "PIPELINE_KAFKA_SASL_MECHANISM": "SCRAM-SHA-512",
        "PIPELINE_KAFKA_SASL_USERNAME": USER,
        "PIPELINE_KAFKA_SASL_PASSWORD": password,
        "PIPELINE_TOPICS_PREFIX": prefix,
        "PIPELINE_HTTP_ENABLED": "false",
        "PIPELINE_STAGE_COMMIT_INTERVAL_MS": "200",
    }


@pytest.fixture
def prefix() -> str:
    """A topic namespace of this test only."""
    return f"s{uuid.uuid4().hex[:10]}."


@pytest.fixture
def scram_settings(
    scram_kafka: LocalKafka, prefix: str, monkeypatch: pytest.MonkeyPatch
) -> Settings:
    """Settings read from the environment, pointing at the SCRAM listener."""
    for name, value in scram_env(scram_kafka, PASSWORD, prefix).items():
        monkeypatch.setenv(name, value)
    return Settings()


async def test_stages_authenticate_with_scram_and_the_flow_stays_clean(
    scram_settings: Settings,
) -> None:
    assert scram_settings.kafka.security_protocol == "SASL_PLAINTEXT"
    topics = await apply_topics(scram_settings.kafka, pipeline_topics(scram_settings.topics))
    assert topics.clean, topics.drift

    async with running(scram_settings):
        produced = await produce_orders(scram_settings, 300)
        report = await drain_and_verify(scram_settings, timeout_s=120)

    assert produced > 300
    assert report.clean, report.as_dict()
    assert report.fulfilled > 0


def test_a_wrong_password_fails_at_once_with_one_authentication_error(
    scram_kafka: LocalKafka, prefix: str
) -> None:
    env = {**os.environ, **scram_env(scram_kafka, WRONG_PASSWORD, prefix)}

    started = time.monotonic()
    result = subprocess.run(
        [str(PIPELINE_BIN), "topics", "apply"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )
    elapsed = time.monotonic() - started

    output = result.stdout + result.stderr
    assert result.returncode == 2, output
    assert elapsed < 10, f"took {elapsed:.1f} s:\n{output}"
    assert "Traceback" not in output, output
    # One connection attempt, refused once and named for what it is: no reconnect storm.
    assert output.count("Unable connect to") == 1, output
    assert "SaslAuthenticationFailed" in output, output
    assert "authentication failed" in output.lower(), output
    assert WRONG_PASSWORD not in output


def test_a_wrong_password_is_not_reported_as_a_missing_broker(
    scram_kafka: LocalKafka, prefix: str
) -> None:
    env = {**os.environ, **scram_env(scram_kafka, WRONG_PASSWORD, prefix)}

    result = subprocess.run(
        [str(PIPELINE_BIN), "topics", "apply"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
        check=False,
    )

    # The CLI's own one-line error (wrapped by the console), not aiokafka's log line.
    _, _, error = result.stderr.partition("topics not applied:")
    error = " ".join(error.split()).lower()
    assert error, result.stderr
    assert "no kafka broker answers" not in error, error
    assert "authentication" in error or "credentials" in error, error


async def test_the_password_leaks_into_no_log_metric_dead_letter_or_repr(
    scram_settings: Settings,
    caplog: pytest.LogCaptureFixture,
    capfd: pytest.CaptureFixture[str],
) -> None:
    caplog.set_level(logging.DEBUG)
    for name in ("aiokafka", "pipeline"):
        caplog.set_level(logging.DEBUG, logger=name)
    naming = Naming.of(scram_settings.topics)

    with capturing_every_logger(caplog.handler):
        await apply_topics(scram_settings.kafka, pipeline_topics(scram_settings.topics))
        async with running(scram_settings) as pipeline:
            # Invalid records every 25 orders, so that there are dead letters to read.
            await produce_orders(scram_settings, 200, invalid_every=25)
            report = await drain_and_verify(scram_settings, timeout_s=120)
            metrics = prometheus_client.generate_latest(pipeline.registry).decode()
    dead_letters = await read_topic(scram_settings.kafka, naming.dead_letter("validate"))

    assert report.clean, report.as_dict()
    assert dead_letters, "the workload should have produced dead letters"
    logged_by = {record.name for record in caplog.records}
    # FastStream's own lines go through the "pipeline.faststream" logger.
    assert any(name.startswith("aiokafka") for name in logged_by), logged_by
    assert "pipeline.faststream" in logged_by, f"only {logged_by} logged: check nothing"
    assert "pipeline_events_processed" in metrics
    places = {
        "log records": caplog.text,
        "stdout/stderr": "".join(capfd.readouterr()),
        "metrics": metrics,
        "dead letters": "\n".join(
            f"{record.key!r} {record.value!r} {record.headers!r}" for record in dead_letters
        ),
        "settings repr": repr(scram_settings) + str(scram_settings) + repr(Settings()),
        "settings json": Settings().model_dump_json(),
    }
    leaks = [place for place, text in places.items() if PASSWORD in text]
    assert not leaks, f"the SASL password appears in: {leaks}"


def test_the_demo_cli_prints_no_password(scram_kafka: LocalKafka, prefix: str) -> None:
    env = {**os.environ, **scram_env(scram_kafka, PASSWORD, prefix)}

    result = subprocess.run(
        [str(PIPELINE_BIN), "demo", "--orders", "200"],
        env=env,
        capture_output=True,
        text=True,
        timeout=300,
        check=False,
    )

    output = result.stdout + result.stderr
    assert result.returncode == 0, output
    assert PASSWORD not in output
