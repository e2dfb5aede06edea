"""Access tokens: short-lived JWTs signed with Ed25519 (EdDSA), verifiable by anyone holding the JWKS.

Time comes from the injected clock (rule 6): PyJWT checks signature, issuer and audience, and this
module checks `exp`, `nbf` and `iat` against `clock.now()` itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.errors import NotAuthenticated
from splitstone.modules.auth.api import InvalidCredentials, Principal

ALGORITHM = "EdDSA"
# RFC 9068: marks an access token, so no other JWT signed by this key passes as one.
TOKEN_TYPE = "at+jwt"  # noqa: S105 (a media type, not a secret)
REQUIRED_CLAIMS = ("iss", "aud", "sub", "sid", "iat", "nbf", "exp", "jti")
MAX_TOKEN_LENGTH = 4096


class AccessTokenExpired(NotAuthenticated):
    """A distinct code, so a client knows to refresh rather than to sign in again."""

    code = "token-expired"
    title = "Access token expired"


def generate_signing_key_pem() -> str:
    """A new Ed25519 private key as PKCS#8 PEM."""
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


class TokenService:
    """Issues and verifies access tokens; publishes its public key as a JWKS."""

    def __init__(
        self,
        private_key_pem: str,
        *,
        issuer: str,
        audience: str,
        access_ttl: timedelta,
        clock: Clock,
        leeway: timedelta = timedelta(seconds=30),
    ) -> None:
        key = load_pem_private_key(private_key_pem.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"the JWT signing key must be an Ed25519 private key, not {type(key).__name__}")
        self._private_key = key
        self._public_key = key.public_key()
        self._issuer = issuer
        self._audience = audience
        self._access_ttl = access_ttl
        self._clock = clock
        self._leeway = leeway.total_seconds()
        raw = self._public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._public_jwk = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
        self.kid = jwk_thumbprint(self._public_jwk)

    @property
    def access_ttl(self) -> timedelta:
        return self._access_ttl

    def issue_access_token(self, user_id: UUID, session_id: UUID) -> tuple[str, datetime]:
        """A signed access token for a user's session, and when it expires."""
        issued = int(self._clock.now().timestamp())
        expires = issued + int(self._access_ttl.total_seconds())
        claims = {
            "iss": self._issuer,
            "aud": self._audience,
            "sub": str(user_id),
            "sid": str(session_id),
            "iat": issued,
            "nbf": issued,
            "exp": expires,
            "jti": str(uuid7()),
        }
        token = jwt.encode(
            claims, self._private_key, algorithm=ALGORITHM, headers={"kid": self.kid, "typ": TOKEN_TYPE}
        )
        return token, datetime.fromtimestamp(expires, UTC)

    def verify_access_token(self, token: str) -> Principal:
        """The user principal behind a valid token; raises `InvalidCredentials` or `AccessTokenExpired`."""
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidCredentials("The access token is malformed.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise InvalidCredentials("The access token is malformed.") from None
        if header.get("alg") != ALGORITHM:
            raise InvalidCredentials(f"The access token must be signed with {ALGORITHM}.")
        if header.get("kid") != self.kid:
            raise InvalidCredentials("The access token was signed by an unknown key.")
        if header.get("typ") != TOKEN_TYPE:
            raise InvalidCredentials("The token is not an access token.")
        claims = self._decode(token)
        self._check_times(claims)
        try:
            user_id = UUID(str(claims["sub"]))
            session_id = UUID(str(claims["sid"]))
        except ValueError:
            raise InvalidCredentials("The access token names no valid user or session.") from None
        return Principal(kind="user", user_id=user_id, session_id=session_id)

    def jwks(self) -> dict[str, Any]:
        """The public JSON Web Key Set (RFC 7517) that verifies these tokens."""
        return {"keys": [{**self._public_jwk, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}]}

    def _decode(self, token: str) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                self._public_key,
                algorithms=[ALGORITHM],
                audience=self._audience,
                issuer=self._issuer,
                options={
                    "verify_signature": True,
                    "verify_aud": True,
                    "verify_iss": True,
                    # Times are checked against the injected clock in `_check_times`.
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": list(REQUIRED_CLAIMS),
                    "strict_aud": True,
                },
            )
        except jwt.InvalidSignatureError:
            raise InvalidCredentials("The access token signature is invalid.") from None
        except jwt.InvalidAudienceError:
            raise InvalidCredentials("The access token is meant for another audience.") from None
        except jwt.InvalidIssuerError:
            raise InvalidCredentials("The access token comes from another issuer.") from None
        except jwt.MissingRequiredClaimError as error:
            raise InvalidCredentials(f"The access token lacks the '{error.claim}' claim.") from None
        except jwt.PyJWTError:
            raise InvalidCredentials("The access token is malformed.") from None

    def _check_times(self, claims: dict[str, Any]) -> None:
        times: dict[str, float] = {}
        for name in ("iat", "nbf", "exp"):
            value = claims[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise InvalidCredentials(f"The access token's '{name}' claim is not a timestamp.")
            times[name] = float(value)
        now = self._clock.now().timestamp()
        if now >= times["exp"] + self._leeway:
            raise AccessTokenExpired("The access token has expired; refresh it or sign in again.")
        if times["nbf"] > now + self._leeway:
            raise InvalidCredentials("The access token is not valid yet.")
        if times["iat"] > now + self._leeway:
            raise InvalidCredentials("The access token claims to be issued in the future.")


def jwk_thumbprint(jwk: dict[str, str]) -> str:
    """The RFC 7638 thumbprint of an OKP public key: SHA-256 over its required members, base64url."""
    required = {name: jwk[name] for name in ("crv", "kty", "x")}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":")).encode()
    return _b64url(hashlib.sha256(canonical).digest())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
