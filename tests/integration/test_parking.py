"""Holding a key until an operator acts, on the real broker: a key's dead letter parks
its later events while other keys of its partition flow and the commit moves past them;
the hold survives kill -9; a replay after the fix releases the events in order."""

from __future__ import annotations

import asyncio
import json
import signal
import subprocess
from collections import defaultdict
from collections.abc import Awaitable, Callable
from pathlib import Path

import pytest
from aiokafka import AIOKafkaConsumer, AIOKafkaProducer
from aiokafka.partitioner import murmur2
from aiokafka.structs import TopicPartition

from pipeline.failures.dead_letters import (
    DeadLetterFilter,
    discard,
    held_keys,
    list_dead_letters,
    replay,
)
from pipeline.kafka.connection import client_options, stop_consumer
from pipeline.kafka.topology import Naming
from pipeline.settings import Guarantee, Settings
from pipeline.verify import read_topic
from tests.integration.helpers import PIPELINE_BIN, pipeline_command, stage_env, stop_stage_process

LEDGER = """
import os

from pydantic import BaseModel

from pipeline import FatalError, Pipeline


class Entry(BaseModel):
    account: str
    seq: int
    amount: int
    event_id: str


pipeline = Pipeline("ledger")


@pipeline.stage(
    source="entries", sink="posted", identify=lambda e: e.event_id, on_dead_letter="hold"
)
async def post(entry: Entry) -> Entry:
    if entry.amount < 0 and not os.path.exists(os.environ["LEDGER_FIXED"]):
        raise FatalError(f"negative amount {entry.amount} on {entry.account}")
    return entry
"""

HELD = "acct-held"


def partition_of(key: str, partitions: int) -> int:
    """The partition Kafka's default partitioner gives ``key``."""
    return (murmur2(key.encode()) & 0x7FFFFFFF) % partitions


def neighbours(partitions: int, count: int) -> list[str]:
    """Other keys in the held key's partition."""
    wanted = partition_of(HELD, partitions)
    found: list[str] = []
    n = 0
    while len(found) < count:
        key = f"acct-{n}"
        if key != HELD and partition_of(key, partitions) == wanted:
            found.append(key)
        n += 1
    return found


def entry(account: str, seq: int, amount: int = 10) -> dict[str, object]:
    return {"account": account, "seq": seq, "amount": amount, "event_id": f"{account}:{seq}"}


async def produce(settings: Settings, topic: str, entries: list[dict[str, object]]) -> None:
    producer = AIOKafkaProducer(**client_options(settings.kafka), enable_idempotence=True)
    await producer.start()
    try:
        for value in entries:
            await producer.send(
                topic, json.dumps(value).encode(), key=str(value["account"]).encode()
            )
        await producer.flush()
    finally:
        await producer.stop()


async def until(condition: Callable[[], Awaitable[bool]], timeout_s: float = 90) -> None:
    """Poll the broker until ``condition()`` holds: the state lives in Kafka."""
    async with asyncio.timeout(timeout_s):
        while not await condition():  # noqa: ASYNC110
            await asyncio.sleep(0.3)


async def committed(settings: Settings, group: str, tp: TopicPartition) -> int:
    consumer = AIOKafkaConsumer(**client_options(settings.kafka), group_id=group)
    await consumer.start()
    try:
        return (await consumer.committed(tp)) or 0
    finally:
        await stop_consumer(consumer)


async def end_offset(settings: Settings, tp: TopicPartition) -> int:
    consumer = AIOKafkaConsumer(**client_options(settings.kafka))
    await consumer.start()
    try:
        return (await consumer.end_offsets([tp]))[tp]
    finally:
        await stop_consumer(consumer)


def start(module_dir: Path, env: dict[str, str]) -> subprocess.Popen[bytes]:
    """``pipeline run ledger:pipeline --all``, logging to ``stage.log`` beside it."""
    with (module_dir / "stage.log").open("ab") as log:
        return subprocess.Popen(
            [str(PIPELINE_BIN), "run", "ledger:pipeline", "--all"],
            cwd=module_dir,
            env=env,
            stdout=log,
            stderr=subprocess.STDOUT,
        )


@pytest.mark.parametrize("guarantee", ["at_least_once", "exactly_once"])
async def test_a_held_key_parks_survives_a_kill_and_is_released_in_order(
    settings: Settings, tmp_path: Path, guarantee: Guarantee
) -> None:
    (tmp_path / "ledger.py").write_text(LEDGER)
    fixed = tmp_path / "fixed"
    env = {
        **stage_env(settings),
        "PYTHONPATH": "",
        "LEDGER_FIXED": str(fixed),
        "PIPELINE_PROCESSING_GUARANTEE": guarantee,
    }
    code, out = await pipeline_command(tmp_path, env, "topics", "apply", "ledger:pipeline")
    assert code == 0, out
    naming = Naming.of(settings.topics)
    entries, posted = naming.topic("entries"), naming.topic("posted")
    parked_topic, dead = naming.parked("post"), naming.dead_letter("post")
    others = neighbours(settings.topics.partitions, 3)
    tp = TopicPartition(entries, partition_of(HELD, settings.topics.partitions))

    async def count(topic: str) -> int:
        return len(await read_topic(settings.kafka, topic))

    process = start(tmp_path, env)
    try:
        # seq 0 of the held key fails for good; its seq 1..3 come after it, between the
        # neighbours' events in the same partition
        batch = [entry(HELD, 0, amount=-5)]
        for seq in range(1, 4):
            batch += [entry(other, seq) for other in others] + [entry(HELD, seq)]
        await produce(settings, entries, batch)
        neighbours_posted = 3 * len(others)
        await until(lambda: _at_least(count, posted, neighbours_posted))
        await until(lambda: _at_least(count, parked_topic, 3))
        assert await count(dead) == 1
        assert await count(posted) == neighbours_posted  # nothing of the held key
        # the partition's commit moved past the parked events
        group = naming.group("post")
        await until(lambda: _equal(committed(settings, group, tp), end_offset(settings, tp)))

        # kill -9 and a restart keep the hold: a fourth event is parked too
        process.send_signal(signal.SIGKILL)
        process.wait()
        process = start(tmp_path, env)
        await produce(settings, entries, [entry(HELD, 4)])
        await until(lambda: _at_least(count, parked_topic, 4))
        [held] = await held_keys(settings.kafka, naming, ["post"])
        assert (held.key, held.state, held.parked) == (HELD, "parked", 4)

        # the fix, then the replay: the dead letter and its four parked events, in order
        fixed.touch()
        letters = await list_dead_letters(
            settings.kafka, naming, DeadLetterFilter(stages=("post",))
        )
        assert [letter.hold for letter in letters] == [held.hold]
        assert await replay(settings.kafka, naming, letters) == letters
        await until(lambda: _at_least(count, posted, neighbours_posted + 5))
        await until(lambda: _no_holds(settings, naming))
    finally:
        stop_stage_process(process)
    assert process.returncode == 0

    sequences: dict[str, list[int]] = defaultdict(list)
    for record in await read_topic(settings.kafka, posted):
        value = json.loads(record.value)
        sequences[value["account"]].append(value["seq"])
    assert sequences[HELD] == [0, 1, 2, 3, 4]  # once each, in order
    assert all(sequences[other] == [1, 2, 3] for other in others)


async def _at_least(count: Callable[[str], Awaitable[int]], topic: str, wanted: int) -> bool:
    return await count(topic) >= wanted


async def _equal(first: Awaitable[int], second: Awaitable[int]) -> bool:
    return await first == await second


async def _no_holds(settings: Settings, naming: Naming) -> bool:
    return not await held_keys(settings.kafka, naming, ["post"])


async def test_discarding_the_dead_letter_releases_the_parked_events_without_it(
    settings: Settings, tmp_path: Path
) -> None:
    (tmp_path / "ledger.py").write_text(LEDGER)
    env = {**stage_env(settings), "PYTHONPATH": "", "LEDGER_FIXED": str(tmp_path / "never")}
    code, out = await pipeline_command(tmp_path, env, "topics", "apply", "ledger:pipeline")
    assert code == 0, out
    naming = Naming.of(settings.topics)
    entries, posted = naming.topic("entries"), naming.topic("posted")

    async def count(topic: str) -> int:
        return len(await read_topic(settings.kafka, topic))

    process = start(tmp_path, env)
    try:
        await produce(
            settings, entries, [entry(HELD, 0, amount=-5), entry(HELD, 1), entry(HELD, 2)]
        )
        await until(lambda: _at_least(count, naming.parked("post"), 2))
        letters = await list_dead_letters(
            settings.kafka, naming, DeadLetterFilter(stages=("post",))
        )
        assert await discard(settings.kafka, naming, letters) == letters
        await until(lambda: _at_least(count, posted, 2))
        await until(lambda: _no_holds(settings, naming))
        await produce(settings, entries, [entry(HELD, 3)])  # the key flows again
        await until(lambda: _at_least(count, posted, 3))
    finally:
        stop_stage_process(process)
    records = await read_topic(settings.kafka, posted)
    assert [json.loads(r.value)["seq"] for r in records] == [1, 2, 3]
    handled = await list_dead_letters(
        settings.kafka, naming, DeadLetterFilter(stages=("post",), include_handled=True)
    )
    assert [letter.action for letter in handled] == ["discarded"]
