"""Attacks on authentication over HTTP, as an attacker would run them against the real app.

Unit-level cases live with auth (tests/modules/auth/test_tokens.py: every forged-token shape;
test_accounts_sessions.py: refresh-token reuse revokes the family; test_accounts_passwords.py: reset
tokens are single-use and die with a password change; test_accounts_api.py: the login, registration and
resend limits). Here: the same forgeries against a protected endpoint, lockout that a stranger cannot
trigger, account enumeration by status, body, headers and time, and why CSRF does not apply.
"""

from __future__ import annotations

import base64
import hashlib
import hmac
import json
import statistics
import time
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import timedelta
from pathlib import Path
from typing import Any

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat, load_pem_private_key
from fastapi import FastAPI

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.settings import ModuleSettings
from splitstone.modules.auth.passwords import PasswordHasher
from splitstone.modules.auth.settings import AuthSettings
from splitstone.modules.auth.tokens import generate_signing_key_pem
from tests.modules.auth.conftest import STRONG_PASSWORD, SignedIn, Users
from tests.modules.auth.org_helpers import assert_problem
from tests.support.passwords import CHEAP_ARGON2

pytestmark = pytest.mark.backends("sqlite")  # tokens, limits and timing do not depend on the database

AUTH = "/api/v1/auth"
SRC = Path(__file__).resolve().parents[2] / "src"


@pytest.fixture
def module_settings() -> dict[str, ModuleSettings]:
    return {
        "auth": AuthSettings(**CHEAP_ARGON2, login_rate_per_account="5/minute", login_rate_per_ip="30/minute")
    }


@pytest.fixture
def users(client: httpx.AsyncClient, events: EventRecorder) -> Users:
    return Users(client, events)


@pytest.fixture
async def ada(users: Users) -> SignedIn:
    return await users.signed_in()


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def segments(token: str) -> tuple[dict[str, Any], dict[str, Any]]:
    header, payload, _ = token.split(".")
    return tuple(json.loads(base64.urlsafe_b64decode(p + "=" * (-len(p) % 4))) for p in (header, payload))  # type: ignore[return-value]


@asynccontextmanager
async def client_from(app: FastAPI, ip: str) -> AsyncIterator[httpx.AsyncClient]:
    transport = httpx.ASGITransport(app=app, client=(ip, 5000))
    async with httpx.AsyncClient(transport=transport, base_url="http://testserver") as http:
        yield http


# --- forged and stale access tokens against a protected endpoint -----------------------------------


def forgeries(ada: SignedIn, public_pem: bytes) -> dict[str, str]:
    header, claims = segments(ada.access_token)
    body = b64(json.dumps(claims).encode())

    def hs256(secret: bytes) -> str:
        head = b64(json.dumps({**header, "alg": "HS256"}).encode())
        return f"{head}.{body}.{b64(hmac.new(secret, f'{head}.{body}'.encode(), hashlib.sha256).digest())}"

    impostor = load_pem_private_key(generate_signing_key_pem().encode(), password=None)
    another_user = {**claims, "sub": "0191f0a4-1111-7b3a-9d2e-5f6a7b8c9d0e"}
    signed_head, _, signature = ada.access_token.split(".")
    return {
        "alg none": f"{b64(json.dumps({**header, 'alg': 'none'}).encode())}.{body}.",
        "HS256 with the public key as secret": hs256(public_pem),
        "a foreign kid": jwt.encode(
            claims, impostor, algorithm="EdDSA", headers={**header, "kid": "foreign"}
        ),  # type: ignore[arg-type]
        "another key claiming our kid": jwt.encode(claims, impostor, algorithm="EdDSA", headers=header),  # type: ignore[arg-type]
        "tampered claims": f"{signed_head}.{b64(json.dumps(another_user).encode())}.{signature}",
        "no signature": f"{signed_head}.{body}.",
        "garbage": "not-a-jwt",
    }


async def test_forged_tokens_are_401_problems_that_leak_nothing(
    client: httpx.AsyncClient, ada: SignedIn
) -> None:
    jwks = (await client.get("/.well-known/jwks.json")).json()
    # The PEM of the published key: what a verifier confused into HMAC would use as its secret.
    public_key = jwt.PyJWK(jwks["keys"][0]).key
    public_pem = public_key.public_bytes(Encoding.PEM, PublicFormat.SubjectPublicKeyInfo)
    for name, token in forgeries(ada, public_pem).items():
        response = await client.get(f"{AUTH}/me", headers={"Authorization": f"Bearer {token}"})
        problem = assert_problem(response, 401, "invalid-credentials")
        assert response.headers["www-authenticate"].startswith("Bearer"), name
        assert set(problem) <= {"type", "title", "status", "code", "detail", "instance", "request_id"}, name
        for secret in (token, ada.email, str(ada.user_id), jwks["keys"][0]["x"], "Traceback", "jwt."):
            assert secret not in response.text, (name, secret)
    assert (await client.get(f"{AUTH}/me", headers=ada.headers)).status_code == 200  # the real one works


async def test_expired_and_not_yet_valid_tokens_are_401(
    client: httpx.AsyncClient, ada: SignedIn, clock: ManualClock
) -> None:
    start = clock.now()
    clock.advance(timedelta(minutes=16))  # past the 15-minute lifetime and the leeway
    expired = await client.get(f"{AUTH}/me", headers=ada.headers)
    assert_problem(expired, 401, "token-expired")
    assert response_is_bearer_challenge(expired)

    clock.set(start - timedelta(hours=1))  # the token's nbf and iat are an hour ahead now
    early = await client.get(f"{AUTH}/me", headers=ada.headers)
    assert_problem(early, 401, "invalid-credentials")
    assert response_is_bearer_challenge(early)


def response_is_bearer_challenge(response: httpx.Response) -> bool:
    return response.headers.get("www-authenticate", "").startswith("Bearer")


# --- brute force -----------------------------------------------------------------------------------


async def test_guessing_is_limited_per_account_and_address_with_retry_after(
    client: httpx.AsyncClient, ada: SignedIn
) -> None:
    answers = [
        await client.post(f"{AUTH}/login", json={"email": ada.email, "password": f"guess number {i}"})
        for i in range(5)  # the sign-in of `ada` counted one
    ]
    assert [a.status_code for a in answers] == [401, 401, 401, 401, 429]
    assert 0 < int(answers[-1].headers["retry-after"]) <= 60
    assert_problem(answers[-1], 429, "rate-limited")
    # From this address even the right password waits: the guesser cannot tell a hit from a miss.
    right = await client.post(f"{AUTH}/login", json={"email": ada.email, "password": STRONG_PASSWORD})
    assert right.status_code == 429


async def test_a_stranger_cannot_lock_the_owner_out(app: FastAPI, ada: SignedIn) -> None:
    """ASVS 6.3.1: lockout must not be a denial of service. The per-account limit is per address too."""
    async with client_from(app, "198.51.100.66") as stranger:
        for i in range(10):
            await stranger.post(f"{AUTH}/login", json={"email": ada.email, "password": f"guess number {i}"})
        locked = await stranger.post(f"{AUTH}/login", json={"email": ada.email, "password": STRONG_PASSWORD})
        assert locked.status_code == 429
    async with client_from(app, "192.0.2.10") as owner:
        login = await owner.post(f"{AUTH}/login", json={"email": ada.email, "password": STRONG_PASSWORD})
        assert login.status_code == 200, login.text


async def test_guessing_spread_over_many_addresses_is_still_bounded(app: FastAPI, ada: SignedIn) -> None:
    """Ten times the per-address limit across all addresses (50 here); then every address waits."""
    statuses = []
    for n in range(12):
        async with client_from(app, f"198.51.100.{n + 1}") as bot:
            for i in range(5):
                guess = await bot.post(
                    f"{AUTH}/login", json={"email": ada.email, "password": f"guess {n} {i}"}
                )
                statuses.append(guess.status_code)
    assert statuses.count(401) == 50 - 1  # the sign-in of `ada` counted one
    async with client_from(app, "192.0.2.10") as owner:
        blocked = await owner.post(f"{AUTH}/login", json={"email": ada.email, "password": STRONG_PASSWORD})
        assert blocked.status_code == 429


# --- account enumeration ---------------------------------------------------------------------------


def comparable(response: httpx.Response) -> tuple[int, Any, list[str]]:
    """Status, body and header names and values, minus what differs per request."""
    body = response.json()
    if isinstance(body, dict):
        body.pop("request_id", None)
    varying = {"x-request-id", "content-length", "date"}
    headers = sorted(f"{k}: {v}" for k, v in response.headers.items() if k not in varying)
    return response.status_code, body, headers


@pytest.mark.parametrize(
    ("path", "body"),
    [
        ("/register", {"password": STRONG_PASSWORD, "display_name": "Someone"}),
        ("/password/forgot", {}),
        ("/verify-email/resend", {}),
        ("/login", {"password": "a wrong password 123"}),
    ],
    ids=["register", "forgot-password", "resend-verification", "login"],
)
async def test_known_and_unknown_addresses_get_the_same_answer(
    client: httpx.AsyncClient, users: Users, path: str, body: dict[str, str]
) -> None:
    known = (await users.register("known@example.com")).email  # unverified, so resend would send
    answers = [
        await client.post(f"{AUTH}{path}", json={**body, "email": email})
        for email in (known, "unknown@example.com")
    ]
    assert answers[0].status_code < 500
    assert comparable(answers[0]) == comparable(answers[1])


TIMING_ROUNDS = 150


class TestLoginTiming:
    @pytest.fixture
    def module_settings(self) -> dict[str, ModuleSettings]:
        unlimited = "100000/minute"
        return {
            "auth": AuthSettings(
                **CHEAP_ARGON2, login_rate_per_account=unlimited, login_rate_per_ip=unlimited
            )
        }

    async def test_login_takes_as_long_for_an_unknown_address(
        self, client: httpx.AsyncClient, users: Users, container: Container
    ) -> None:
        """Median time of a failed login for an existing and an unknown address, interleaved.

        The bound is a fraction of one password verification, so skipping `dummy_verify` for unknown
        addresses (a gap of a whole verification) would fail this test.
        """
        known = (await users.register("known@example.com")).email
        hasher = PasswordHasher(AuthSettings(**CHEAP_ARGON2))
        stored = await hasher.hash(STRONG_PASSWORD)
        verify_times = []
        for _ in range(20):
            started = time.perf_counter()
            await hasher.verify(stored, "a wrong password 123")
            verify_times.append(time.perf_counter() - started)
        one_verification = statistics.median(verify_times)

        async def failed_login(email: str) -> float:
            started = time.perf_counter()
            response = await client.post(
                f"{AUTH}/login", json={"email": email, "password": "a wrong password 123"}
            )
            elapsed = time.perf_counter() - started
            assert response.status_code == 401, response.text
            return elapsed

        await failed_login("warm-up@example.com")  # the dummy hash is made on first use
        timings: dict[str, list[float]] = {"known": [], "unknown": []}
        for i in range(TIMING_ROUNDS):
            timings["known"].append(await failed_login(known))
            timings["unknown"].append(await failed_login(f"nobody{i}@example.com"))
        known_median, unknown_median = (statistics.median(t) for t in timings.values())
        gap = abs(known_median - unknown_median)
        bound = one_verification / 2
        print(
            f"\nlogin median known {known_median * 1000:.2f} ms, unknown {unknown_median * 1000:.2f} ms, "
            f"gap {gap * 1000:.2f} ms; one verification {one_verification * 1000:.2f} ms, "
            f"bound {bound * 1000:.2f} ms"
        )
        assert gap < bound


# --- CSRF ------------------------------------------------------------------------------------------


async def test_no_response_sets_a_cookie(client: httpx.AsyncClient, users: Users, ada: SignedIn) -> None:
    """Credentials travel only in the Authorization header, which a browser never adds by itself:
    with no cookie credentials, cross-site request forgery has nothing to ride on."""
    responses = [
        await client.post(f"{AUTH}/login", json={"email": ada.email, "password": STRONG_PASSWORD}),
        await client.post(f"{AUTH}/login", json={"email": ada.email, "password": "wrong password 123"}),
        await client.post(f"{AUTH}/refresh", json={"refresh_token": ada.refresh_token}),
        await client.get(f"{AUTH}/me", headers=ada.headers),
        await client.get(f"{AUTH}/sessions", headers=ada.headers),
        await client.get("/docs"),
        await client.get("/api/v1/nothing-here"),
    ]
    for response in responses:
        assert "set-cookie" not in response.headers, response.request.url


async def test_a_token_in_a_cookie_is_not_a_credential(client: httpx.AsyncClient, ada: SignedIn) -> None:
    for name in ("access_token", "Authorization", "session", "token"):
        response = await client.get(f"{AUTH}/me", headers={"Cookie": f"{name}={ada.access_token}"})
        assert_problem(response, 401, "not-authenticated")


def test_no_code_reads_or_sets_cookies() -> None:
    """Keeps the CSRF answer true: a route that starts using cookies must come with CSRF protection."""
    needles = ("set_cookie", "cookies", "cookie(", "apikeycookie", "set-cookie")
    offenders = [
        f"{path.relative_to(SRC)}: {needle}"
        for path in sorted(SRC.rglob("*.py"))
        for needle in needles
        if needle in path.read_text().lower()
    ]
    assert offenders == []
