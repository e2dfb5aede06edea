"""Access tokens checked exactly as splitstone's `TokenVerifier` checks them (PyJWT, EdDSA, same claims)."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from typing import Any
from uuid import UUID

import jwt
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key

from bench.baseline.problems import Problem, invalid_credentials, not_authenticated

ALGORITHM = "EdDSA"
TOKEN_TYPE = "at+jwt"
REQUIRED_CLAIMS = ["iss", "aud", "sub", "sid", "iat", "nbf", "exp", "jti"]
MAX_TOKEN_LENGTH = 4096
MAX_KID_LENGTH = 128
API_KEY_PREFIX = "ssk_"
SEND_BEARER = "Send 'Authorization: Bearer <access token or API key>'."


class AccessTokens:
    """Verifies the access tokens that auth signs with the private key given (its public half)."""

    def __init__(self, private_key_pem: str, *, issuer: str, audience: str, leeway: float = 30.0) -> None:
        key = load_pem_private_key(private_key_pem.encode(), password=None)
        if not isinstance(key, Ed25519PrivateKey):
            raise ValueError("the JWT signing key must be an Ed25519 private key")
        self._public_key = key.public_key()
        raw = self._public_key.public_bytes(Encoding.Raw, PublicFormat.Raw)
        x = base64.urlsafe_b64encode(raw).rstrip(b"=").decode()
        canonical = json.dumps(
            {"crv": "Ed25519", "kty": "OKP", "x": x}, sort_keys=True, separators=(",", ":")
        )
        self.kid = base64.urlsafe_b64encode(hashlib.sha256(canonical.encode()).digest()).rstrip(b"=").decode()
        self._issuer = issuer
        self._audience = audience
        self._leeway = leeway

    def user_of(self, authorization: str | None) -> tuple[UUID, UUID]:
        """(user id, session id) of an `Authorization: Bearer <access token>` value; raises `Problem`."""
        scheme, _, credentials = (authorization or "").partition(" ")
        credentials = credentials.strip()
        if not authorization or not scheme or not credentials or scheme.lower() != "bearer":
            raise not_authenticated(SEND_BEARER)
        if credentials.startswith(API_KEY_PREFIX):
            raise invalid_credentials("The baseline serves access tokens only, not API keys.")
        claims = self._claims(credentials)
        try:
            return UUID(str(claims["sub"])), UUID(str(claims["sid"]))
        except ValueError:
            raise invalid_credentials("The access token names no valid user or session.") from None

    def _claims(self, token: str) -> dict[str, Any]:
        if len(token) > MAX_TOKEN_LENGTH:
            raise invalid_credentials("The access token is malformed.")
        try:
            header = jwt.get_unverified_header(token)
        except jwt.PyJWTError:
            raise invalid_credentials("The access token is malformed.") from None
        if header.get("alg") != ALGORITHM:
            raise invalid_credentials(f"The access token must be signed with {ALGORITHM}.")
        if header.get("typ") != TOKEN_TYPE:
            raise invalid_credentials("The token is not an access token.")
        kid = header.get("kid")
        if not isinstance(kid, str) or not kid or len(kid) > MAX_KID_LENGTH or kid != self.kid:
            raise invalid_credentials("The access token was signed by an unknown key.")
        claims = self._decode(token)
        self._check_times(claims)
        return claims

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
                    "verify_exp": False,
                    "verify_nbf": False,
                    "verify_iat": False,
                    "require": REQUIRED_CLAIMS,
                    "strict_aud": True,
                },
            )
        except jwt.InvalidSignatureError:
            raise invalid_credentials("The access token signature is invalid.") from None
        except jwt.InvalidAudienceError:
            raise invalid_credentials("The access token is meant for another audience.") from None
        except jwt.InvalidIssuerError:
            raise invalid_credentials("The access token comes from another issuer.") from None
        except jwt.MissingRequiredClaimError as error:
            raise invalid_credentials(f"The access token lacks the '{error.claim}' claim.") from None
        except jwt.PyJWTError:
            raise invalid_credentials("The access token is malformed.") from None

    def _check_times(self, claims: dict[str, Any]) -> None:
        times: dict[str, float] = {}
        for name in ("iat", "nbf", "exp"):
            value = claims[name]
            if isinstance(value, bool) or not isinstance(value, int | float):
                raise invalid_credentials(f"The access token's '{name}' claim is not a timestamp.")
            times[name] = float(value)
        now = time.time()
        if now >= times["exp"] + self._leeway:
            raise Problem(
                401,
                "token-expired",
                "Access token expired",
                "The access token has expired; refresh it or sign in again.",
            )
        if times["nbf"] > now + self._leeway:
            raise invalid_credentials("The access token is not valid yet.")
        if times["iat"] > now + self._leeway:
            raise invalid_credentials("The access token claims to be issued in the future.")
