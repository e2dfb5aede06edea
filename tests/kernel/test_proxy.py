"""The reverse proxy in front of a split topology: real nginx and the built-in one, the same tests.

Behind the proxy are tiny echo services (uvicorn, on free ports) that answer which service they are and
what they received; the proxy gets the product's real route table, read from the modules' routers.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import signal
import subprocess
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import httpx
import pytest
from fastapi import APIRouter
from starlette.types import Receive, Scope, Send

from splitstone.bootstrap import MODULES
from splitstone.kernel.module import Module
from splitstone.kernel.proxy.builtin import ProxyApp
from splitstone.kernel.proxy.nginx import (
    find_nginx,
    nginx_command,
    nginx_config,
    prepare_prefix,
    worker_user,
    write_docs,
)
from splitstone.kernel.proxy.routes import (
    Route,
    RouteConflict,
    RouteTable,
    check_routes,
    collect_routes_of,
    template_regex,
)
from splitstone.kernel.topology import Topology
from tests.conftest import require_service
from tests.kernel.conftest import notes_module
from tests.support.mailbox import free_port
from tests.support.servers import RunningApp, serve_in_thread, start_in_thread

# The shipped split: the services of topologies/split.toml and their modules.
SERVICES = {
    name: service.modules
    for name, service in Topology.load(
        Path(__file__).parents[2] / "topologies" / "split.toml", environ={}
    ).services.items()
}
PROBLEM = "application/problem+json"
BODY_LIMIT = 64 * 1024
OWN_PROBLEM = b'{"type":"/problems/busy","title":"Busy","status":503,"code":"busy","detail":"mine"}'


# --- the route table ---------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def table() -> RouteTable:
    return asyncio.run(collect_routes_of(MODULES))


def test_the_table_is_read_from_the_modules_routers(table: RouteTable) -> None:
    templates = table.templates()
    assert set(templates) == {module.name for module in MODULES if module.router is not None}
    assert "/api/v1/orgs/{org_id}/billing/usage" in templates["billing"]
    assert "/api/v1/auth/login" in templates["auth"]
    assert "/.well-known/jwks.json" in templates["auth"]
    assert "/api/v1/orgs/{org_id}/projects/{project_ref}/tasks" in templates["projects"]
    # every documented path of the monolith is some module's (the probes are the proxy's)
    documented = set(table.openapi["paths"]) - {"/healthz", "/readyz"}
    assert documented <= {r.path for r in table.routes}
    [stream] = [r for r in table.routes if r.path == "/api/v1/notifications/stream"]
    assert stream.streaming
    assert not any(r.streaming for r in table.routes if r is not stream)
    [usage] = [r for r in table.routes if r.path == "/api/v1/orgs/{org_id}/billing/usage"]
    assert usage.methods == {"GET", "POST"}


@pytest.mark.parametrize(
    ("template", "regex", "matches", "refuses"),
    [
        (
            "/api/v1/billing/plans",
            "^/api/v1/billing/plans/?$",
            ["/api/v1/billing/plans"],
            ["/api/v1/billing"],
        ),
        (
            "/api/v1/orgs/{org_id}/billing/usage",
            "^/api/v1/orgs/[^/]+/billing/usage/?$",
            ["/api/v1/orgs/42/billing/usage", "/api/v1/orgs/42/billing/usage/"],
            [
                "/api/v1/orgs/4/2/billing/usage",
                "/api/v1/orgs//billing/usage",
                "/api/v1/orgs/42/billing/usagex",
            ],
        ),
        (
            "/invoices/{invoice_id}.html",
            r"^/invoices/[^/]+\.html/?$",
            ["/invoices/7.html"],
            ["/invoices/7xhtml", "/invoices/7"],
        ),
        ("/files/{name:path}", "^/files/.*$", ["/files/a/b/c.txt", "/files/"], ["/file"]),
        ("/n/{n:int}", "^/n/[0-9]+/?$", ["/n/12"], ["/n/x"]),
        ("/", "^/$", ["/"], ["/x"]),
    ],
)
def test_templates_become_anchored_regexes(
    template: str, regex: str, matches: list[str], refuses: list[str]
) -> None:
    assert template_regex(template) == regex
    for path in matches:
        assert re.match(regex, path), path
    for path in refuses:
        assert not re.match(regex, path), path


def test_a_path_two_modules_could_claim_is_refused() -> None:
    routes = (
        Route("notes", "/api/v1/notes/{note_id}", frozenset({"GET"})),
        Route("memos", "/api/v1/notes/mine", frozenset({"GET"})),
    )
    with pytest.raises(RouteConflict, match=r"'notes'.*'memos'"):
        check_routes(RouteTable(routes, {}))
    # the same module may overlap itself: it is one service either way
    check_routes(RouteTable((*routes[:1], Route("notes", "/api/v1/notes/mine", frozenset({"GET"}))), {}))
    # distinct literal segments do not overlap
    check_routes(RouteTable((routes[0], Route("memos", "/api/v1/memos/{id}", frozenset({"GET"}))), {}))


@pytest.mark.parametrize("path", ["/internal/notes/add", "/healthz", "/services/x", "/docs"])
def test_a_module_may_not_serve_what_the_proxy_answers(path: str) -> None:
    with pytest.raises(RouteConflict, match="the proxy answers"):
        check_routes(RouteTable((Route("notes", path, frozenset({"GET"})),), {}))


class MemosApi:
    async def add(self, text: str) -> None: ...


async def test_collecting_builds_the_routers_of_kernel_only_modules() -> None:
    def memos_router(_: object) -> APIRouter:
        router = APIRouter(prefix="/api/v1/memos")

        @router.get("/{memo_id}")
        async def get(memo_id: str) -> dict[str, str]:
            return {}

        return router

    memos = Module(name="memos", contract=MemosApi, factory=lambda ctx: MemosApi(), router=memos_router)
    table = await collect_routes_of([notes_module(), memos])
    assert table.templates()["memos"] == ["/api/v1/memos/{memo_id}"]
    assert "/api/v1/notes/{note_id}" in table.templates()["notes"]

    def clashing_router(_: object) -> APIRouter:
        router = APIRouter()

        @router.get("/api/v1/notes/mine")
        async def mine() -> None: ...

        return router

    clash = Module(name="memos", contract=MemosApi, factory=lambda ctx: MemosApi(), router=clashing_router)
    with pytest.raises(RouteConflict, match="both match some paths"):
        await collect_routes_of([notes_module(), clash])


# --- echo services -----------------------------------------------------------------------------------


@dataclass
class Echo:
    """A service that answers who it is and what it got; `ready` and the requests it saw are switchable."""

    name: str
    port: int = field(default_factory=free_port)
    ready: bool = True
    seen: list[dict[str, Any]] = field(default_factory=list)
    running: RunningApp | None = None

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            while (message := await receive())["type"] != "lifespan.shutdown":
                await send({"type": "lifespan.startup.complete"})
            await send({"type": "lifespan.shutdown.complete"})
            return
        body = b""
        while True:
            message = await receive()
            body += message.get("body", b"")
            if not message.get("more_body"):
                break
        headers = {k.decode().lower(): v.decode() for k, v in scope["headers"]}
        request = {
            "service": self.name,
            "method": scope["method"],
            "path": scope["path"],
            "raw_path": scope["raw_path"].decode(),
            "query": scope["query_string"].decode(),
            "headers": headers,
            "body": len(body),
        }
        self.seen.append(request)
        if scope["path"] == "/readyz" and not self.ready:
            await _respond(send, 503, b'{"status":"not ready"}', PROBLEM)
        elif headers.get("x-echo-status") == "503":  # the service's own problem: must pass untouched
            await _respond(send, 503, OWN_PROBLEM, PROBLEM, extra=[(b"retry-after", b"7")])
        elif scope["path"].endswith("/stream"):
            await send(
                {
                    "type": "http.response.start",
                    "status": 200,
                    "headers": [(b"content-type", b"text/event-stream")],
                }
            )
            await send({"type": "http.response.body", "body": b"data: first\n\n", "more_body": True})
            await asyncio.sleep(1.5)
            await send({"type": "http.response.body", "body": b"data: second\n\n", "more_body": False})
        else:
            await _respond(send, 200, json.dumps(request).encode(), "application/json")

    def start(self) -> None:
        self.running = start_in_thread(
            self, port=self.port, lifespan="auto", name=f"echo-{self.name}", start_timeout=10, stop_timeout=10
        )

    def stop(self) -> None:
        if self.running is not None:
            self.running.stop()


async def _respond(
    send: Send, status: int, body: bytes, media_type: str, extra: list[tuple[bytes, bytes]] | None = None
) -> None:
    headers = [(b"content-type", media_type.encode()), (b"content-length", str(len(body)).encode())]
    await send({"type": "http.response.start", "status": status, "headers": headers + (extra or [])})
    await send({"type": "http.response.body", "body": body})


# --- the proxies -------------------------------------------------------------------------------------


@dataclass
class Proxied:
    base_url: str
    services: dict[str, Echo]
    topology: Topology

    def owner(self, module: str) -> Echo:
        return self.services[self.topology.service_of(module).name]


def _topology(echoes: dict[str, Echo], public_port: int) -> Topology:
    return Topology.model_validate(
        {
            "public_url": f"http://127.0.0.1:{public_port}",
            "events": "nats",
            "services": {
                name: {"modules": list(SERVICES[name]), "url": f"http://127.0.0.1:{echo.port}"}
                for name, echo in echoes.items()
            },
        }
    )


def _wait_until_answering(url: str) -> None:
    deadline = time.monotonic() + 10
    while True:
        try:
            httpx.get(f"{url}/healthz", timeout=1)
            return
        except httpx.HTTPError:
            if time.monotonic() > deadline:
                raise
            time.sleep(0.02)


@contextlib.contextmanager
def _nginx(topology: Topology, table: RouteTable, prefix: Path) -> Iterator[None]:
    require_service(find_nginx() is not None, "nginx")
    prepare_prefix(prefix)
    write_docs(prefix / "docs", table)
    config = prefix / "nginx.conf"
    config.write_text(
        nginx_config(
            topology,
            table,
            prefix=prefix,
            docs_dir=prefix / "docs",
            max_body_bytes=BODY_LIMIT,
            user=worker_user(),
        )
    )
    checked = subprocess.run(  # noqa: S603 (nginx -t on the config under test)
        nginx_command(config, prefix, test=True), capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    process = subprocess.Popen(  # noqa: S603 (nginx, with the config under test)
        nginx_command(config, prefix), stderr=subprocess.PIPE, start_new_session=True
    )
    try:
        _wait_until_answering(topology.public_url)
        yield
    finally:
        process.send_signal(signal.SIGQUIT)
        try:
            process.wait(timeout=10)
        except subprocess.TimeoutExpired:
            process.kill()
            process.wait()


@contextlib.contextmanager
def _builtin(topology: Topology, table: RouteTable) -> Iterator[None]:
    app = ProxyApp(topology, table, max_body_bytes=BODY_LIMIT)
    port = int(topology.public_url.rsplit(":", 1)[1])
    with serve_in_thread(
        app, port=port, lifespan="auto", name="builtin-proxy", start_timeout=10, stop_timeout=10
    ):
        yield


@pytest.fixture(params=["nginx", "builtin"])
def proxied(request: pytest.FixtureRequest, table: RouteTable, tmp_path: Path) -> Iterator[Proxied]:
    echoes = {name: Echo(name) for name in SERVICES}
    for echo in echoes.values():
        echo.start()
    topology = _topology(echoes, free_port())
    proxy = (
        _nginx(topology, table, tmp_path / "nginx") if request.param == "nginx" else _builtin(topology, table)
    )
    try:
        with proxy:
            yield Proxied(topology.public_url, echoes, topology)
    finally:
        for echo in echoes.values():
            echo.stop()


@pytest.fixture
def http(proxied: Proxied) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=proxied.base_url, timeout=10) as client:
        yield client


def _concrete(template: str) -> str:
    return re.sub(r"\{[^}:]+:path\}", "a/b", re.sub(r"\{[^}:]+(:(str|int|uuid))?\}", "7", template))


def _problem(response: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert response.status_code == status, response.text
    assert response.headers["content-type"].startswith(PROBLEM)
    body: dict[str, Any] = response.json()
    assert body["status"] == status
    assert body["code"] == code
    assert body["type"] == f"/problems/{code}"
    assert body["title"]
    assert body["request_id"] == response.headers["x-request-id"]
    return body


# --- routing -----------------------------------------------------------------------------------------


def test_every_route_reaches_the_service_of_its_module(
    proxied: Proxied, http: httpx.Client, table: RouteTable
) -> None:
    for route in table.routes:
        if route.streaming:
            continue
        path = _concrete(route.path)
        method = sorted(route.methods)[0]
        response = http.request(method, path, content=b"{}" if method in ("POST", "PUT", "PATCH") else None)
        assert response.status_code == 200, (route.path, response.text)
        seen = response.json()
        expected = proxied.topology.service_of(route.module).name
        assert (seen["service"], seen["path"], seen["method"]) == (expected, path, method), route.path


def test_the_request_arrives_as_sent_with_forwarding_headers(proxied: Proxied, http: httpx.Client) -> None:
    response = http.post(
        "/api/v1/orgs/a%20b/projects?x=1&y=%2F",
        content=b'{"name": "x"}',
        headers={
            "X-Request-ID": "req-42",
            "X-Service-Token": "stolen",
            "traceparent": "00-" + "a" * 32 + "-" + "b" * 16 + "-01",
        },
    )
    seen = response.json()
    assert seen["service"] == "core"
    assert seen["raw_path"] == "/api/v1/orgs/a%20b/projects"
    assert seen["path"] == "/api/v1/orgs/a b/projects"
    assert seen["query"] == "x=1&y=%2F"
    assert seen["body"] == len(b'{"name": "x"}')
    headers = seen["headers"]
    assert headers["host"] == proxied.base_url.removeprefix("http://")
    assert headers["x-forwarded-for"] == "127.0.0.1"
    assert headers["x-forwarded-proto"] == "http"
    assert headers["x-request-id"] == "req-42"
    assert headers["traceparent"].startswith("00-aaaa")
    assert "x-service-token" not in headers  # a client cannot present a service's credential

    generated = http.get("/api/v1/billing/plans").json()["headers"]["x-request-id"]
    assert re.fullmatch(r"[0-9a-f]{32}", generated)
    refused = http.get("/api/v1/billing/plans", headers={"X-Request-ID": 'bad "id"'}).json()
    assert re.fullmatch(r"[0-9a-f]{32}", refused["headers"]["x-request-id"])


def test_internal_contract_routes_are_never_proxied(proxied: Proxied, http: httpx.Client) -> None:
    for path in ("/internal/auth/resolve_principal", "/internal/auth", "/internal"):
        response = http.post(path, json={}, headers={"X-Service-Token": "guess"})
        _problem(response, 404, "not-found")
    assert not any(s.seen for s in proxied.services.values())


def test_an_unknown_path_is_a_404_problem(proxied: Proxied, http: httpx.Client) -> None:
    body = _problem(http.get("/api/v1/nowhere", headers={"X-Request-ID": "r-1"}), 404, "not-found")
    assert body["detail"] == "No resource at /api/v1/nowhere."
    assert body["request_id"] == "r-1"
    _problem(http.get("/services/nobody/readyz"), 404, "not-found")
    assert not any(s.seen for s in proxied.services.values())


def test_the_proxy_answers_healthz_itself(proxied: Proxied, http: httpx.Client) -> None:
    for echo in proxied.services.values():
        echo.stop()
    response = http.get("/healthz")
    assert response.status_code == 200
    assert response.json() == {"status": "ok"}
    refused = http.delete("/healthz")
    _problem(refused, 405, "method-not-allowed")
    assert refused.headers["allow"] == "GET, HEAD"


def test_readyz_is_ready_when_every_service_is(proxied: Proxied, http: httpx.Client) -> None:
    ready = http.get("/readyz")
    assert ready.status_code == 200, ready.text
    assert ready.json()["status"] == "ready"
    assert set(ready.json()["services"]) == set(SERVICES)

    proxied.services["core"].ready = False
    body = _problem(http.get("/readyz"), 503, "not-ready")
    assert "core" in body["detail"]
    proxied.services["core"].ready = True

    proxied.services["notify"].stop()
    started = time.monotonic()
    body = _problem(http.get("/readyz"), 503, "not-ready")
    assert "notify" in body["detail"]
    assert time.monotonic() - started < 3


def test_each_service_has_its_probes_under_services(proxied: Proxied, http: httpx.Client) -> None:
    seen = http.get("/services/core/readyz").json()
    assert (seen["service"], seen["path"]) == ("core", "/readyz")
    seen = http.get("/services/identity/openapi.json").json()
    assert (seen["service"], seen["path"]) == ("identity", "/openapi.json")


def test_a_service_that_is_down_is_a_fast_503_problem(proxied: Proxied, http: httpx.Client) -> None:
    proxied.services["core"].stop()
    started = time.monotonic()
    response = http.post("/api/v1/orgs/7/projects", json={"name": "x"}, headers={"X-Request-ID": "down-1"})
    elapsed = time.monotonic() - started
    body = _problem(response, 503, "service-unavailable")
    assert "core" in body["detail"]
    assert body["request_id"] == "down-1"
    assert elapsed < 2
    # the others still answer
    assert http.get("/api/v1/auth/me").json()["service"] == "identity"


def test_a_services_own_503_problem_passes_through_untouched(proxied: Proxied, http: httpx.Client) -> None:
    response = http.get("/api/v1/billing/plans", headers={"X-Echo-Status": "503"})
    assert response.status_code == 503
    assert response.content == OWN_PROBLEM
    assert response.headers["content-type"] == PROBLEM
    assert response.headers["retry-after"] == "7"


def test_a_body_over_the_limit_is_refused_by_the_proxy(proxied: Proxied, http: httpx.Client) -> None:
    response = http.post("/api/v1/auth/login", content=b"x" * (BODY_LIMIT + 1))
    _problem(response, 413, "request-too-large")
    assert not any(s.seen for s in proxied.services.values())
    assert http.post("/api/v1/auth/login", content=b"x" * BODY_LIMIT).json()["body"] == BODY_LIMIT


def test_a_stream_is_passed_on_as_it_comes(proxied: Proxied, http: httpx.Client) -> None:
    started = time.monotonic()
    with http.stream("GET", "/api/v1/notifications/stream") as response:
        assert response.status_code == 200
        chunks = response.iter_raw()
        first = next(chunks)
        arrived = time.monotonic() - started
        rest = b"".join(chunks)
    assert first == b"data: first\n\n"
    assert arrived < 1.2  # the service sends the second event 1.5 s later: nothing waited for it
    assert rest == b"data: second\n\n"


def test_the_docs_are_the_monoliths(proxied: Proxied, http: httpx.Client, table: RouteTable) -> None:
    schema = http.get("/openapi.json")
    assert schema.status_code == 200
    assert schema.headers["content-type"].startswith("application/json")
    assert schema.json()["paths"].keys() == table.openapi["paths"].keys()
    docs = http.get("/docs")
    assert docs.status_code == 200
    assert "swagger-ui" in docs.text
    assert "/openapi.json" in docs.text


# --- the shipped topologies --------------------------------------------------------------------------


@pytest.mark.parametrize("name", ["split", "monolith"])
def test_the_config_of_the_shipped_topologies_passes_nginx_t(
    name: str, table: RouteTable, tmp_path: Path
) -> None:
    require_service(find_nginx() is not None, "nginx")
    topology = Topology.load(Path(__file__).parents[2] / "topologies" / f"{name}.toml")
    prepare_prefix(tmp_path)
    config = tmp_path / "nginx.conf"
    config.write_text(nginx_config(topology, table, prefix=tmp_path, user=worker_user()))
    checked = subprocess.run(  # noqa: S603 (nginx -t on the config under test)
        nginx_command(config, tmp_path, test=True), capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr
    text = config.read_text()
    for service in topology.services.values():
        assert f"server {service.host}:{service.port} max_fails=0;" in text


def test_service_names_that_differ_only_by_dash_or_underscore_pass_nginx_t(
    table: RouteTable, tmp_path: Path
) -> None:
    require_service(find_nginx() is not None, "nginx")
    topology = Topology.model_validate(
        {
            "events": "nats",
            "services": {
                "id-p": {"modules": ["auth"], "url": "http://127.0.0.1:8101"},
                "id_p": {
                    "modules": [m.name for m in MODULES if m.name not in ("auth", "notifications")],
                    "url": "http://127.0.0.1:8102",
                },
                "notify": {"modules": ["notifications"], "url": "http://127.0.0.1:8103"},
            },
        }
    )
    prepare_prefix(tmp_path)
    config = tmp_path / "nginx.conf"
    config.write_text(nginx_config(topology, table, prefix=tmp_path, user=worker_user()))
    checked = subprocess.run(  # noqa: S603 (nginx -t on the config under test)
        nginx_command(config, tmp_path, test=True), capture_output=True, text=True, check=False
    )
    assert checked.returncode == 0, checked.stderr


# --- the built-in proxy on its own ---------------------------------------------------------------------


async def test_a_client_that_goes_away_mid_body_sends_the_service_nothing(table: RouteTable) -> None:
    topology = Topology.model_validate(
        {
            "events": "nats",
            "services": {
                name: {"modules": list(modules), "url": f"http://127.0.0.1:{9101 + i}"}
                for i, (name, modules) in enumerate(SERVICES.items())
            },
        }
    )
    sent: list[httpx.Request] = []

    def service(request: httpx.Request) -> httpx.Response:
        sent.append(request)
        raise httpx.ConnectError("only recorded", request=request)

    app = ProxyApp(topology, table, transport=httpx.MockTransport(service))
    parts: list[dict[str, Any]] = [
        {"type": "http.request", "body": b'{"name": "half', "more_body": True},
        {"type": "http.disconnect"},
    ]
    messages = iter(parts)
    responses: list[dict[str, Any]] = []

    async def receive() -> dict[str, Any]:
        return next(messages)

    async def send(message: dict[str, Any]) -> None:
        responses.append(message)

    scope = {
        "type": "http",
        "method": "POST",
        "path": "/api/v1/billing/plans",
        "raw_path": b"/api/v1/billing/plans",
        "query_string": b"",
        "headers": [(b"host", b"127.0.0.1:8000"), (b"content-length", b"40")],
        "client": ("127.0.0.1", 5000),
        "scheme": "http",
    }
    try:
        await app(scope, receive, send)  # type: ignore[arg-type]
    finally:
        await app.aclose()
    assert sent == []
    assert responses == []
