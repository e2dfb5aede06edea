"""Auth seen from another service: tokens verified with auth's JWKS, API keys asked of auth and cached.

A real auth (the `container` fixture) serves its app over `httpx.ASGITransport`; the remote side gets it
through `Network`, which counts the JWKS fetches and can be cut, as a wire to another service could.
"""

from __future__ import annotations

import asyncio
import base64
import hashlib
import hmac
import inspect
import json
from collections import Counter
from collections.abc import AsyncIterator, Awaitable, Callable
from datetime import timedelta
from typing import Any
from uuid import UUID, uuid4

import httpx
import jwt
import pytest
from cryptography.hazmat.primitives.serialization import load_pem_private_key
from fastapi import FastAPI
from pydantic import SecretStr

from splitstone.bootstrap import MODULES
from splitstone.kernel.app import create_app
from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.errors import DomainError, ServiceUnavailable
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.module import RemoteContext
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.settings import ModuleSettings, Settings
from splitstone.kernel.topology import Topology
from splitstone.modules.auth import module as auth_module
from splitstone.modules.auth.api import AuthApi, InvalidCredentials, Permission, Principal, UserNotFound
from splitstone.modules.auth.remote import JWKS_PATH, PrincipalCache, RemoteAuth, build_remote
from splitstone.modules.auth.service import AuthService
from splitstone.modules.auth.settings import AuthSettings
from splitstone.modules.auth.tokens import AccessTokenExpired, TokenService, generate_signing_key_pem
from tests.modules.auth.conftest import SignedIn, Users
from tests.modules.auth.org_helpers import create_api_key, create_org

KEY_PEM = generate_signing_key_pem()
AUTH_URL = "http://identity.internal:8001"
TTL = timedelta(minutes=15)
REFRESH = timedelta(seconds=30)  # the default remote_jwks_refresh_seconds
CACHE_TTL = timedelta(seconds=30)  # the default remote_principal_cache_seconds


class Network(httpx.AsyncBaseTransport):
    """The wire to auth's service: into its app in this process; counts JWKS fetches; can be cut."""

    def __init__(self, app: FastAPI) -> None:
        self.requests: Counter[str] = Counter()  # by path
        self.down = False
        self.serve(app)

    @property
    def jwks_fetches(self) -> int:
        return self.requests[JWKS_PATH]

    def serve(self, app: FastAPI) -> None:
        """Auth restarted: the same address now reaches this app."""
        self._app = httpx.ASGITransport(app=app)

    async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
        if self.down:
            raise httpx.ConnectError("connection refused", request=request)
        await asyncio.sleep(0.005)  # a wire takes time: concurrent requests really overlap
        self.requests[request.url.path] += 1
        return await self._app.handle_async_request(request)


class CountingClient:
    """Stands in for the generated client: each call goes to auth's implementation, and is counted."""

    def __init__(self, auth: object) -> None:
        self._auth = auth
        self.calls: Counter[str] = Counter()

    def __getattr__(self, name: str) -> Callable[..., Awaitable[Any]]:
        method = getattr(self._auth, name)

        async def call(*args: Any, **kwargs: Any) -> Any:
            self.calls[name] += 1
            return await method(*args, **kwargs)

        return call


@pytest.fixture
def module_settings() -> dict[str, ModuleSettings]:
    return {"auth": AuthSettings(jwt_private_key=SecretStr(KEY_PEM))}


@pytest.fixture
def local(container: Container) -> AuthService:
    """Auth's own implementation, in its own service."""
    service = container.implementations["auth"]
    assert isinstance(service, AuthService)
    return service


@pytest.fixture
def network(app: FastAPI) -> Network:
    return Network(app)


@pytest.fixture
def auth_client(local: AuthService) -> CountingClient:
    return CountingClient(local)


@pytest.fixture
async def http(network: Network) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(transport=network) as pooled:
        yield pooled


def remote_auth(
    http: httpx.AsyncClient, client: object, clock: ManualClock, settings: AuthSettings | None = None
) -> RemoteAuth:
    context = RemoteContext(
        name="auth",
        settings=Settings(),
        module_settings=settings or AuthSettings(),
        clock=clock,
        client=client,
        base_url=AUTH_URL,
        http=http,
    )
    remote = auth_module.module.remote
    assert remote is not None
    built = remote(context)
    assert isinstance(built, RemoteAuth)
    return built


@pytest.fixture
def remote(http: httpx.AsyncClient, auth_client: CountingClient, clock: ManualClock) -> RemoteAuth:
    """Auth as another service sees it."""
    return remote_auth(http, auth_client, clock)


def tokens_at(clock: ManualClock, pem: str = KEY_PEM, **overrides: Any) -> TokenService:
    options: dict[str, Any] = {"issuer": "splitstone", "audience": "splitstone", "access_ttl": TTL}
    options.update(overrides)
    return TokenService(pem, clock=clock, **options)


def claims(clock: ManualClock, **changes: Any) -> dict[str, Any]:
    now = int(clock.now().timestamp())
    base: dict[str, Any] = {
        "iss": "splitstone",
        "aud": "splitstone",
        "sub": str(uuid4()),
        "sid": str(uuid4()),
        "iat": now,
        "nbf": now,
        "exp": now + 900,
        "jti": str(uuid4()),
    }
    base.update(changes)
    return {k: v for k, v in base.items() if v is not None}


def signed(payload: dict[str, Any], pem: str = KEY_PEM, **header: Any) -> str:
    key = load_pem_private_key(pem.encode(), password=None)
    kid = tokens_at(ManualClock(), pem).kid
    return jwt.encode(payload, key, algorithm="EdDSA", headers={"kid": kid, "typ": "at+jwt", **header})  # type: ignore[arg-type]


def b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def unb64(segment: str) -> bytes:
    return base64.urlsafe_b64decode(segment + "=" * (-len(segment) % 4))


Outcome = Principal | tuple[type[DomainError], str, int, str]


async def outcome(auth: AuthApi, authorization: str) -> Outcome:
    """What `resolve_principal` answers: the principal, or the error's type, code, status and detail."""
    try:
        return await auth.resolve_principal(authorization)
    except DomainError as error:
        return (type(error), error.code, error.status, error.detail)


async def assert_same(local: AuthService, remote: RemoteAuth, authorization: str) -> Outcome:
    here, there = await outcome(remote, authorization), await outcome(local, authorization)
    assert here == there
    return here


# -- access tokens --------------------------------------------------------------------------------------


async def test_a_token_issued_by_auth_verifies_remotely_to_the_same_principal(
    users: Users, local: AuthService, remote: RemoteAuth, network: Network, auth_client: CountingClient
) -> None:
    user = await users.signed_in()

    principal = await assert_same(local, remote, f"Bearer {user.access_token}")

    assert principal == Principal(kind="user", user_id=user.user_id, session_id=user.session_id)
    for _ in range(5):
        assert await remote.resolve_principal(f"bearer  {user.access_token} ") == principal
    assert network.jwks_fetches == 1  # fetched once, then from the cache
    assert auth_client.calls["resolve_principal"] == 0  # verified here, never asked of auth


def _tampered(clock: ManualClock) -> str:
    header, payload, signature = tokens_at(clock).issue_access_token(uuid4(), uuid4())[0].split(".")
    forged = json.loads(unb64(payload))
    forged["sub"] = str(uuid4())
    return f"{header}.{b64(json.dumps(forged).encode())}.{signature}"


def _alg_none(clock: ManualClock) -> str:
    kid = tokens_at(clock).kid
    header = b64(json.dumps({"alg": "none", "typ": "at+jwt", "kid": kid}).encode())
    return f"{header}.{b64(json.dumps(claims(clock)).encode())}."


def _hs256_with_the_public_key(clock: ManualClock) -> str:
    tokens = tokens_at(clock)
    jwk = tokens.jwks()["keys"][0]
    header = b64(json.dumps({"alg": "HS256", "typ": "at+jwt", "kid": tokens.kid}).encode())
    payload = b64(json.dumps(claims(clock)).encode())
    signature = hmac.new(jwk["x"].encode(), f"{header}.{payload}".encode(), hashlib.sha256).digest()
    return f"{header}.{payload}.{b64(signature)}"


FORGED_AND_STALE: dict[str, tuple[Callable[[ManualClock], str], str, str]] = {
    "expired": (
        lambda clock: tokens_at(ManualClock(clock.now() - TTL - timedelta(minutes=1))).issue_access_token(
            uuid4(), uuid4()
        )[0],
        "token-expired",
        "expired",
    ),
    "not-yet-valid": (
        lambda clock: tokens_at(ManualClock(clock.now() + timedelta(minutes=5))).issue_access_token(
            uuid4(), uuid4()
        )[0],
        "invalid-credentials",
        "not valid yet",
    ),
    "tampered": (_tampered, "invalid-credentials", "signature"),
    "alg-none": (_alg_none, "invalid-credentials", "EdDSA"),
    "hs256-confusion": (_hs256_with_the_public_key, "invalid-credentials", "EdDSA"),
    "wrong-audience": (
        lambda clock: tokens_at(clock, audience="another-app").issue_access_token(uuid4(), uuid4())[0],
        "invalid-credentials",
        "audience",
    ),
    "wrong-issuer": (
        lambda clock: tokens_at(clock, issuer="someone-else").issue_access_token(uuid4(), uuid4())[0],
        "invalid-credentials",
        "issuer",
    ),
    "not-an-access-token": (lambda clock: signed(claims(clock), typ="JWT"), "invalid-credentials", "access"),
    "missing-jti": (lambda clock: signed(claims(clock, jti=None)), "invalid-credentials", "'jti'"),
    "iat-not-a-number": (lambda clock: signed(claims(clock, iat="soon")), "invalid-credentials", "'iat'"),
    "subject-not-a-uuid": (lambda clock: signed(claims(clock, sub="admin")), "invalid-credentials", "user"),
    "another-key": (
        lambda clock: tokens_at(clock, generate_signing_key_pem()).issue_access_token(uuid4(), uuid4())[0],
        "invalid-credentials",
        "unknown key",
    ),
    "garbage": (lambda clock: "not.a.jwt", "invalid-credentials", "malformed"),
}


@pytest.mark.parametrize("case", FORGED_AND_STALE)
async def test_forged_and_stale_tokens_fail_remotely_exactly_as_in_auth(
    local: AuthService, remote: RemoteAuth, clock: ManualClock, case: str
) -> None:
    make, code, detail = FORGED_AND_STALE[case]

    result = await assert_same(local, remote, f"Bearer {make(clock)}")

    assert not isinstance(result, Principal), "a forged or stale token verified"
    error_type, error_code, status, message = result
    assert (error_code, status) == (code, 401)
    assert issubclass(error_type, AccessTokenExpired if code == "token-expired" else InvalidCredentials)
    assert detail in message


async def test_expiry_follows_the_injected_clock_with_the_same_leeway(
    users: Users, local: AuthService, remote: RemoteAuth, clock: ManualClock
) -> None:
    user = await users.signed_in()
    authorization = f"Bearer {user.access_token}"

    clock.advance(TTL + timedelta(seconds=29))  # past exp, within the 30 s leeway
    assert isinstance(await assert_same(local, remote, authorization), Principal)

    clock.advance(timedelta(seconds=1))
    result = await assert_same(local, remote, authorization)
    assert not isinstance(result, Principal)
    assert result[1] == "token-expired"


@pytest.mark.parametrize(
    "authorization",
    ["", "   ", "Bearer", "Bearer    ", "Basic dXNlcjpwYXNz", "Token abc", "ssk_abc", "Bearer ssk_short"],
)
async def test_bad_authorization_values_fail_as_in_auth(
    local: AuthService, remote: RemoteAuth, auth_client: CountingClient, authorization: str
) -> None:
    result = await assert_same(local, remote, authorization)

    assert not isinstance(result, Principal)
    assert result[2] == 401
    assert auth_client.calls["resolve_principal"] == 0  # refused here, without asking auth


# -- the JWKS: rotation, forged kids, auth unreachable ------------------------------------------------------


async def test_a_new_signing_key_is_fetched_once_then_verifies(
    users: Users,
    remote: RemoteAuth,
    network: Network,
    settings: Settings,
    clock: ManualClock,
    events: EventRecorder,
) -> None:
    before = await users.signed_in()
    assert (await remote.resolve_principal(f"Bearer {before.access_token}")).kind == "user"
    assert network.jwks_fetches == 1

    # Auth restarts with a new signing key, at the same address, on the same database.
    restarted = Container.build(
        settings,
        MODULES,
        clock=clock,
        recorder=events,
        rate_limiter=RateLimiter("memory://"),
        module_settings={"auth": AuthSettings(jwt_private_key=SecretStr(generate_signing_key_pem()))},
    )
    try:
        app = create_app(restarted)
        network.serve(app)
        async with httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://t") as client:
            tokens = await Users(client, events).login(before.email)
        new_token = tokens["access_token"]
        assert (
            jwt.get_unverified_header(new_token)["kid"]
            != jwt.get_unverified_header(before.access_token)["kid"]
        )

        # Refetches are at most one per interval, so a new key may be refused for that long after the last.
        with pytest.raises(InvalidCredentials, match="unknown key"):
            await remote.resolve_principal(f"Bearer {new_token}")
        assert network.jwks_fetches == 1
        clock.advance(REFRESH)

        # Then many requests with the new kid at once share one fetch.
        principals = await asyncio.gather(
            *(remote.resolve_principal(f"Bearer {new_token}") for _ in range(20))
        )

        assert {p.user_id for p in principals} == {before.user_id}
        assert network.jwks_fetches == 2
        assert (await remote.resolve_principal(f"Bearer {new_token}")).user_id == before.user_id
        assert network.jwks_fetches == 2
    finally:
        await restarted.aclose()


async def test_a_storm_of_unknown_kids_fetches_at_most_once_per_interval(
    users: Users, remote: RemoteAuth, network: Network, clock: ManualClock
) -> None:
    user = await users.signed_in()
    await remote.resolve_principal(f"Bearer {user.access_token}")
    assert network.jwks_fetches == 1

    async def storm(size: int) -> None:
        forged = [signed(claims(clock), kid=f"forged-{uuid4()}") for _ in range(size)]
        results = await asyncio.gather(
            *(outcome(remote, f"Bearer {token}") for token in forged), return_exceptions=False
        )
        assert all(not isinstance(r, Principal) and r[1] == "invalid-credentials" for r in results)
        assert all(not isinstance(r, Principal) and "unknown key" in r[3] for r in results)

    await storm(50)
    assert network.jwks_fetches == 1  # the keys were just fetched
    clock.advance(REFRESH)
    await storm(50)
    assert network.jwks_fetches == 2  # one refetch for the whole storm
    await storm(50)
    clock.advance(REFRESH - timedelta(seconds=1))
    await storm(50)
    assert network.jwks_fetches == 2  # none more within the interval

    clock.advance(timedelta(seconds=1))
    await storm(50)
    assert network.jwks_fetches == 3
    assert (await remote.resolve_principal(f"Bearer {user.access_token}")).user_id == user.user_id


async def test_known_keys_keep_working_while_auth_is_unreachable(
    users: Users, remote: RemoteAuth, network: Network, clock: ManualClock
) -> None:
    user = await users.signed_in()
    await remote.resolve_principal(f"Bearer {user.access_token}")

    network.down = True
    clock.advance(timedelta(minutes=10))  # past the JWKS max age: a refetch is tried, fails, keys stay

    assert (await remote.resolve_principal(f"Bearer {user.access_token}")).user_id == user.user_id
    with pytest.raises(InvalidCredentials, match="unknown key"):
        await remote.resolve_principal(f"Bearer {signed(claims(clock), generate_signing_key_pem())}")

    network.down = False
    clock.advance(REFRESH)
    assert (await remote.resolve_principal(f"Bearer {user.access_token}")).user_id == user.user_id
    assert network.jwks_fetches == 2  # the first, and the refresh once auth answered again


async def test_without_any_key_an_unreachable_auth_is_a_503_not_a_bad_token(
    users: Users, remote: RemoteAuth, network: Network, clock: ManualClock
) -> None:
    user = await users.signed_in()
    network.down = True

    with pytest.raises(ServiceUnavailable) as caught:
        await remote.resolve_principal(f"Bearer {user.access_token}")
    assert caught.value.status == 503
    assert caught.value.code == "service-unavailable"

    network.down = False
    with pytest.raises(ServiceUnavailable):  # retried no sooner than a second later
        await remote.resolve_principal(f"Bearer {user.access_token}")
    clock.advance(timedelta(seconds=1))
    assert (await remote.resolve_principal(f"Bearer {user.access_token}")).user_id == user.user_id
    assert network.jwks_fetches == 1  # the refused attempt never reached auth


async def test_a_key_auth_stops_publishing_stops_verifying_after_the_max_age(clock: ManualClock) -> None:
    old, new = tokens_at(clock), tokens_at(clock, generate_signing_key_pem())
    published = [old]
    fetches = 0

    def jwks(request: httpx.Request) -> httpx.Response:
        nonlocal fetches
        fetches += 1
        return httpx.Response(200, json={"keys": [k for t in published for k in t.jwks()["keys"]]})

    async with httpx.AsyncClient(transport=httpx.MockTransport(jwks)) as pooled:
        remote = remote_auth(pooled, CountingClient(object()), clock)
        token, _ = old.issue_access_token(uuid4(), uuid4())
        await remote.resolve_principal(f"Bearer {token}")

        published[:] = [new]
        clock.advance(timedelta(seconds=299))
        assert (await remote.resolve_principal(f"Bearer {token}")).kind == "user"
        assert fetches == 1

        clock.advance(timedelta(seconds=1))  # the default max age, 300 s
        with pytest.raises(InvalidCredentials, match="unknown key"):
            await remote.resolve_principal(f"Bearer {token}")
        assert fetches == 2


def _entry(tokens: TokenService, **changes: Any) -> dict[str, Any]:
    entry: dict[str, Any] = {**tokens.jwks()["keys"][0], **changes}
    return {k: v for k, v in entry.items() if v is not None}


@pytest.mark.parametrize(
    "changes",
    [
        pytest.param({"kty": "EC"}, id="kty"),
        pytest.param({"crv": "X25519"}, id="crv"),
        pytest.param({"alg": "HS256"}, id="alg"),
        pytest.param({"alg": None}, id="no-alg"),
        pytest.param({"use": "enc"}, id="use"),
        pytest.param({"x": "AAAA"}, id="short-x"),
        pytest.param({"x": 42}, id="x-not-text"),
        pytest.param({"d": "private"}, id="private-part"),
    ],
)
async def test_jwks_entries_that_are_not_ed25519_signing_keys_are_ignored(
    clock: ManualClock, changes: dict[str, Any]
) -> None:
    tokens = tokens_at(clock)
    other = tokens_at(clock, generate_signing_key_pem())
    document = {"keys": [_entry(tokens, **changes), _entry(other), "junk", {"kid": tokens.kid}]}
    transport = httpx.MockTransport(lambda request: httpx.Response(200, json=document))

    async with httpx.AsyncClient(transport=transport) as pooled:
        remote = remote_auth(pooled, CountingClient(object()), clock)
        assert (
            await remote.resolve_principal(f"Bearer {other.issue_access_token(uuid4(), uuid4())[0]}")
        ).kind
        with pytest.raises(InvalidCredentials, match="unknown key"):
            await remote.resolve_principal(f"Bearer {tokens.issue_access_token(uuid4(), uuid4())[0]}")


@pytest.mark.parametrize(
    "response",
    [
        pytest.param(httpx.Response(500, json={"keys": []}), id="server-error"),
        pytest.param(httpx.Response(200, text="<html>"), id="not-json"),
        pytest.param(httpx.Response(200, json=["keys"]), id="not-a-jwks"),
        pytest.param(httpx.Response(200, json={"keys": []}), id="no-keys"),
    ],
)
async def test_a_broken_jwks_is_a_failed_fetch(clock: ManualClock, response: httpx.Response) -> None:
    transport = httpx.MockTransport(lambda request: response)
    token, _ = tokens_at(clock).issue_access_token(uuid4(), uuid4())

    async with httpx.AsyncClient(transport=transport) as pooled:
        remote = remote_auth(pooled, CountingClient(object()), clock)
        with pytest.raises(ServiceUnavailable):
            await remote.resolve_principal(f"Bearer {token}")


# -- API keys -------------------------------------------------------------------------------------------


async def api_key(client: httpx.AsyncClient, users: Users) -> tuple[SignedIn, str, dict[str, Any]]:
    owner = await users.signed_in()
    org_id = await create_org(client, owner)
    return owner, org_id, await create_api_key(client, owner, org_id, scopes=["projects:read"])


async def test_an_api_key_is_resolved_by_auth_then_cached_for_the_ttl(
    client: httpx.AsyncClient,
    users: Users,
    local: AuthService,
    remote: RemoteAuth,
    auth_client: CountingClient,
    clock: ManualClock,
) -> None:
    _, org_id, key = await api_key(client, users)
    authorization = f"Bearer {key['secret']}"

    principal = await remote.resolve_principal(authorization)

    assert principal == await local.resolve_principal(authorization)
    assert principal.kind == "api_key"
    assert principal.org_id == UUID(org_id)
    assert principal.scopes == {Permission.PROJECTS_READ}
    clock.advance(CACHE_TTL - timedelta(seconds=1))
    assert await remote.resolve_principal(authorization) == principal
    assert auth_client.calls["resolve_principal"] == 1

    clock.advance(timedelta(seconds=1))
    assert await remote.resolve_principal(authorization) == principal
    assert auth_client.calls["resolve_principal"] == 2


async def test_a_revoked_key_keeps_working_remotely_until_the_ttl_ends(
    client: httpx.AsyncClient, users: Users, remote: RemoteAuth, clock: ManualClock
) -> None:
    owner, org_id, key = await api_key(client, users)
    authorization = f"Bearer {key['secret']}"
    await remote.resolve_principal(authorization)

    response = await client.delete(f"/api/v1/orgs/{org_id}/api-keys/{key['id']}", headers=owner.headers)
    assert response.status_code == 204, response.text

    assert (await remote.resolve_principal(authorization)).kind == "api_key"  # the documented window
    clock.advance(CACHE_TTL)
    with pytest.raises(InvalidCredentials, match="revoked"):
        await remote.resolve_principal(authorization)


async def test_failed_api_key_resolutions_are_not_cached(
    client: httpx.AsyncClient,
    users: Users,
    local: AuthService,
    remote: RemoteAuth,
    auth_client: CountingClient,
) -> None:
    _, _, key = await api_key(client, users)
    wrong = f"Bearer {key['secret'][:-4]}AAAA"

    for _ in range(3):
        result = await assert_same(local, remote, wrong)
        assert not isinstance(result, Principal)
        assert (result[1], result[3]) == ("invalid-credentials", "The API key is not valid.")
    assert auth_client.calls["resolve_principal"] == 3


async def test_a_zero_ttl_asks_auth_every_time(
    client: httpx.AsyncClient,
    users: Users,
    http: httpx.AsyncClient,
    auth_client: CountingClient,
    clock: ManualClock,
) -> None:
    _, _, key = await api_key(client, users)
    remote = remote_auth(http, auth_client, clock, AuthSettings(remote_principal_cache_seconds=0))

    for _ in range(3):
        assert (await remote.resolve_principal(f"Bearer {key['secret']}")).kind == "api_key"
    assert auth_client.calls["resolve_principal"] == 3


def test_the_cache_is_bounded_and_keyed_by_digest(clock: ManualClock) -> None:
    cache = PrincipalCache(clock, ttl=CACHE_TTL, max_entries=2)
    keys = [f"ssk_{'a' * 12}_{n}{'s' * 40}" for n in range(3)]
    principals = [Principal(kind="api_key", api_key_id=uuid4(), org_id=uuid4()) for _ in keys]

    for key, principal in zip(keys, principals, strict=True):
        cache.put(key, principal)

    assert len(cache) == 2
    assert cache.get(keys[0]) is None  # the oldest made room
    assert [cache.get(k) for k in keys[1:]] == principals[1:]
    stored = repr(vars(cache))
    assert not any(key in stored or key[4:20] in stored for key in keys)


# -- everything else is auth's to answer ----------------------------------------------------------------


async def test_other_methods_are_calls_to_auth(
    users: Users,
    local: AuthService,
    remote: RemoteAuth,
    auth_client: CountingClient,
    client: httpx.AsyncClient,
) -> None:
    owner = await users.signed_in()
    org_id = UUID(await create_org(client, owner))
    principal = await remote.resolve_principal(f"Bearer {owner.access_token}")

    assert await remote.get_user(owner.user_id) == await local.get_user(owner.user_id)
    someone = [owner.user_id, uuid4()]
    assert await remote.get_users(someone) == await local.get_users(someone)
    assert await remote.get_member(org_id, owner.user_id) == await local.get_member(org_id, owner.user_id)
    assert await remote.list_members(org_id) == await local.list_members(org_id)
    access = await remote.authorize(principal, org_id, Permission.MEMBERS_MANAGE)
    assert access.role == "owner"
    with pytest.raises(UserNotFound):
        await remote.get_user(uuid4())
    assert auth_client.calls == Counter(
        {"get_user": 2, "get_users": 1, "get_member": 1, "list_members": 1, "authorize": 1}
    )


async def test_auth_declares_its_remote_side_implementing_every_contract_method(clock: ManualClock) -> None:
    assert auth_module.module.remote is build_remote

    async with httpx.AsyncClient() as http:
        remote = remote_auth(http, object(), clock)

    contract = {n for n, m in vars(AuthApi).items() if callable(m) and not n.startswith("_")}
    assert contract == {
        "resolve_principal",
        "authorize",
        "get_user",
        "get_users",
        "get_member",
        "list_members",
    }
    for name in contract:
        method = getattr(remote, name)
        assert inspect.iscoroutinefunction(method), name
        assert inspect.signature(method) == inspect.signature(getattr(AuthApi, name).__get__(remote)), name


# -- in a split deployment ------------------------------------------------------------------------------

SERVICE_TOKEN = "remote-auth-test-service-token-0123"
SPLIT = Topology.model_validate(
    {
        "events": "nats",
        "services": {
            "identity": {"modules": ["auth"], "url": "http://127.0.0.1:18201"},
            # projects and billing, and any module added since
            "core": {
                "modules": [m.name for m in MODULES if m.name not in ("auth", "notifications")],
                "url": "http://127.0.0.1:18202",
            },
            "notify": {"modules": ["notifications"], "url": "http://127.0.0.1:18203"},
        },
    }
)


async def test_in_a_split_deployment_other_services_verify_tokens_themselves(
    settings: Settings, clock: ManualClock, events: EventRecorder
) -> None:
    """Through the composition root and the generated client: core runs projects, identity runs auth."""
    split = settings.model_copy(update={"service_token": SecretStr(SERVICE_TOKEN), "event_transport": "nats"})
    identity = Container.build(
        split, MODULES, clock=clock, recorder=events, topology=SPLIT, service="identity"
    )
    identity_app = create_app(identity)
    network = Network(identity_app)
    core = Container.build(
        split,
        MODULES,
        clock=clock,
        rate_limiter=RateLimiter("memory://"),
        topology=SPLIT,
        service="core",
        remote_transport=network,
    )
    try:
        assert isinstance(core.contracts[AuthApi], RemoteAuth)
        transport = httpx.ASGITransport(app=identity_app)
        async with httpx.AsyncClient(transport=transport, base_url="http://identity") as client:
            users = Users(client, events)
            owner, org_id, key = await api_key(client, users)
        resolve = "/internal/auth/resolve_principal"
        projects = f"/api/v1/orgs/{org_id}/projects"

        async with httpx.AsyncClient(
            transport=httpx.ASGITransport(app=create_app(core)), base_url="http://core"
        ) as http:
            for _ in range(3):
                response = await http.get(projects, headers={"Authorization": f"Bearer {owner.access_token}"})
                assert response.status_code == 200, response.text
            assert network.jwks_fetches == 1
            assert network.requests[resolve] == 0  # the token was verified in core

            for _ in range(3):
                response = await http.get(projects, headers={"Authorization": f"Bearer {key['secret']}"})
                assert response.status_code == 200, response.text
            assert network.requests[resolve] == 1  # the API key was asked of identity once

            wrong = await http.get(projects, headers={"Authorization": f"Bearer {key['secret'][:-4]}AAAA"})
            assert wrong.status_code == 401
            assert wrong.json()["code"] == "invalid-credentials"  # identity's error, mapped back
            assert network.requests[resolve] == 2

            forged = await http.get(
                projects,
                headers={"Authorization": f"Bearer {signed(claims(clock), generate_signing_key_pem())}"},
            )
            assert forged.status_code == 401
            assert forged.headers["content-type"].startswith("application/problem+json")
    finally:
        await core.aclose()
        await identity.aclose()
