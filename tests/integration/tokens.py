"""Bearer tokens for the order API in tests: one signing key per session, and the API
settings that trust it."""

from __future__ import annotations

from typing import Any

from pipeline.ingress.local_issuer import LocalIssuer
from pipeline.settings import IngressSettings

ISSUER = "https://issuer.test/"
AUDIENCE = "order-api"
OPERATOR_SCOPE = "orders:read-all"

TEST_ISSUER = LocalIssuer.generate(ISSUER, AUDIENCE)
"""Signs every test token; the API settings below trust its public key."""


def trusting(
    api: IngressSettings, issuer: LocalIssuer = TEST_ISSUER, **changes: Any
) -> IngressSettings:
    """``api`` with authentication on, checking tokens against ``issuer``'s key."""
    return api.model_copy(
        update={
            "auth_disabled": False,
            "auth_issuer": issuer.issuer,
            "auth_audience": issuer.audience,
            "auth_jwks": issuer.jwks_json(),
            "auth_jwks_url": None,
            "auth_jwks_file": None,
            **changes,
        }
    )


def bearer(token: str) -> dict[str, str]:
    """The Authorization header carrying ``token``."""
    return {"Authorization": f"Bearer {token}"}


def customer(customer_id: str, issuer: LocalIssuer = TEST_ISSUER, **claims: Any) -> dict[str, str]:
    """The header of a customer's token: it may place and read its own orders."""
    return bearer(issuer.token(customer_id, **claims))


def operator(issuer: LocalIssuer = TEST_ISSUER) -> dict[str, str]:
    """The header of an operator's token: it reads every order."""
    return bearer(issuer.token("support-desk", scopes=[OPERATOR_SCOPE]))
