"""A small reverse proxy (ASGI, httpx) for machines without nginx: the same routing, the same problems.

Good for local use (`splitstone up --proxy builtin`); nginx is the one to deploy. It buffers request
bodies (up to the app's limit, as nginx does) and streams responses, so Server-Sent Events pass through.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import re
import time
import uuid

import httpx
import structlog
import uvicorn
from fastapi.openapi.docs import get_swagger_ui_html
from starlette.responses import JSONResponse, Response
from starlette.types import Receive, Scope, Send

from splitstone.kernel.http.middleware import drain_oversized_body
from splitstone.kernel.proxy.routes import SERVICE_PATHS, SERVICES_PREFIX, RouteTable
from splitstone.kernel.topology import Topology

PROBLEM = "application/problem+json"
HOP_BY_HOP = frozenset(
    {
        b"connection",
        b"keep-alive",
        b"proxy-authenticate",
        b"proxy-authorization",
        b"proxy-connection",
        b"te",
        b"trailer",
        b"trailers",
        b"transfer-encoding",
        b"upgrade",
    }
)
# Replaced by the proxy (forwarding headers, the request id), or never accepted from a client (service
# credentials are for calls between services).
DROPPED = frozenset(
    {
        b"x-forwarded-proto",
        b"x-forwarded-host",
        b"x-request-id",
        b"x-service-token",
        b"x-service-name",
    }
)
_VALID_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
READY_TIMEOUT_SECONDS = 5.0
CLIENT_CLOSED_REQUEST = 499  # nginx's status (logged only: nobody is there to receive it)
KEEPALIVE_SECONDS = 4.0  # below uvicorn's 5 s keep-alive: never reuse a connection the service is closing

log = structlog.get_logger("splitstone.proxy")


class ClientGone(Exception):
    """The client disconnected before the end of its request body."""


class ProxyApp:
    """The ASGI app: `ProxyApp(topology, table)`; its lifespan opens and closes the HTTP client."""

    def __init__(
        self,
        topology: Topology,
        table: RouteTable,
        *,
        max_body_bytes: int = 1_048_576,
        connect_timeout: float = 1.0,
        read_timeout: float = 60.0,
        transport: httpx.AsyncBaseTransport | None = None,
    ) -> None:
        self.topology = topology
        self.max_body_bytes = max_body_bytes
        self._routes = [
            (re.compile(owner.route.regex), owner.service, owner.route.streaming)
            for owner in table.for_topology(topology)
        ]
        self._urls = {name: spec.url for name, spec in topology.services.items()}
        self._connect_timeout = connect_timeout
        self._read_timeout = read_timeout
        self._transport = transport
        self._client: httpx.AsyncClient | None = None
        self._openapi = json.dumps(table.openapi, separators=(",", ":")).encode()
        self._docs = bytes(
            get_swagger_ui_html(openapi_url="/openapi.json", title="splitstone - Swagger UI").body
        )

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] == "lifespan":
            await self._lifespan(receive, send)
            return
        if scope["type"] != "http":  # websockets: none of the modules serves one
            await send({"type": "websocket.close", "code": 1003})
            return
        started = time.perf_counter()
        request_id = _request_id(scope)
        status = await self._handle(scope, receive, send, request_id)
        # debug: each service logs its own access line, with the same request id
        log.debug(
            "proxied",
            method=scope["method"],
            path=scope["path"],
            status=status,
            request_id=request_id,
            duration_ms=round((time.perf_counter() - started) * 1000, 2),
        )

    async def _lifespan(self, receive: Receive, send: Send) -> None:
        while True:
            message = await receive()
            if message["type"] == "lifespan.startup":
                self._client = self._new_client()
                await send({"type": "lifespan.startup.complete"})
            elif message["type"] == "lifespan.shutdown":
                await self.aclose()
                await send({"type": "lifespan.shutdown.complete"})
                return

    def _new_client(self) -> httpx.AsyncClient:
        return httpx.AsyncClient(
            transport=self._transport,
            limits=httpx.Limits(max_keepalive_connections=16, keepalive_expiry=KEEPALIVE_SECONDS),
            follow_redirects=False,
        )

    @property
    def client(self) -> httpx.AsyncClient:
        if self._client is None:  # served without a lifespan
            self._client = self._new_client()
        return self._client

    async def aclose(self) -> None:
        if self._client is not None:
            await self._client.aclose()
            self._client = None

    async def _handle(self, scope: Scope, receive: Receive, send: Send, request_id: str) -> int:
        path: str = scope["path"]
        method: str = scope["method"]
        own = {"/healthz": self._healthz, "/readyz": self._readyz, "/openapi.json": self._openapi_json}
        if path in own or path == "/docs":
            if method not in ("GET", "HEAD"):
                return await _send(scope, receive, send, _method_not_allowed(method, path, request_id))
            if path == "/docs":
                return await _send(scope, receive, send, Response(self._docs, media_type="text/html"))
            return await _send(scope, receive, send, await own[path](request_id))
        if path == "/internal" or path.startswith("/internal/"):
            return await _send(scope, receive, send, _not_found(path, request_id))
        if path.startswith(SERVICES_PREFIX + "/"):
            _, _, rest = path.partition(SERVICES_PREFIX + "/")
            service, _, what = rest.partition("/")
            if service in self._urls and what in SERVICE_PATHS:
                return await self._forward(scope, receive, send, request_id, service, False, f"/{what}")
            return await _send(scope, receive, send, _not_found(path, request_id))
        for pattern, service, streaming in self._routes:
            if pattern.match(path):
                return await self._forward(scope, receive, send, request_id, service, streaming)
        return await _send(scope, receive, send, _not_found(path, request_id))

    async def _healthz(self, request_id: str) -> Response:
        return JSONResponse({"status": "ok"}, headers={"X-Request-ID": request_id})

    async def _openapi_json(self, request_id: str) -> Response:
        return Response(self._openapi, media_type="application/json")

    async def _readyz(self, request_id: str) -> Response:
        async def ask(url: str) -> bool:
            try:
                response = await self.client.get(
                    f"{url}/readyz",
                    headers={"X-Request-ID": request_id},
                    timeout=httpx.Timeout(READY_TIMEOUT_SECONDS, connect=self._connect_timeout),
                )
            except httpx.HTTPError:
                return False
            return response.status_code == 200

        answers = await asyncio.gather(*(ask(url) for url in self._urls.values()))
        states = {name: "ready" if ok else "not ready" for name, ok in zip(self._urls, answers, strict=True)}
        if all(answers):
            return JSONResponse({"status": "ready", "services": states}, headers={"X-Request-ID": request_id})
        first = next(name for name, state in states.items() if state != "ready")
        return _problem(
            503,
            "not-ready",
            "Not ready",
            f"The {first} service is not ready (see {SERVICES_PREFIX}/{first}/readyz).",
            request_id,
            services=states,
        )

    async def _forward(
        self,
        scope: Scope,
        receive: Receive,
        send: Send,
        request_id: str,
        service: str,
        streaming: bool,
        path: str | None = None,
    ) -> int:
        declared = _content_length(scope)
        if declared is not None and declared > self.max_body_bytes:
            await drain_oversized_body(receive, self.max_body_bytes)
            return await _send(scope, receive, send, _too_large(self.max_body_bytes, request_id))
        try:
            body = await _read_body(receive, self.max_body_bytes)
        except ClientGone:  # never send a service half a request
            return CLIENT_CLOSED_REQUEST
        if body is None:
            return await _send(scope, receive, send, _too_large(self.max_body_bytes, request_id))

        raw_path = path.encode() if path is not None else scope.get("raw_path") or scope["path"].encode()
        query = scope.get("query_string") or b""
        url = httpx.URL(self._urls[service]).copy_with(raw_path=raw_path + (b"?" + query if query else b""))
        request = self.client.build_request(
            scope["method"],
            url,
            headers=_upstream_headers(scope, request_id),
            content=body,
            timeout=httpx.Timeout(
                connect=self._connect_timeout,
                read=None if streaming else self._read_timeout,
                write=self._read_timeout,
                pool=self._read_timeout,
            ),
        )
        try:
            response = await self.client.send(request, stream=True)
        except httpx.TransportError as error:
            log.warning("service did not answer", service=service, error=f"{type(error).__name__}: {error}")
            return await _send(
                scope,
                receive,
                send,
                _problem(
                    503,
                    "service-unavailable",
                    "Service Unavailable",
                    f"The {service} service did not answer; try again later.",
                    request_id,
                ),
            )
        try:
            await send(
                {
                    "type": "http.response.start",
                    "status": response.status_code,
                    "headers": [(k, v) for k, v in response.headers.raw if k.lower() not in HOP_BY_HOP],
                }
            )
            await _relay(response, receive, send)
        except httpx.HTTPError as error:  # the service went away mid-response: the client sees it cut
            log.warning("service broke off a response", service=service, error=f"{type(error).__name__}")
        finally:
            await response.aclose()
        return response.status_code


async def _relay(response: httpx.Response, receive: Receive, send: Send) -> None:
    """Stream the body to the client until it ends, or until the client goes away (an endless SSE)."""

    async def pump() -> None:
        async for chunk in response.aiter_raw():
            await send({"type": "http.response.body", "body": chunk, "more_body": True})
        await send({"type": "http.response.body", "body": b"", "more_body": False})

    async def client_gone() -> None:
        while (await receive())["type"] != "http.disconnect":
            pass

    pumping = asyncio.create_task(pump())
    watching = asyncio.create_task(client_gone())
    try:
        await asyncio.wait({pumping, watching}, return_when=asyncio.FIRST_COMPLETED)
    finally:
        for task in (pumping, watching):
            task.cancel()
        for task in (pumping, watching):
            with contextlib.suppress(asyncio.CancelledError):
                await task
    if pumping.done() and not pumping.cancelled():
        error = pumping.exception()
        if error is not None:
            raise error


def _upstream_headers(scope: Scope, request_id: str) -> list[tuple[bytes, bytes]]:
    headers: list[tuple[bytes, bytes]] = []
    forwarded_for = b""
    host = b""
    for name, value in scope["headers"]:
        lower = name.lower()
        if lower == b"x-forwarded-for":
            forwarded_for = value
            continue
        if lower == b"host":
            host = value
        if lower in HOP_BY_HOP or lower in DROPPED:
            continue
        headers.append((name, value))
    client = scope.get("client")
    if client:
        address = client[0].encode()
        forwarded_for = forwarded_for + b", " + address if forwarded_for else address
    if forwarded_for:
        headers.append((b"x-forwarded-for", forwarded_for))
    headers.append((b"x-forwarded-proto", scope.get("scheme", "http").encode()))
    if host:
        headers.append((b"x-forwarded-host", host))
    headers.append((b"x-request-id", request_id.encode()))
    return headers


def _request_id(scope: Scope) -> str:
    for name, value in scope["headers"]:
        if name.lower() == b"x-request-id":
            text = bytes(value).decode("latin-1")
            if _VALID_REQUEST_ID.match(text):
                return text
    return uuid.uuid4().hex


def _content_length(scope: Scope) -> int | None:
    for name, value in scope["headers"]:
        if name.lower() == b"content-length":
            try:
                return int(value)
            except ValueError:
                return None
    return None


async def _read_body(receive: Receive, limit: int) -> bytes | None:
    """The whole request body, or None (the rest drained) once it passes `limit`; ClientGone mid-body."""
    chunks: list[bytes] = []
    size = 0
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            raise ClientGone
        chunk = message.get("body", b"")
        size += len(chunk)
        if size > limit:
            if message.get("more_body", False):
                await drain_oversized_body(receive, limit)
            return None
        chunks.append(chunk)
        if not message.get("more_body", False):
            return b"".join(chunks)


async def _send(scope: Scope, receive: Receive, send: Send, response: Response) -> int:
    await response(scope, receive, send)
    return response.status_code


def _problem(
    status: int, code: str, title: str, detail: str, request_id: str, **extra: object
) -> JSONResponse:
    body = {
        "type": f"/problems/{code}",
        "title": title,
        "status": status,
        "code": code,
        "detail": detail,
        "request_id": request_id,
        **extra,
    }
    return JSONResponse(body, status_code=status, media_type=PROBLEM, headers={"X-Request-ID": request_id})


def _not_found(path: str, request_id: str) -> JSONResponse:
    return _problem(404, "not-found", "Not Found", f"No resource at {path}.", request_id)


def _too_large(limit: int, request_id: str) -> JSONResponse:
    return _problem(
        413,
        "request-too-large",
        "Request Entity Too Large",
        f"The request body is larger than {limit} bytes.",
        request_id,
    )


def _method_not_allowed(method: str, path: str, request_id: str) -> JSONResponse:
    response = _problem(
        405,
        "method-not-allowed",
        "Method Not Allowed",
        f"{method} is not allowed on {path}; allowed: GET, HEAD.",
        request_id,
    )
    response.headers["Allow"] = "GET, HEAD"
    return response


def serve(
    topology: Topology,
    table: RouteTable,
    *,
    host: str,
    port: int,
    max_body_bytes: int = 1_048_576,
    connect_timeout: float = 1.0,
) -> None:
    """Serve the proxy with uvicorn until SIGINT or SIGTERM."""
    app = ProxyApp(topology, table, max_body_bytes=max_body_bytes, connect_timeout=connect_timeout)
    uvicorn.run(app, host=host, port=port, log_config=None, access_log=False, lifespan="on")
