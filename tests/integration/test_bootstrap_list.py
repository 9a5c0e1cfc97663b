"""A bootstrap list, the way managed Kafka services hand it out, works for every client.

The list names a host where nothing listens before the real broker: a client that
received the list as one string (FastStream's broker wraps a ``str`` into a
one-element list) would try to reach ``'127.0.0.1:1,127.0.0.1'`` at the real port and
never bootstrap.
"""

from __future__ import annotations

import json
import subprocess

from pipeline.kafka.topology import Naming
from pipeline.settings import Settings
from tests.integration.helpers import (
    PIPELINE_BIN,
    drain_and_verify,
    produce_orders,
    running,
    stage_env,
)


def _with_list(settings: Settings) -> Settings:
    real = settings.kafka.bootstrap_hosts
    listed = ",".join(["127.0.0.1:1", *real, real[0].replace("127.0.0.1", "localhost")])
    return settings.model_copy(
        update={"kafka": settings.kafka.model_copy(update={"bootstrap_servers": listed})}
    )


async def test_stages_producer_and_verifier_bootstrap_from_a_three_host_list(
    settings: Settings, topics: Naming
) -> None:
    listed = _with_list(settings)
    assert len(listed.kafka.bootstrap_hosts) == 3
    async with running(listed):
        produced = await produce_orders(listed, 300)
        report = await drain_and_verify(listed)
    assert report.clean, report.as_dict()
    assert report.events == produced


def test_the_command_line_bootstraps_from_a_three_host_list(
    settings: Settings, topics: Naming
) -> None:
    listed = _with_list(settings)
    produced = subprocess.run(
        [str(PIPELINE_BIN), "produce", "--orders", "20"],
        env=stage_env(listed),
        capture_output=True,
        timeout=120,
        check=False,
    )
    assert produced.returncode == 0, produced.stdout + produced.stderr
    verified = subprocess.run(
        [str(PIPELINE_BIN), "verify", "--json"],
        env=stage_env(listed),
        capture_output=True,
        timeout=120,
        check=False,
    )
    report = json.loads(verified.stdout)
    assert report["events"] > 0, verified.stdout + verified.stderr
