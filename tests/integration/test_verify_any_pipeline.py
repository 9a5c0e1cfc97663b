"""The verifier derived from a pipeline's declaration (``pipeline verify MODULE:ATTR``),
run on the checkout flow — whose stages all identify their events — agrees with the
checkout's own verifier on a real run, undecodable records and dead letters included."""

from __future__ import annotations

from pipeline.accounting import verify_pipeline
from pipeline.kafka.lag import wait_until_drained
from pipeline.kafka.topology import Naming
from pipeline.loading import load_pipeline
from pipeline.settings import Settings
from pipeline.verify import verify
from tests.integration.helpers import produce_orders, running


async def test_the_derived_verifier_accounts_for_the_checkout_as_its_own_does(
    settings: Settings, topics: Naming
) -> None:
    checkout = load_pipeline("pipeline.stages:checkout")
    async with running(settings):
        produced = await produce_orders(settings, 300, invalid_every=100)
        await wait_until_drained(
            settings.kafka,
            checkout.sources,
            naming=topics,
            retry_levels=settings.topics.retry_levels,
            timeout_s=180,
        )
    own = await verify(settings.kafka, topics)
    derived = await verify_pipeline(settings, checkout.name, checkout.stages)

    assert own.clean, own.as_dict()
    assert derived.clean, derived.as_dict()
    assert derived.loss_verified
    assert derived.notes == []
    assert derived.events == own.events == produced
    assert derived.delivered == own.fulfilled
    assert derived.dead_lettered == own.dead_lettered > 0  # the undecodable ones among them
    assert derived.dropped == 0
    [validate] = [stage for stage in derived.stages if stage.stage == "validate"]
    assert validate.consumed == produced
    assert validate.passed + validate.dead_lettered == produced
