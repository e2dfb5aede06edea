"""The seam of the split topology, with real processes, PostgreSQL, NATS and nginx.

- The notify service down while users register loses nothing: the emails go out once it is back.
- A service that is down makes the requests that need it fail fast with a 503 problem, never hang:
  through nginx for the routes it serves, and from the service that calls its contract.
- One trace id follows a request through nginx, a contract call and an event, in every service's logs.
"""

from __future__ import annotations

import asyncio
import secrets
import signal
import time
from collections.abc import AsyncIterator, Iterator
from pathlib import Path

import httpx
import pytest

from splitstone.kernel.proxy.nginx import find_nginx
from tests.conftest import require_service
from tests.e2e.conftest import RunningServer
from tests.e2e.test_auth_journey import PASSWORD, bearer, sign_up
from tests.kernel.messaging.conftest import NATS_URL, jetstream_answers
from tests.support.mailbox import Mailbox, smtp_server
from tests.support.split import SERVICES, SplitDeployment, split_deployment

pytestmark = [pytest.mark.e2e, pytest.mark.backends("postgres")]

PROBLEM = "application/problem+json"
FAST = 3.0  # seconds: a failure answered within this is "fast" (nginx connects with a 1 s timeout)


@pytest.fixture
def mailbox() -> Iterator[Mailbox]:
    with smtp_server() as received:
        yield received


@pytest.fixture
def split(backend: str, mailbox: Mailbox, tmp_path: Path) -> Iterator[SplitDeployment]:
    """Every service as its own API and worker processes, started one by one, and nginx in front."""
    assert backend == "postgres"
    require_service(asyncio.run(jetstream_answers(NATS_URL)), f"NATS with JetStream at {NATS_URL}")
    require_service(find_nginx() is not None, "nginx")
    with split_deployment(tmp_path / "split", mailbox.port, NATS_URL) as deployment:
        env = deployment.env()
        deployment.migrate(env)
        for service in SERVICES:
            deployment.start(service, env)
        deployment.start_proxy(env)
        try:
            deployment.wait_ready([*SERVICES])
            yield deployment
        except BaseException:
            print(deployment.logs())
            raise


@pytest.fixture
async def http(split: SplitDeployment) -> AsyncIterator[httpx.AsyncClient]:
    async with httpx.AsyncClient(base_url=split.public_url, timeout=30) as client:
        yield client


async def test_users_registered_while_notify_is_down_get_their_emails_when_it_is_back(
    split: SplitDeployment, http: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    split.stop("notify", signal.SIGKILL)  # a crash, not a goodbye: its API and worker die at once

    people = [f"user{i}@example.com" for i in range(3)]
    for email in people:
        response = await http.post(
            "/api/v1/auth/register", json={"email": email, "password": PASSWORD, "display_name": email}
        )
        assert response.status_code == 202, response.text
    await asyncio.sleep(1.5)
    assert [mailbox.messages(email) for email in people] == [[], [], []]  # nobody sends them yet

    split.start("notify", split.env())
    split.wait_ready(["notify"])
    for email in people:
        await mailbox.wait_for(email, containing="/verify-email?token=", within=30)
    await asyncio.sleep(1.0)
    assert [len(mailbox.messages(email)) for email in people] == [1, 1, 1]  # once each, not twice


async def test_requests_for_a_stopped_service_fail_fast_with_a_503_problem(
    split: SplitDeployment, http: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    server = RunningServer(base_url=split.public_url, mailbox=mailbox, deployment="split")
    owner = await sign_up(http, server, "owner@example.com")
    auth = bearer(owner["access_token"])
    org = await http.post("/api/v1/orgs", json={"name": "Seam"}, headers=auth)
    assert org.status_code == 201, org.text
    projects = f"/api/v1/orgs/{org.json()['id']}/projects"
    assert (await http.get(projects, headers=auth)).status_code == 200

    # core down: nginx answers its routes with a problem, at once.
    split.stop("core")
    started = time.monotonic()
    response = await http.get(projects, headers=auth)
    assert time.monotonic() - started < FAST
    assert response.status_code == 503
    assert response.headers["content-type"].startswith(PROBLEM)
    assert response.json()["code"] == "service-unavailable"
    # identity still serves what needs only identity.
    assert (await http.get("/api/v1/auth/me", headers=auth)).status_code == 200

    split.start("core", split.env())
    split.wait_ready(["core"])
    assert (await http.get(projects, headers=auth)).status_code == 200

    # identity down: core still verifies the token itself (JWKS), but authorizing the member is a call
    # to identity, which fails fast with core's own 503 problem.
    split.stop("identity")
    started = time.monotonic()
    response = await http.get(projects, headers=auth)
    assert time.monotonic() - started < FAST
    assert response.status_code == 503, response.text
    body = response.json()
    assert response.headers["content-type"].startswith(PROBLEM)
    assert body["code"] == "service-unavailable"
    assert "auth" in body["detail"]
    ready = await http.get(f"{split.url('core')}/readyz")
    assert ready.status_code == 503
    assert ready.json()["services"]["identity"].startswith("unavailable")

    split.start("identity", split.env())
    split.wait_ready(["identity", "core"])
    assert (await http.get(projects, headers=auth)).status_code == 200


async def test_one_trace_follows_a_request_through_every_service_it_touches(
    split: SplitDeployment, http: httpx.AsyncClient, mailbox: Mailbox
) -> None:
    """A client's traceparent reaches core (through nginx), auth's service (a contract call), and the
    notify service's worker (an event through NATS): one trace id in the logs of all three."""
    server = RunningServer(base_url=split.public_url, mailbox=mailbox, deployment="split")
    owner = await sign_up(http, server, "tracer@example.com")
    org = await http.post("/api/v1/orgs", json={"name": "Traced"}, headers=bearer(owner["access_token"]))
    assert org.status_code == 201, org.text

    call_trace = secrets.token_hex(16)
    listed = await http.get(
        f"/api/v1/orgs/{org.json()['id']}/projects",
        headers={
            **bearer(owner["access_token"]),
            "traceparent": f"00-{call_trace}-{secrets.token_hex(8)}-01",
        },
    )
    assert listed.status_code == 200, listed.text

    event_trace = secrets.token_hex(16)
    registered = await http.post(
        "/api/v1/auth/register",
        json={"email": "traced@example.com", "password": PASSWORD, "display_name": "Traced"},
        headers={"traceparent": f"00-{event_trace}-{secrets.token_hex(8)}-01"},
    )
    assert registered.status_code == 202
    await mailbox.wait_for("traced@example.com", containing="/verify-email?token=", within=30)

    def logged(service: str, trace: str, *words: str) -> bool:
        lines = (split.root / f"{service}.log").read_text(errors="replace").splitlines()
        return any(f"trace_id={trace}" in line and all(w in line for w in words) for line in lines)

    assert logged("core", call_trace, "path=/api/v1/orgs/")  # the request, in core's access log
    assert logged("identity", call_trace, "path=/internal/auth/authorize")  # core's call to auth
    assert logged("identity", event_trace, "path=/api/v1/auth/register")
    assert logged("notify", event_trace, "email sent")  # auth.UserRegistered, handled in notify's worker
