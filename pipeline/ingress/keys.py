"""The public keys bearer tokens are checked against: a static JWKS, or the issuer's.

Either source answers :meth:`SigningKeys.key_for` with the key a token's ``kid`` names.
:class:`IssuerKeys` fetches the issuer's JWKS with PyJWT's :class:`~jwt.PyJWKClient`,
keeps it for ``auth_jwks_cache_s`` and fetches it again when a token names a key it does
not hold — which is how a rotated key is picked up without a restart. Refetches caused by
unknown ids are at least ``auth_jwks_refetch_interval_s`` apart, so made-up ids cannot
turn every request into a call to the issuer.
"""

from __future__ import annotations

import asyncio
from typing import Protocol

from jwt import PyJWK, PyJWKClient, PyJWKClientConnectionError, PyJWKClientError, PyJWKSet
from jwt.exceptions import PyJWKError, PyJWKSetError


class UnknownKey(Exception):
    """No key of the configured source matches the token's ``kid``."""


class KeysUnavailable(Exception):
    """The issuer's JWKS could not be fetched; tokens cannot be checked right now."""


class SigningKeys(Protocol):
    """Where the public key of a token's ``kid`` comes from."""

    async def key_for(self, key_id: str | None) -> PyJWK:
        """The key named ``key_id`` (the only key, when ``None`` and there is one)."""
        ...


class StaticKeys:
    """Keys given in the settings: a JWKS document that changes only with a restart."""

    def __init__(self, jwks_json: str) -> None:
        try:
            self._keys = PyJWKSet.from_json(jwks_json).keys
        except (PyJWKError, PyJWKSetError, ValueError) as exc:
            raise ValueError(f"not a usable JWKS document: {exc}") from exc

    async def key_for(self, key_id: str | None) -> PyJWK:
        """The configured key named ``key_id``."""
        return _match(self._keys, key_id)


class IssuerKeys:
    """The issuer's JWKS endpoint, cached, refetched for an unknown ``kid``."""

    def __init__(self, url: str, *, cache_s: float, refetch_interval_s: float) -> None:
        self._client = PyJWKClient(
            url,
            cache_jwk_set=True,
            lifespan=cache_s,
            timeout=5,
            cooldown_duration=refetch_interval_s,
        )

    async def key_for(self, key_id: str | None) -> PyJWK:
        """The issuer's key named ``key_id``, fetched when not cached."""
        # PyJWKClient fetches with blocking urllib: keep it off the event loop.
        try:
            if key_id is None:
                keys = await asyncio.to_thread(self._client.get_signing_keys)
                return _match(keys, None)
            return await asyncio.to_thread(self._client.get_signing_key, key_id)
        except (PyJWKClientConnectionError, PyJWKSetError) as exc:
            raise KeysUnavailable("the issuer's JWKS could not be fetched") from exc
        except PyJWKClientError as exc:
            raise UnknownKey("no key of the issuer matches the token") from exc


def _match(keys: list[PyJWK], key_id: str | None) -> PyJWK:
    if key_id is None:
        if len(keys) == 1:
            return keys[0]
        raise UnknownKey("the token names no key and several are configured")
    for key in keys:
        if key.key_id == key_id:
            return key
    raise UnknownKey("no configured key matches the token")
