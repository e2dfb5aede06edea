"""Access tokens: short-lived JWTs signed with Ed25519 (EdDSA), verifiable by anyone holding the JWKS.

`TokenService` signs (auth only); `TokenVerifier` verifies against a set of public keys by `kid`, so auth
(its own key) and every other service (the keys of auth's JWKS) run the very same checks.

Time comes from the injected clock (rule 6): PyJWT checks signature, issuer and audience, and the
verifier checks `exp`, `nbf` and `iat` against `clock.now()` itself.
"""

from __future__ import annotations

import base64
import hashlib
import json
import re
from collections.abc import Mapping
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey, Ed25519PublicKey
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
DEFAULT_LEEWAY = timedelta(seconds=30)
_MAX_KID_LENGTH = 128
_ED25519_X = re.compile(r"[A-Za-z0-9_-]{43}")  # 32 bytes, base64url without padding
_BASE64URL = re.compile(r"[A-Za-z0-9_-]+")


class AccessTokenExpired(NotAuthenticated):
    """A distinct code, so a client knows to refresh rather than to sign in again."""

    code = "token-expired"
    title = "Access token expired"


def generate_signing_key_pem() -> str:
    """A new Ed25519 private key as PKCS#8 PEM."""
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption()).decode()


def bearer_credentials(authorization: str) -> str:
    """The credentials of an `Authorization: Bearer <credentials>` value; raises `NotAuthenticated`."""
    scheme, _, credentials = authorization.strip().partition(" ")
    credentials = credentials.strip()
    if scheme.lower() != "bearer" or not credentials:
        raise NotAuthenticated("Send 'Authorization: Bearer <access token or API key>'.")
    return credentials


class TokenVerifier:
    """Verifies access tokens against public keys by `kid`: every check except where the keys come from."""

    def __init__(
        self, *, issuer: str, audience: str, clock: Clock, leeway: timedelta = DEFAULT_LEEWAY
    ) -> None:
        self._issuer = issuer
        self._audience = audience
        self._clock = clock
        self._leeway = leeway.total_seconds()

    def key_id(self, token: str) -> str:
        """The `kid` of a token whose header is an access token's; raises `InvalidCredentials`.

        Checked before any key is looked up, so a token that cannot pass never makes a caller fetch keys.
        """
        if not token or len(token) > MAX_TOKEN_LENGTH:
            raise InvalidCredentials("The access token is malformed.")
        header = _unverified_header(token)
        if header.get("alg") != ALGORITHM:
            raise InvalidCredentials(f"The access token must be signed with {ALGORITHM}.")
        if header.get("typ") != TOKEN_TYPE:
            raise InvalidCredentials("The token is not an access token.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > _MAX_KID_LENGTH:
            raise InvalidCredentials("The access token was signed by an unknown key.")
        return kid

    def verify(self, token: str, keys: Mapping[str, Ed25519PublicKey]) -> Principal:
        """The user principal behind a valid token; raises `InvalidCredentials` or `AccessTokenExpired`."""
        key = keys.get(self.key_id(token))
        if key is None:
            raise InvalidCredentials("The access token was signed by an unknown key.")
        claims = self._decode(token, key)
        self._check_times(claims)
        try:
            user_id = UUID(str(claims["sub"]))
            session_id = UUID(str(claims["sid"]))
        except ValueError:
            raise InvalidCredentials("The access token names no valid user or session.") from None
        return Principal(kind="user", user_id=user_id, session_id=session_id)

    def _decode(self, token: str, key: Ed25519PublicKey) -> dict[str, Any]:
        try:
            return jwt.decode(
                token,
                key,
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


class TokenService:
    """Issues access tokens with auth's private key, verifies them, and publishes the public key as a JWKS."""

    def __init__(
        self,
        private_key_pem: str,
        *,
        issuer: str,
        audience: str,
        access_ttl: timedelta,
        clock: Clock,
        leeway: timedelta = DEFAULT_LEEWAY,
    ) -> None:
        key = load_pem_private_key(private_key_pem.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError(f"the JWT signing key must be an Ed25519 private key, not {type(key).__name__}")
        self._private_key = key
        public_key = key.public_key()
        self._issuer = issuer
        self._audience = audience
        self._access_ttl = access_ttl
        self._clock = clock
        raw = public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        self._public_jwk = {"crv": "Ed25519", "kty": "OKP", "x": _b64url(raw)}
        self.kid = jwk_thumbprint(self._public_jwk)
        self._keys = {self.kid: public_key}
        self.verifier = TokenVerifier(issuer=issuer, audience=audience, clock=clock, leeway=leeway)

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
        return self.verifier.verify(token, self._keys)

    def jwks(self) -> dict[str, Any]:
        """The public JSON Web Key Set (RFC 7517) that verifies these tokens."""
        return {"keys": [{**self._public_jwk, "kid": self.kid, "alg": ALGORITHM, "use": "sig"}]}


def public_keys_from_jwks(document: object) -> dict[str, Ed25519PublicKey]:
    """The Ed25519 signing keys of a JWKS document, by `kid`.

    Strict, as the counterpart of `TokenService.jwks()`: an entry counts only with `kty` OKP, `crv`
    Ed25519, `alg` EdDSA, `use` sig, a `kid` and a 32-byte `x`, and no private part; others are skipped.
    """
    entries = document.get("keys") if isinstance(document, dict) else None
    if not isinstance(entries, list):
        return {}
    keys: dict[str, Ed25519PublicKey] = {}
    for entry in entries:
        if not isinstance(entry, dict) or "d" in entry:
            continue
        kid, x = entry.get("kid"), entry.get("x")
        if (
            entry.get("kty") != "OKP"
            or entry.get("crv") != "Ed25519"
            or entry.get("alg") != ALGORITHM
            or entry.get("use") != "sig"
            or not isinstance(kid, str)
            or not 0 < len(kid) <= _MAX_KID_LENGTH
            or not isinstance(x, str)
            or not _ED25519_X.fullmatch(x)
            or kid in keys
        ):
            continue
        try:
            keys[kid] = Ed25519PublicKey.from_public_bytes(base64.urlsafe_b64decode(x + "="))
        except ValueError:
            continue
    return keys


def _unverified_header(token: str) -> dict[str, Any]:
    """The JOSE header of a compact JWT, to pick its key; `decode` checks the whole token after.

    Only the header segment is decoded: PyJWT's `get_unverified_header` checks every character of all
    three segments in Python first, which `decode` then does again (some 40 us per request).
    """
    segment = token.partition(".")[0]
    if token.count(".") != 2 or not _BASE64URL.fullmatch(segment):
        raise InvalidCredentials("The access token is malformed.")
    try:
        header = json.loads(base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4)))
    except (ValueError, RecursionError):
        raise InvalidCredentials("The access token is malformed.") from None
    if not isinstance(header, dict):
        raise InvalidCredentials("The access token is malformed.")
    return header


def jwk_thumbprint(jwk: dict[str, str]) -> str:
    """The RFC 7638 thumbprint of an OKP public key: SHA-256 over its required members, base64url."""
    required = {name: jwk[name] for name in ("crv", "kty", "x")}
    canonical = json.dumps(required, sort_keys=True, separators=(",", ":")).encode()
    return _b64url(hashlib.sha256(canonical).digest())


def _b64url(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()
