"""The retry ladder on a real broker: transient faults heal, permanent ones are
dead-lettered with provenance, and a key on the ladder is never overtaken by its own
later events while other keys keep flowing."""

from __future__ import annotations

import random
from collections import defaultdict
from typing import Any

import orjson

from pipeline.failures import provenance
from pipeline.failures.ladder import RETRY_DUE_AT_MS, RETRY_LEVEL
from pipeline.kafka.admin import apply_topics
from pipeline.kafka.topology import ORDERS_RESERVED, Naming, pipeline_topics
from pipeline.settings import Settings
from pipeline.stages.services import (
    Reservation,
    Services,
    ServiceUnavailable,
    SimulatedPayment,
    simulated_services,
)
from pipeline.verify import read_topic
from pipeline.workload import WorkloadRecord, order_lifecycle
from schemas import LineItem
from tests.integration.helpers import drain_and_verify, produce, produce_orders, running


async def _with_ladder(settings: Settings, delays: list[float], attempts: int = 2) -> Settings:
    """Settings with this ladder, and its retry topics created."""
    stage = settings.stage.model_copy(
        update={"retry_delays_s": delays, "in_process_attempts": attempts}
    )
    topology = settings.topics.model_copy(update={"retry_levels": len(delays)})
    laddered = settings.model_copy(update={"stage": stage, "topics": topology})
    await apply_topics(laddered.kafka, pipeline_topics(laddered.topics))
    return laddered


class FlakyInventory:
    """Fails the first ``failures`` reservations of the chosen orders; others succeed."""

    def __init__(self, failing: dict[str, int]) -> None:
        self.failing = dict(failing)
        self.calls: dict[str, int] = defaultdict(int)

    async def reserve(self, order_id: str, items: tuple[LineItem, ...]) -> Reservation:
        self.calls[order_id] += 1
        if self.calls[order_id] <= self.failing.get(order_id, 0):
            raise ServiceUnavailable("inventory is busy")
        return Reservation(f"r-{order_id}")

    async def release(self, order_id: str) -> None:
        return None


def _records_for(order_id: str, seed: int = 3) -> list[WorkloadRecord]:
    events = order_lifecycle(order_id, random.Random(seed))
    while len(events) < 3:  # a placed order with amendments, so it has followers
        events = order_lifecycle(order_id, random.Random(seed := seed + 1))
    return [WorkloadRecord(order_id.encode(), e.__pydantic_serializer__.to_json(e)) for e in events]


async def test_transient_faults_in_both_services_heal_without_loss_or_reordering(
    settings: Settings, topics: Naming
) -> None:
    # 2 in-process attempts and 6 rungs: a record reaches the ladder with p = 0.04 and
    # the dead-letter topic with p = 0.2**8, so the ladder is used and never exhausted.
    settings = await _with_ladder(settings, [0.1, 0.1, 0.2, 0.2, 0.3, 0.3])
    faulty = settings.services.model_copy(update={"transient_failure_rate": 0.2, "seed": 11})
    services = simulated_services(faulty)
    async with running(settings, services=services):
        produced = await produce_orders(settings, 1_000)
        report = await drain_and_verify(settings)
    retried = 0
    for stage in ("reserve", "pay"):
        retried += len(await read_topic(settings.kafka, topics.retry(stage, 1)))
    assert report.clean, report.as_dict()
    assert report.fulfilled + report.dead_lettered == produced
    assert report.dead_lettered == 4  # only the invalid records of the workload
    assert retried > 0  # the faults really reached the ladder


async def test_retried_event_is_never_overtaken_by_same_key_and_other_keys_flow(
    settings: Settings, topics: Naming
) -> None:
    settings = await _with_ladder(settings, [1.5, 0.2, 0.2])
    stuck = "ord-stuck"
    # 2 in-process attempts and rung 1 fail; the retry from rung 2 succeeds.
    inventory = FlakyInventory({stuck: 3})
    services = Services(inventory=inventory, payment=SimulatedPayment(settings.services))
    async with running(settings, services=services):
        await produce(settings, _records_for(stuck))
        await produce_orders(settings, 300, invalid_every=0)
        report = await drain_and_verify(settings)
    assert report.clean, report.as_dict()
    reserved = await read_topic(settings.kafka, topics.topic(ORDERS_RESERVED))
    by_offset = sorted(reserved, key=lambda r: (r.partition, r.offset))
    stuck_records = [r for r in by_offset if r.key == stuck.encode()]
    sequences = [orjson.loads(r.value)["event"]["sequence"] for r in stuck_records]
    assert sequences == sorted(sequences)
    assert len(sequences) >= 3
    # Everything else went through while the stuck order sat on the ladder.
    first_stuck = min(r.timestamp for r in stuck_records)
    others = [r.timestamp for r in reserved if r.key != stuck.encode()]
    assert sum(t < first_stuck for t in others) >= 0.9 * len(others)
    assert inventory.calls[stuck] == 4 + len(sequences) - 1


class BrokenPayment(SimulatedPayment):
    """The payment gateway is down for one order, for good."""

    def __init__(self, settings: Any, broken: str) -> None:
        super().__init__(settings)
        self.broken = broken  # "*": every order

    async def charge(self, order_id: str, amount_cents: int, idempotency_key: str) -> Any:
        if self.broken in (order_id, "*"):
            raise ServiceUnavailable("payment gateway timeout")
        return await super().charge(order_id, amount_cents, idempotency_key)


async def test_a_permanent_failure_is_dead_lettered_with_every_provenance_header(
    settings: Settings, topics: Naming
) -> None:
    settings = await _with_ladder(settings, [0.1, 0.2, 0.3])
    broken = "ord-broken"
    services = Services(
        inventory=simulated_services(settings.services).inventory,
        payment=BrokenPayment(settings.services, broken),
    )
    records = _records_for(broken)
    async with running(settings, services=services):
        await produce(settings, records)
        report = await drain_and_verify(settings)
    assert report.clean, report.as_dict()
    dead_letters = await read_topic(settings.kafka, topics.dead_letter("pay"))
    charged = [r for r in records if b'"OrderCancelled"' not in r.value]
    dead_ids = [
        orjson.loads(r.value)["event"]["event_id"]
        for r in sorted(dead_letters, key=lambda r: r.offset)
    ]
    assert dead_ids == [orjson.loads(r.value)["event_id"] for r in charged]
    headers = dict(dead_letters[0].headers)
    for name in (
        provenance.STAGE,
        provenance.ATTEMPT,
        provenance.ORIGIN_TOPIC,
        provenance.ORIGIN_PARTITION,
        provenance.ORIGIN_OFFSET,
        provenance.ORIGIN_TIMESTAMP,
        provenance.ORIGIN_KEY,
        provenance.ERROR_TYPE,
        provenance.ERROR_MESSAGE,
        provenance.ERROR_STACK,
        provenance.FIRST_FAILURE_AT,
        provenance.LAST_FAILURE_AT,
    ):
        assert headers.get(name), name
    assert headers[provenance.STAGE] == b"pay"
    assert headers[provenance.ORIGIN_TOPIC] == topics.topic(ORDERS_RESERVED).encode()
    assert int(headers[provenance.ATTEMPT]) == 2 + 3  # in-process, then three rungs
    assert headers[provenance.ERROR_TYPE].endswith(b"ServiceUnavailable")
    assert headers[provenance.FIRST_FAILURE_AT] < headers[provenance.LAST_FAILURE_AT]
    assert RETRY_DUE_AT_MS not in headers
    assert RETRY_LEVEL not in headers
    # policy "release": the order's later events went on after each dead letter
    assert report.fulfilled == len(records) - len(charged)


async def test_a_held_key_stays_held_across_a_restart(settings: Settings, topics: Naming) -> None:
    settings = await _with_ladder(settings, [3.0, 0.2, 0.2])
    key = "ord-restart"
    inventory = FlakyInventory({key: 2})  # both in-process attempts fail: rung 1, 3 s
    services = Services(inventory=inventory, payment=SimulatedPayment(settings.services))
    records = _records_for(key)
    async with running(settings, ["validate", "reserve"], services=services):
        await produce(settings, records)
        # stop while the head waits on rung 1 and its followers wait behind it
        while not await read_topic(settings.kafka, topics.retry("reserve", 1)):
            pass
    async with running(settings, services=services):  # a new process: holds from Kafka
        report = await drain_and_verify(settings)
    assert report.clean, report.as_dict()
    reserved = await read_topic(settings.kafka, topics.topic(ORDERS_RESERVED))
    sequences = [
        orjson.loads(r.value)["event"]["sequence"]
        for r in sorted(reserved, key=lambda r: r.offset)
        if r.key == key.encode()
    ]
    assert sequences == list(range(1, len(records) + 1))
