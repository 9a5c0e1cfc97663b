"""The order API's token checks, access rules and rate limit, without a broker."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import time
from typing import Any

import pytest
from fastapi import HTTPException

from pipeline.errors import ConfigurationError
from pipeline.ingress.access import check_may_read, check_may_submit
from pipeline.ingress.auth import Principal, TokenRejected, TokenVerifier, verifier_from
from pipeline.ingress.keys import StaticKeys
from pipeline.ingress.limits import RateLimiter
from pipeline.ingress.local_issuer import LocalIssuer
from pipeline.ingress.owners import InMemoryOrderOwners
from pipeline.settings import IngressSettings
from schemas import OrderCancelled, OrderPlaced

pytestmark = pytest.mark.unit

ISSUER = LocalIssuer.generate("https://issuer.test/", "order-api")


def _api(**changes: Any) -> IngressSettings:
    return IngressSettings(
        **{"auth_issuer": ISSUER.issuer, "auth_jwks": ISSUER.jwks_json(), **changes}
    )


def _verifier(**changes: Any) -> TokenVerifier:
    verifier = verifier_from(_api(**changes))
    assert verifier is not None
    return verifier


async def test_an_accepted_token_names_its_customer_and_scopes() -> None:
    customer = await _verifier().principal(ISSUER.token("cus-1"))
    operator = await _verifier().principal(ISSUER.token("ops", scopes=["orders:read-all"]))
    assert (customer.subject, customer.customer_id, customer.reads_all) == ("cus-1", "cus-1", False)
    assert operator.reads_all


async def test_the_customer_claim_is_configurable() -> None:
    verifier = _verifier(auth_customer_claim="customer_id")
    principal = await verifier.principal(ISSUER.token("user-9", customer_id="cus-9"))
    assert principal.customer_id == "cus-9"
    with pytest.raises(TokenRejected, match="names no customer"):
        await verifier.principal(ISSUER.token("user-9"))


@pytest.mark.parametrize(
    ("token", "reason"),
    [
        (ISSUER.token("cus-1", now=time.time() - 7200), "expired"),
        (ISSUER.token("cus-1", aud="billing"), "another audience"),
        (ISSUER.token("cus-1", iss="https://evil.test/"), "another issuer"),
        (LocalIssuer.generate(ISSUER.issuer, "order-api").token("cus-1"), "unknown key"),
        ("a.b.c", "invalid"),
    ],
)
async def test_a_token_failing_a_check_is_rejected_with_that_check_only(
    token: str, reason: str
) -> None:
    with pytest.raises(TokenRejected, match=reason) as refused:
        await _verifier().principal(token)
    assert token not in str(refused.value)


async def test_a_token_without_expiry_is_rejected() -> None:
    with pytest.raises(TokenRejected):
        await _verifier().principal(ISSUER.token("cus-1", exp=None))


async def test_a_symmetric_token_signed_with_the_public_key_is_rejected() -> None:
    # The classic algorithm confusion: HS256 keyed with the public key everyone can read.
    def part(value: dict[str, Any]) -> bytes:
        return base64.urlsafe_b64encode(json.dumps(value).encode()).rstrip(b"=")

    header = part({"alg": "HS256", "typ": "JWT", "kid": ISSUER.key_id})
    claims = {"iss": ISSUER.issuer, "aud": "order-api", "sub": "cus-1", "exp": time.time() + 60}
    signed = header + b"." + part(claims)
    mac = hmac.new(ISSUER.jwks_json().encode(), signed, hashlib.sha256).digest()
    forged = (signed + b"." + base64.urlsafe_b64encode(mac).rstrip(b"=")).decode()
    with pytest.raises(TokenRejected):
        await _verifier().principal(forged)


def test_bad_auth_settings_fail_when_the_app_is_built() -> None:
    with pytest.raises(ConfigurationError, match="ISSUER"):
        TokenVerifier(StaticKeys(ISSUER.jwks_json()), IngressSettings())
    with pytest.raises(ConfigurationError, match="exactly one"):
        verifier_from(IngressSettings(auth_issuer="https://issuer.test/"))
    with pytest.raises(ConfigurationError, match="asymmetric"):
        verifier_from(_api(auth_algorithms=["HS256"]))
    with pytest.raises(ConfigurationError, match="JWKS"):
        verifier_from(_api(auth_jwks="{}"))


def test_disabled_authentication_is_announced(caplog: pytest.LogCaptureFixture) -> None:
    assert verifier_from(IngressSettings(auth_disabled=True)) is None
    assert "DISABLED" in caplog.text


def test_a_principal_prints_no_claims() -> None:
    principal = Principal(subject="cus-secret", customer_id="cus-secret", reads_all=False)
    assert "cus-secret" not in repr(principal) + str(principal)


def _placed(order_id: str, customer_id: str) -> OrderPlaced:
    return OrderPlaced.model_validate(
        {
            "event_id": f"{order_id}-1",
            "order_id": order_id,
            "sequence": 1,
            "occurred_at": "2025-01-31T12:00:00Z",
            "customer_id": customer_id,
            "currency": "EUR",
            "items": [{"sku": "a", "quantity": 1, "unit_price_cents": 1}],
        }
    )


async def test_customers_act_on_and_read_their_own_orders_only() -> None:
    owners = InMemoryOrderOwners()
    await owners.claim("ord-a", "cus-a")
    alice = Principal("cus-a", "cus-a", reads_all=False)
    bob = Principal("cus-b", "cus-b", reads_all=False)
    operator = Principal("ops", "ops", reads_all=True)
    cancel = OrderCancelled(
        event_id="ord-a-2", order_id="ord-a", sequence=2, occurred_at="2025-01-31T12:00:00Z"
    )
    await check_may_submit(alice, cancel, owners)
    await check_may_read(alice, "ord-a", owners)
    await check_may_read(operator, "ord-a", owners)
    await check_may_read(operator, "ord-unknown", owners)
    refusals = [
        (check_may_submit(bob, _placed("ord-new", "cus-a"), owners), 403),
        (check_may_submit(bob, _placed("ord-a", "cus-b"), owners), 403),
        (check_may_submit(bob, cancel, owners), 404),
        (check_may_submit(operator, cancel, owners), 404),
        (check_may_read(bob, "ord-a", owners), 404),
        (check_may_read(bob, "ord-unknown", owners), 404),
    ]
    for refusal, code in refusals:
        with pytest.raises(HTTPException) as refused:
            await refusal
        assert refused.value.status_code == code


def test_the_rate_limiter_allows_a_burst_then_refills_at_its_rate() -> None:
    now = [0.0]
    limiter = RateLimiter(per_s=2, burst=3, clock=lambda: now[0])
    assert [limiter.retry_after("a") for _ in range(3)] == [None] * 3
    assert limiter.retry_after("a") == pytest.approx(0.5)
    assert limiter.retry_after("b") is None  # every caller has its own bucket
    now[0] = 0.5
    assert limiter.retry_after("a") is None
    assert limiter.retry_after("a") == pytest.approx(0.5)
    with pytest.raises(HTTPException) as refused:
        limiter.admit("a")
    assert refused.value.status_code == 429
    assert refused.value.headers == {"Retry-After": "1"}


def test_the_rate_limiter_forgets_the_least_recent_callers_beyond_its_bound() -> None:
    limiter = RateLimiter(per_s=1, burst=1, max_callers=2, clock=lambda: 0.0)
    for caller in ("a", "b", "c"):
        assert limiter.retry_after(caller) is None
    assert limiter.retry_after("a") is None  # forgotten: a full bucket again
    assert limiter.retry_after("c") is not None
