"""The composition root in a split topology: one service's modules, remote clients for the others' contracts,
internal routes behind the service credential, and refusals that say what to change.

Two services run in this process (their HTTP calls go through `httpx.ASGITransport`); the processes,
NATS and nginx of a real split deployment are in tests/e2e.
"""

from __future__ import annotations

import uuid
from collections.abc import AsyncIterator
from dataclasses import dataclass
from pathlib import Path

import httpx
import pytest
from fastapi import FastAPI
from pydantic import SecretStr

from splitstone.bootstrap import MODULES
from splitstone.kernel.app import create_app
from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.errors import ServiceUnavailable
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.secrets import MissingSecretError
from splitstone.kernel.settings import Environment, Settings
from splitstone.kernel.topology import Topology, TopologyError
from splitstone.modules.auth.api import AuthApi, UserNotFound
from splitstone.modules.billing.api import BillingApi
from splitstone.modules.projects.api import ProjectsApi
from tests.kernel.messaging.conftest import NATS_URL

TOKEN = "test-service-token-0123456789"
SPLIT = Topology.model_validate(
    {
        "events": "nats",
        "services": {
            "identity": {"modules": ["auth"], "url": "http://127.0.0.1:18101"},
            # projects and billing, and any module added since
            "core": {
                "modules": [m.name for m in MODULES if m.name not in ("auth", "notifications")],
                "url": "http://127.0.0.1:18102",
            },
            "notify": {"modules": ["notifications"], "url": "http://127.0.0.1:18103"},
        },
    }
)


@dataclass
class TwoServices:
    identity: Container
    core: Container
    identity_app: FastAPI
    core_app: FastAPI


def _settings(settings: Settings, **changes: object) -> Settings:
    return settings.model_copy(
        update={"service_token": SecretStr(TOKEN), "event_transport": "nats", "nats_url": NATS_URL, **changes}
    )


@pytest.fixture
async def services(settings: Settings, clock: ManualClock) -> AsyncIterator[TwoServices]:
    identity = Container.build(_settings(settings), MODULES, clock=clock, topology=SPLIT, service="identity")
    identity_app = create_app(identity)
    core = Container.build(
        _settings(settings),
        MODULES,
        clock=clock,
        rate_limiter=RateLimiter("memory://"),
        topology=SPLIT,
        service="core",
        remote_transport=httpx.ASGITransport(app=identity_app),
    )
    try:
        yield TwoServices(identity, core, identity_app, create_app(core))
    finally:
        await core.aclose()
        await identity.aclose()


def _client(app: FastAPI) -> httpx.AsyncClient:
    return httpx.AsyncClient(transport=httpx.ASGITransport(app=app), base_url="http://service")


async def test_a_service_runs_its_own_modules_and_calls_the_others_through_their_contracts(
    services: TwoServices,
) -> None:
    core = services.core
    assert {m.name for m in core.modules} == set(SPLIT.services["core"].modules) >= {"billing", "projects"}
    assert set(core.remote_modules) == {"auth"}
    assert core.remote_modules["auth"].name == "identity"
    # Local contracts are the implementations; auth's is a client of the identity service.
    assert core.contracts[BillingApi] is core.implementations["billing"]
    assert core.contracts[ProjectsApi] is core.implementations["projects"]
    remote_auth = core.contracts[AuthApi]
    assert remote_auth is not services.identity.implementations["auth"]

    # A contract error crosses back as the contract's own exception type.
    with pytest.raises(UserNotFound):
        await remote_auth.get_user(uuid.uuid4())

    # A user registered in identity is seen by core through the contract, exactly as identity sees them.
    async with _client(services.identity_app) as http:
        credentials = {"email": "ada@example.com", "password": "granite quarry splits 7 ways"}
        registered = await http.post("/api/v1/auth/register", json={**credentials, "display_name": "Ada"})
        assert registered.status_code == 202, registered.text
        login = await http.post("/api/v1/auth/login", json=credentials)
        assert login.status_code == 200, login.text
        me = await http.get(
            "/api/v1/auth/me", headers={"Authorization": f"Bearer {login.json()['access_token']}"}
        )
        user_id = uuid.UUID(me.json()["id"])
    remote_user = await remote_auth.get_user(user_id)
    assert remote_user.email == "ada@example.com"
    assert remote_user == await services.identity.implementations["auth"].get_user(user_id)  # type: ignore[attr-defined]


async def test_internal_routes_need_the_service_credential_and_stay_out_of_the_public_schema(
    services: TwoServices,
) -> None:
    async with _client(services.identity_app) as http:
        body = {"user_id": str(uuid.uuid4())}
        refused = await http.post("/internal/auth/get_user", json=body)
        assert refused.status_code == 401
        assert refused.headers["content-type"].startswith("application/problem+json")
        wrong = await http.post("/internal/auth/get_user", json=body, headers={"X-Service-Token": "guess"})
        assert wrong.status_code == 401
        allowed = await http.post("/internal/auth/get_user", json=body, headers={"X-Service-Token": TOKEN})
        assert allowed.status_code == 404
        assert allowed.json()["code"] == "user-not-found"
        schema = (await http.get("/openapi.json")).json()
        assert not [path for path in schema["paths"] if path.startswith("/internal")]
        # The identity service serves auth's routes only.
        assert any(path.startswith("/api/v1/auth") for path in schema["paths"])
        assert not any("/projects" in path or "/billing" in path for path in schema["paths"])


async def test_readiness_includes_the_services_a_service_calls(services: TwoServices) -> None:
    async with _client(services.core_app) as http:
        ready = await http.get("/readyz")
        assert ready.status_code == 200, ready.text
        body = ready.json()
        assert body["service"] == "core"
        assert body["modules"] == dict.fromkeys(SPLIT.services["core"].modules, "ok")
        assert body["services"] == {"identity": "ok"}
        assert body["events"] == "ok"  # NATS answers


async def test_a_called_service_that_does_not_answer_is_a_503_and_makes_the_caller_unready(
    settings: Settings, clock: ManualClock
) -> None:
    # Nothing listens at the identity service's address: the calls fail fast instead of hanging.
    core = Container.build(_settings(settings), MODULES, clock=clock, topology=SPLIT, service="core")
    try:
        with pytest.raises(ServiceUnavailable, match="auth"):
            await core.contracts[AuthApi].get_user(uuid.uuid4())
        async with _client(create_app(core)) as http:
            ready = await http.get("/readyz")
        assert ready.status_code == 503
        assert ready.json()["services"]["identity"].startswith("unavailable at http://127.0.0.1:18101")
    finally:
        await core.aclose()


def test_the_in_process_transport_is_refused_when_events_cross_services(
    settings: Settings, tmp_path: Path
) -> None:
    with pytest.raises(TopologyError) as refused:
        Container.build(
            _settings(settings, event_transport="inprocess"), MODULES, topology=SPLIT, service="notify"
        )
    message = str(refused.value)
    assert "in-process event transport cannot carry events between services" in message
    assert "auth.UserRegistered (auth in 'identity' → notifications in 'notify')" in message
    assert "SPLITSTONE_EVENT_TRANSPORT=nats" in message


def test_a_split_topology_needs_to_know_which_service_this_is(settings: Settings) -> None:
    with pytest.raises(TopologyError, match="say which one this process is"):
        Container.build(_settings(settings), MODULES, topology=SPLIT)
    with pytest.raises(TopologyError, match="no service named 'billing'"):
        Container.build(_settings(settings), MODULES, topology=SPLIT, service="billing")


async def test_the_monolith_serves_no_internal_routes(settings: Settings) -> None:
    monolith = Container.build(settings, MODULES)
    try:
        assert monolith.service_token is None
        assert monolith.remote_modules == {}
        async with _client(create_app(monolith)) as http:
            response = await http.post("/internal/auth/get_user", json={}, headers={"X-Service-Token": "x"})
        assert response.status_code == 404
    finally:
        await monolith.aclose()


def test_production_refuses_a_split_service_without_an_explicit_service_token(settings: Settings) -> None:
    production = settings.model_copy(
        update={"env": Environment.PRODUCTION, "event_transport": "nats", "service_token": None}
    )
    with pytest.raises(MissingSecretError, match="SPLITSTONE_SERVICE_TOKEN is not set"):
        Container.build(production, MODULES, topology=SPLIT, service="core")


async def test_the_default_monolith_listens_on_any_host_ipv6_included(settings: Settings) -> None:
    for host in ("0.0.0.0", "::"):  # noqa: S104 (the interfaces a server may bind)
        monolith = Container.build(settings.model_copy(update={"host": host}), MODULES)
        try:
            assert monolith.service is not None
            assert monolith.service.host == host
        finally:
            await monolith.aclose()
