"""Access tokens: issue/verify round trip, the JWKS, and every way a forged or stale token must fail."""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
from datetime import UTC, datetime, timedelta
from typing import Any
from uuid import UUID, uuid4

import jwt
import pytest
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import (
    Encoding,
    NoEncryption,
    PrivateFormat,
    PublicFormat,
    load_pem_private_key,
)
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.errors import NotAuthenticated
from splitstone.modules.auth.api import InvalidCredentials
from splitstone.modules.auth.tokens import (
    AccessTokenExpired,
    TokenService,
    TokenVerifier,
    bearer_credentials,
    generate_signing_key_pem,
    jwk_thumbprint,
    public_keys_from_jwks,
)

TTL = timedelta(minutes=15)
USER = UUID("0191f0a4-1111-7b3a-9d2e-5f6a7b8c9d0e")
SESSION = UUID("0191f0a4-2222-7b3a-9d2e-5f6a7b8c9d0e")
KEY_PEM = generate_signing_key_pem()  # one key for the module: Ed25519 generation is cheap but not free


@pytest.fixture
def clock() -> ManualClock:
    return ManualClock(datetime(2030, 1, 1, 12, 0, tzinfo=UTC))


def service(clock: ManualClock, pem: str = KEY_PEM, **overrides: Any) -> TokenService:
    options: dict[str, Any] = {"issuer": "splitstone", "audience": "splitstone", "access_ttl": TTL}
    options.update(overrides)
    return TokenService(pem, clock=clock, **options)


@pytest.fixture
def tokens(clock: ManualClock) -> TokenService:
    return service(clock)


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


def claims(clock: ManualClock, **changes: Any) -> dict[str, Any]:
    now = int(clock.now().timestamp())
    base: dict[str, Any] = {
        "iss": "splitstone",
        "aud": "splitstone",
        "sub": str(USER),
        "sid": str(SESSION),
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": str(uuid4()),
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(tokens: TokenService, payload: dict[str, Any], **header: Any) -> str:
    """A token signed with the real private key, with chosen claims and header."""
    key = load_pem_private_key(KEY_PEM.encode(), password=None)
    headers = {"kid": tokens.kid, "typ": "at+jwt", **header}
    return jwt.encode(payload, key, algorithm="EdDSA", headers=headers)  # type: ignore[arg-type]


def rejects(tokens: TokenService, token: str, match: str) -> None:
    with pytest.raises(InvalidCredentials, match=match) as caught:
        tokens.verify_access_token(token)
    assert caught.value.status == 401
    assert caught.value.code == "invalid-credentials"


# -- the happy path -------------------------------------------------------------------------------------


def test_issued_token_verifies_to_the_user_and_session(tokens: TokenService, clock: ManualClock) -> None:
    token, expires_at = tokens.issue_access_token(USER, SESSION)

    principal = tokens.verify_access_token(token)

    assert principal.kind == "user"
    assert principal.user_id == USER
    assert principal.session_id == SESSION
    assert expires_at == clock.now() + TTL


def test_token_carries_the_required_claims_and_header(tokens: TokenService, clock: ManualClock) -> None:
    token, _ = tokens.issue_access_token(USER, SESSION)

    header = jwt.get_unverified_header(token)
    payload = json.loads(unb64(token.split(".")[1]))

    assert header == {"alg": "EdDSA", "kid": tokens.kid, "typ": "at+jwt"}
    now = int(clock.now().timestamp())
    assert payload["iss"] == "splitstone"
    assert payload["aud"] == "splitstone"
    assert payload["sub"] == str(USER)
    assert payload["sid"] == str(SESSION)
    assert payload["iat"] == payload["nbf"] == now
    assert payload["exp"] == now + 900
    assert UUID(payload["jti"])


def test_every_token_has_its_own_jti(tokens: TokenService) -> None:
    first, _ = tokens.issue_access_token(USER, SESSION)
    second, _ = tokens.issue_access_token(USER, SESSION)
    jtis = {json.loads(unb64(t.split(".")[1]))["jti"] for t in (first, second)}
    assert len(jtis) == 2


def test_jwks_publishes_the_public_key_that_verifies_tokens(tokens: TokenService) -> None:
    token, _ = tokens.issue_access_token(USER, SESSION)

    jwks = tokens.jwks()

    [key] = jwks["keys"]
    assert key["kty"] == "OKP"
    assert key["crv"] == "Ed25519"
    assert key["alg"] == "EdDSA"
    assert key["use"] == "sig"
    assert key["kid"] == tokens.kid
    assert "d" not in key  # never the private part
    # Another party can verify with nothing but the JWKS entry (times off: the test clock is in 2030).
    public = jwt.PyJWK.from_dict(key)
    decoded = jwt.decode(
        token,
        public,
        algorithms=["EdDSA"],
        audience="splitstone",
        issuer="splitstone",
        options={"verify_exp": False, "verify_nbf": False, "verify_iat": False},
    )
    assert decoded["sub"] == str(USER)


def test_kid_is_the_rfc7638_thumbprint() -> None:
    # RFC 8037, appendix A.3: the thumbprint of the example Ed25519 public key.
    example = {"crv": "Ed25519", "kty": "OKP", "x": "11qYAYKxCrfVS_7TyWQHOg7hcvPapiMlrwIaaPcHURo"}
    assert jwk_thumbprint(example) == "kPrK_qmxVWaYVA9wwBF6Iuo3vVzz7TxHCTwXBygrS4k"


def test_kid_is_stable_for_a_key_and_differs_between_keys(clock: ManualClock) -> None:
    assert service(clock).kid == service(clock).kid
    assert service(clock, generate_signing_key_pem()).kid != service(clock).kid


def test_generated_key_is_pkcs8_pem() -> None:
    pem = generate_signing_key_pem()
    assert pem.startswith("-----BEGIN PRIVATE KEY-----")
    assert generate_signing_key_pem() != pem


def test_a_key_that_is_not_ed25519_is_refused(clock: ManualClock) -> None:
    ec_pem = (
        ec.generate_private_key(ec.SECP256R1())
        .private_bytes(Encoding.PEM, PrivateFormat.PKCS8, NoEncryption())
        .decode()
    )
    with pytest.raises(ValueError, match="Ed25519"):
        service(clock, ec_pem)


# -- time, from the injected clock -----------------------------------------------------------------------


def test_token_expires_by_the_clock_with_a_small_leeway(tokens: TokenService, clock: ManualClock) -> None:
    token, _ = tokens.issue_access_token(USER, SESSION)

    clock.advance(TTL + timedelta(seconds=20))  # past exp, within the 30 s leeway
    assert tokens.verify_access_token(token).user_id == USER

    clock.advance(timedelta(seconds=11))
    with pytest.raises(AccessTokenExpired, match="expired") as caught:
        tokens.verify_access_token(token)
    assert isinstance(caught.value, NotAuthenticated)
    assert caught.value.code == "token-expired"


def test_token_from_the_future_is_not_valid_yet(tokens: TokenService, clock: ManualClock) -> None:
    ahead = ManualClock(clock.now() + timedelta(minutes=5))
    token, _ = service(ahead).issue_access_token(USER, SESSION)

    rejects(tokens, token, "not valid yet")

    clock.advance(timedelta(minutes=5))
    assert tokens.verify_access_token(token).user_id == USER


def test_small_clock_skew_is_tolerated(tokens: TokenService, clock: ManualClock) -> None:
    token, _ = service(ManualClock(clock.now() + timedelta(seconds=10))).issue_access_token(USER, SESSION)
    assert tokens.verify_access_token(token).user_id == USER


def test_iat_in_the_future_is_refused(tokens: TokenService, clock: ManualClock) -> None:
    now = int(clock.now().timestamp())
    rejects(tokens, signed(tokens, claims(clock, iat=now + 3600)), "issued in the future")


@pytest.mark.parametrize("claim", ["iat", "nbf", "exp"])
@pytest.mark.parametrize("value", ["1700000000", True, None, [1]])
def test_time_claims_must_be_numbers(
    tokens: TokenService, clock: ManualClock, claim: str, value: Any
) -> None:
    payload = claims(clock)
    payload[claim] = value
    # PyJWT itself checks none of these (its time checks are off); ours must.
    rejects(tokens, signed(tokens, payload), f"'{claim}'")


# -- forged and foreign tokens -----------------------------------------------------------------------------


def test_alg_none_is_refused(tokens: TokenService, clock: ManualClock) -> None:
    header = b64(json.dumps({"alg": "none", "typ": "at+jwt", "kid": tokens.kid}).encode())
    payload = b64(json.dumps(claims(clock)).encode())
    rejects(tokens, f"{header}.{payload}.", "EdDSA")


@pytest.mark.parametrize(
    "secret",
    [
        pytest.param("pem", id="public-key-pem"),
        pytest.param("raw", id="public-key-raw"),
        pytest.param("jwk-x", id="jwk-x"),
    ],
)
def test_hs256_signed_with_the_public_key_is_refused(
    tokens: TokenService, clock: ManualClock, secret: str
) -> None:
    """The classic algorithm confusion: HMAC "signed" with the verifier's public key."""
    public = load_pem_private_key(KEY_PEM.encode(), password=None).public_key()
    keys = {
        "pem": public.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo),
        "raw": public.public_bytes(Encoding.Raw, PublicFormat.Raw),
        "jwk-x": tokens.jwks()["keys"][0]["x"].encode(),
    }
    header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": tokens.kid}).encode())
    payload = b64(json.dumps(claims(clock)).encode())
    signature = hmac.new(keys[secret], f"{header}.{payload}".encode(), hashlib.sha256).digest()
    rejects(tokens, f"{header}.{payload}.{b64(signature)}", "EdDSA")


def test_token_of_another_key_is_refused(tokens: TokenService, clock: ManualClock) -> None:
    other = service(clock, generate_signing_key_pem())
    token, _ = other.issue_access_token(USER, SESSION)
    rejects(tokens, token, "unknown key")


def test_another_key_claiming_our_kid_fails_the_signature(tokens: TokenService, clock: ManualClock) -> None:
    impostor = load_pem_private_key(generate_signing_key_pem().encode(), password=None)
    token = jwt.encode(
        claims(clock),
        impostor,  # type: ignore[arg-type]
        algorithm="EdDSA",
        headers={"kid": tokens.kid, "typ": "at+jwt"},
    )
    rejects(tokens, token, "signature")


@pytest.mark.parametrize(("field", "value"), [("audience", "another-app"), ("issuer", "someone-else")])
def test_token_for_another_audience_or_issuer_is_refused(
    tokens: TokenService, clock: ManualClock, field: str, value: str
) -> None:
    token, _ = service(clock, **{field: value}).issue_access_token(USER, SESSION)
    rejects(tokens, token, "audience" if field == "audience" else "issuer")


def test_audience_list_is_refused(tokens: TokenService, clock: ManualClock) -> None:
    rejects(tokens, signed(tokens, claims(clock, aud=["splitstone", "other"])), "audience")


def test_a_jwt_that_is_not_an_access_token_is_refused(tokens: TokenService, clock: ManualClock) -> None:
    rejects(tokens, signed(tokens, claims(clock), typ="JWT"), "not an access token")


@pytest.mark.parametrize("claim", ["iss", "aud", "sub", "sid", "iat", "nbf", "exp", "jti"])
def test_every_claim_is_required(tokens: TokenService, clock: ManualClock, claim: str) -> None:
    payload = claims(clock)
    del payload[claim]
    rejects(tokens, signed(tokens, payload), claim)


@pytest.mark.parametrize("claim", ["sub", "sid"])
def test_subject_and_session_must_be_uuids(tokens: TokenService, clock: ManualClock, claim: str) -> None:
    rejects(tokens, signed(tokens, claims(clock, **{claim: "admin"})), "no valid user or session")


def test_changed_claims_break_the_signature(tokens: TokenService, clock: ManualClock) -> None:
    token, _ = tokens.issue_access_token(USER, SESSION)
    header, payload, signature = token.split(".")
    forged = json.loads(unb64(payload))
    forged["sub"] = str(uuid4())
    rejects(tokens, f"{header}.{b64(json.dumps(forged).encode())}.{signature}", "signature")


@pytest.mark.parametrize(
    "garbage",
    ["", "not-a-jwt", "a.b.c", "....", "eyJhbGciOiJFZERTQSJ9", "x" * 5000, "é.é.é"],
)
def test_garbage_is_refused(tokens: TokenService, garbage: str) -> None:
    with pytest.raises(InvalidCredentials):
        tokens.verify_access_token(garbage)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(segment=st.integers(0, 2), position=st.integers(0, 10_000), bit=st.integers(0, 7))
def test_any_flipped_bit_is_refused(tokens: TokenService, segment: int, position: int, bit: int) -> None:
    """Flip one bit anywhere in the header, claims or signature: the token must not verify."""
    token, _ = tokens.issue_access_token(USER, SESSION)
    parts = token.split(".")
    data = bytearray(unb64(parts[segment]))
    data[position % len(data)] ^= 1 << bit
    parts[segment] = b64(bytes(data))
    with pytest.raises(InvalidCredentials):
        tokens.verify_access_token(".".join(parts))


@settings(max_examples=100, suppress_health_check=[HealthCheck.function_scoped_fixture], deadline=None)
@given(text=st.text(max_size=300))
def test_arbitrary_text_never_verifies(tokens: TokenService, text: str) -> None:
    with pytest.raises(InvalidCredentials):
        tokens.verify_access_token(text)


# -- verifying with keys from a JWKS, as other services do -----------------------------------------------


def test_a_verifier_over_the_published_keys_accepts_tokens_of_each(clock: ManualClock) -> None:
    first, second = service(clock), service(clock, generate_signing_key_pem())
    keys = public_keys_from_jwks({"keys": [*first.jwks()["keys"], *second.jwks()["keys"]]})
    verifier = TokenVerifier(issuer="splitstone", audience="splitstone", clock=clock)

    assert set(keys) == {first.kid, second.kid}
    for tokens in (first, second):
        token, _ = tokens.issue_access_token(USER, SESSION)
        assert verifier.verify(token, keys) == tokens.verify_access_token(token)
    with pytest.raises(InvalidCredentials, match="unknown key"):
        verifier.verify(first.issue_access_token(USER, SESSION)[0], {})


def test_the_kid_is_read_only_from_an_access_token_header(tokens: TokenService, clock: ManualClock) -> None:
    verifier = TokenVerifier(issuer="splitstone", audience="splitstone", clock=clock)
    assert verifier.key_id(tokens.issue_access_token(USER, SESSION)[0]) == tokens.kid

    # A header that cannot pass is refused before any key is looked up (so before any JWKS fetch).
    with pytest.raises(InvalidCredentials, match="not an access token"):
        verifier.key_id(signed(tokens, claims(clock), typ="JWT", kid="never-published"))
    for kid in ("", "k" * 200):
        with pytest.raises(InvalidCredentials, match="unknown key"):
            verifier.key_id(signed(tokens, claims(clock), kid=kid))
    for header in ({"alg": "EdDSA", "typ": "at+jwt"}, {"alg": "EdDSA", "typ": "at+jwt", "kid": 42}):
        token = f"{b64(json.dumps(header).encode())}.{b64(json.dumps(claims(clock)).encode())}.c2ln"
        with pytest.raises(InvalidCredentials):
            verifier.key_id(token)


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"kty": "EC"}, id="kty"),
        pytest.param({"crv": "Ed448"}, id="crv"),
        pytest.param({"alg": "ES256"}, id="alg"),
        pytest.param({"alg": None}, id="no-alg"),
        pytest.param({"use": "enc"}, id="use"),
        pytest.param({"use": None}, id="no-use"),
        pytest.param({"kid": None}, id="no-kid"),
        pytest.param({"kid": ""}, id="empty-kid"),
        pytest.param({"x": None}, id="no-x"),
        pytest.param({"x": "AAAA"}, id="short-x"),
        pytest.param({"x": "+" * 43}, id="x-not-base64url"),
        pytest.param({"d": "c2VjcmV0"}, id="private-part"),
    ],
)
def test_jwks_entries_are_read_strictly(tokens: TokenService, changes: dict[str, Any]) -> None:
    entry = {**tokens.jwks()["keys"][0], **changes}
    entry = {k: v for k, v in entry.items() if v is not None}
    assert public_keys_from_jwks({"keys": [entry]}) == {}
    assert set(public_keys_from_jwks(tokens.jwks())) == {tokens.kid}


@pytest.mark.parametrize("document", [None, [], "keys", {"keys": "all"}, {"keys": [None, 1, "x"]}, {}])
def test_a_document_that_is_not_a_jwks_has_no_keys(document: Any) -> None:
    assert public_keys_from_jwks(document) == {}


@pytest.mark.parametrize(
    ("authorization", "credentials"),
    [("Bearer abc", "abc"), ("bearer  abc ", "abc"), ("  BEARER abc", "abc")],
)
def test_bearer_credentials_are_read(authorization: str, credentials: str) -> None:
    assert bearer_credentials(authorization) == credentials


@pytest.mark.parametrize("authorization", ["", "Bearer", "Bearer   ", "Basic abc", "abc"])
def test_anything_but_bearer_credentials_is_refused(authorization: str) -> None:
    with pytest.raises(NotAuthenticated, match="Bearer"):
        bearer_credentials(authorization)
