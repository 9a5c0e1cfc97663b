"""Who is calling the order API: an OAuth2/OIDC bearer token in, a :class:`Principal` out.

A token is accepted when its signature verifies against a key of the configured source
(:mod:`pipeline.ingress.keys`) with an allowed asymmetric algorithm, and its ``iss``,
``aud`` and ``exp`` (within ``auth_leeway_s``) are the expected ones. The customer is
the ``auth_customer_claim`` claim (``sub`` by default); a token whose ``scope`` holds
``auth_operator_scope`` (``orders:read-all``) may read every order.

A request without a token, or with one that is not accepted, gets 401 with a
``WWW-Authenticate: Bearer`` challenge (RFC 6750) before the route runs, so nothing is
published. Neither the token nor its claims are ever logged or echoed: a refusal names
only which check failed.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass
from typing import Annotated, Any

import jwt
from fastapi import HTTPException, Request, Security, status
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from pipeline.errors import ConfigurationError
from pipeline.ingress.keys import (
    IssuerKeys,
    KeysUnavailable,
    SigningKeys,
    StaticKeys,
    UnknownKey,
)
from pipeline.ingress.limits import RateLimiter
from pipeline.settings import IngressSettings

log = logging.getLogger(__name__)

REALM = "orders"
ASYMMETRIC = {"RS256", "RS384", "RS512", "PS256", "PS384", "PS512", "ES256", "ES384", "ES512"}
ASYMMETRIC |= {"ES256K", "EdDSA"}

BEARER = HTTPBearer(
    auto_error=False,  # the 401 is ours: with the RFC 6750 challenge and error code
    bearerFormat="JWT",
    scheme_name="bearer",
    description="An access token of the configured OIDC issuer, for audience "
    "PIPELINE_API_AUTH_AUDIENCE. The customer id is its `sub` claim (configurable); "
    "scope `orders:read-all` reads every order.",
)


@dataclass(frozen=True, slots=True)
class Principal:
    """The caller a request was authenticated as."""

    subject: str | None
    """The token's ``sub``; ``None`` when authentication is disabled."""
    customer_id: str | None
    """The customer the caller acts for; ``None`` when authentication is disabled."""
    reads_all: bool
    """Whether the caller may read every order (the operator scope)."""

    def __repr__(self) -> str:
        # Claims stay out of logs and tracebacks, whatever prints a principal.
        return "Principal(<redacted>)"

    def may_act_for(self, customer_id: str) -> bool:
        """Whether the caller may place or change orders of ``customer_id``."""
        return self.customer_id is None or self.customer_id == customer_id

    def may_read(self, owner: str | None) -> bool:
        """Whether the caller may read an order placed by ``owner`` (``None``: unknown)."""
        return self.reads_all or (owner is not None and self.customer_id == owner)


UNAUTHENTICATED = Principal(subject=None, customer_id=None, reads_all=True)
"""Every caller when authentication is disabled (local development only)."""


class TokenRejected(Exception):
    """The token is not accepted; the message says which check failed, nothing more."""


class TokenVerifier:
    """Checks bearer tokens against the configured keys, issuer and audience."""

    def __init__(self, keys: SigningKeys, api: IngressSettings) -> None:
        if not api.auth_issuer:
            raise ConfigurationError(
                "PIPELINE_API_AUTH_ISSUER is required unless PIPELINE_API_AUTH_DISABLED=true"
            )
        self._keys = keys
        self._issuer = api.auth_issuer
        self._audience = api.auth_audience
        self._algorithms = list(api.auth_algorithms)
        self._leeway_s = api.auth_leeway_s
        self._customer_claim = api.auth_customer_claim
        self._operator_scope = api.auth_operator_scope

    async def principal(self, token: str) -> Principal:
        """The principal ``token`` stands for; :class:`TokenRejected` when it is not
        accepted, :class:`KeysUnavailable` when the keys cannot be fetched now."""
        try:
            header = jwt.get_unverified_header(token)
            key = await self._keys.key_for(header.get("kid"))
            claims: dict[str, Any] = jwt.decode(
                token,
                key.key,
                algorithms=self._algorithms,
                audience=self._audience,
                issuer=self._issuer,
                leeway=self._leeway_s,
                options={"require": ["exp", "iss", "aud", "sub"]},
            )
        except jwt.ExpiredSignatureError as exc:
            raise TokenRejected("the token has expired") from exc
        except jwt.InvalidAudienceError as exc:
            raise TokenRejected("the token is for another audience") from exc
        except jwt.InvalidIssuerError as exc:
            raise TokenRejected("the token is from another issuer") from exc
        except UnknownKey as exc:
            raise TokenRejected("the token is signed with an unknown key") from exc
        except jwt.PyJWTError as exc:
            raise TokenRejected("the token is invalid") from exc
        customer = claims.get(self._customer_claim)
        if not isinstance(customer, str) or not customer:
            raise TokenRejected("the token names no customer")
        return Principal(
            subject=str(claims["sub"]),
            customer_id=customer,
            reads_all=self._operator_scope in _scopes(claims),
        )


def verifier_from(api: IngressSettings) -> TokenVerifier | None:
    """The token verifier ``api`` configures; ``None`` (with a warning) when
    authentication is disabled. Bad settings fail here, when the app is built."""
    if api.auth_disabled:
        log.warning(
            "authentication of the order API is DISABLED (PIPELINE_API_AUTH_DISABLED=true): "
            "anyone who reaches it may place and read every order; local development only"
        )
        return None
    weak = set(api.auth_algorithms) - ASYMMETRIC
    if weak or not api.auth_algorithms:
        raise ConfigurationError(
            f"PIPELINE_API_AUTH_ALGORITHMS: only asymmetric algorithms, not {sorted(weak)}"
        )
    sources = [api.auth_jwks_url, api.auth_jwks, api.auth_jwks_file]
    if sum(source is not None for source in sources) != 1:
        raise ConfigurationError(
            "set exactly one of PIPELINE_API_AUTH_JWKS_URL, PIPELINE_API_AUTH_JWKS and "
            "PIPELINE_API_AUTH_JWKS_FILE (or PIPELINE_API_AUTH_DISABLED=true for local "
            "development)"
        )
    keys: SigningKeys
    if api.auth_jwks_url is not None:
        keys = IssuerKeys(
            api.auth_jwks_url,
            cache_s=api.auth_jwks_cache_s,
            refetch_interval_s=api.auth_jwks_refetch_interval_s,
        )
    else:
        try:
            document = api.auth_jwks
            if document is None and api.auth_jwks_file is not None:
                document = api.auth_jwks_file.read_text()
            keys = StaticKeys(document or "")
        except (OSError, ValueError) as exc:
            raise ConfigurationError(f"the API's JWKS is not usable: {exc}") from exc
    return TokenVerifier(keys, api)


async def caller(
    request: Request,
    credentials: Annotated[HTTPAuthorizationCredentials | None, Security(BEARER)],
) -> Principal:
    """The authenticated caller of a request, within its rate limit (a FastAPI security
    dependency). 401 without an accepted token, 429 over the limit, 503 when the
    issuer's keys cannot be fetched."""
    verifier: TokenVerifier | None = request.app.state.token_verifier
    limiter: RateLimiter = request.app.state.rate_limiter
    # Callers without an accepted token share their address's bucket, so that guessing
    # tokens is limited too; an authenticated caller has its own, wherever it calls from.
    address = f"address:{request.client.host if request.client else 'unknown'}"
    if verifier is None:
        limiter.admit(address)
        return UNAUTHENTICATED
    if credentials is None:
        limiter.admit(address)
        raise _unauthorized("a bearer token is required", None)
    try:
        principal = await verifier.principal(credentials.credentials)
    except TokenRejected as exc:
        limiter.admit(address)
        raise _unauthorized(str(exc), "invalid_token") from None
    except KeysUnavailable:
        raise HTTPException(
            status.HTTP_503_SERVICE_UNAVAILABLE,
            "the token issuer's keys are unavailable; retry later",
            headers={"Retry-After": "5"},
        ) from None
    limiter.admit(f"subject:{principal.subject}")
    return principal


def _unauthorized(detail: str, error: str | None) -> HTTPException:
    challenge = f'Bearer realm="{REALM}"'
    if error is not None:
        challenge += f', error="{error}", error_description="{detail}"'
    return HTTPException(
        status.HTTP_401_UNAUTHORIZED, detail, headers={"WWW-Authenticate": challenge}
    )


def _scopes(claims: dict[str, Any]) -> set[str]:
    """OAuth2's space-separated ``scope``, or the ``scp`` list some issuers send."""
    scope = claims.get("scope", "")
    listed = claims.get("scp", [])
    found = set(scope.split()) if isinstance(scope, str) else set()
    if isinstance(listed, list):
        found |= {str(item) for item in listed}
    return found
