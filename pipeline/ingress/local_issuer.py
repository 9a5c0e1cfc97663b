"""A token issuer on this machine, for the demo, docker compose and tests: an EC P-256
signing key, the JWKS the order API checks tokens against, and tokens signed with it.

A deployment never uses it: there the tokens come from the organisation's OIDC issuer
(``PIPELINE_API_AUTH_ISSUER`` and ``PIPELINE_API_AUTH_JWKS_URL``).
"""

from __future__ import annotations

import base64
import hashlib
import json
import os
import time
from collections.abc import Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from jwt.algorithms import ECAlgorithm

ALGORITHM = "ES256"
KEY_FILE = "signing-key.pem"
JWKS_FILE = "jwks.json"


@dataclass(frozen=True, slots=True)
class LocalIssuer:
    """Signs tokens for ``audience`` as ``issuer`` with one private key."""

    issuer: str
    audience: str
    private_key: ec.EllipticCurvePrivateKey

    @classmethod
    def generate(cls, issuer: str, audience: str) -> LocalIssuer:
        """An issuer with a fresh key that lives only in this process."""
        return cls(issuer, audience, ec.generate_private_key(ec.SECP256R1()))

    @classmethod
    def in_directory(cls, directory: Path, issuer: str, audience: str) -> LocalIssuer:
        """The issuer whose key is kept in ``directory`` (created on first use, readable
        by its owner only), with ``jwks.json`` beside it for the API to read."""
        directory.mkdir(parents=True, exist_ok=True)
        key_path = directory / KEY_FILE
        if key_path.exists():
            key = serialization.load_pem_private_key(key_path.read_bytes(), password=None)
            if not isinstance(key, ec.EllipticCurvePrivateKey):
                raise ValueError(f"{key_path} holds no EC private key")
            local = cls(issuer, audience, key)
        else:
            local = cls.generate(issuer, audience)
            pem = local.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.NoEncryption(),
            )
            descriptor = os.open(key_path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
            with os.fdopen(descriptor, "wb") as key_file:
                key_file.write(pem)
        (directory / JWKS_FILE).write_text(local.jwks_json())
        return local

    @property
    def key_id(self) -> str:
        """The key's ``kid``: a digest of its public half, so a new key gets a new id."""
        public = self.private_key.public_key().public_bytes(
            serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
        )
        return base64.urlsafe_b64encode(hashlib.sha256(public).digest()[:12]).decode()

    def jwks(self) -> dict[str, Any]:
        """The JWKS document of the public key (what an issuer serves at its JWKS URL)."""
        jwk: dict[str, Any] = ECAlgorithm.to_jwk(self.private_key.public_key(), as_dict=True)
        return {"keys": [{**jwk, "kid": self.key_id, "alg": ALGORITHM, "use": "sig"}]}

    def jwks_json(self) -> str:
        """:meth:`jwks` as JSON, for ``PIPELINE_API_AUTH_JWKS``."""
        return json.dumps(self.jwks())

    def token(
        self,
        subject: str,
        *,
        scopes: Iterable[str] = (),
        ttl_s: float = 3600,
        now: float | None = None,
        **claims: Any,
    ) -> str:
        """A signed token for ``subject`` with ``scopes``, valid for ``ttl_s`` seconds;
        ``claims`` add to or override the standard ones."""
        issued = int(time.time() if now is None else now)
        payload: dict[str, Any] = {
            "iss": self.issuer,
            "aud": self.audience,
            "sub": subject,
            "iat": issued,
            "exp": issued + int(ttl_s),
        }
        if scope := " ".join(scopes):
            payload["scope"] = scope
        payload.update(claims)
        return jwt.encode(payload, self.private_key, ALGORITHM, headers={"kid": self.key_id})
