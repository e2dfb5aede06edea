"""`Idempotency-Key` for POST and PATCH routes: the first response is kept and replayed to retries.

Stripe's semantics, which the IETF draft "The Idempotency-Key HTTP Header Field"
(draft-ietf-httpapi-idempotency-key-header) writes down for HTTP:

- Without the header a route runs as usual; the header is optional.
- The first request with a key runs, and its response (status, body, `Content-Type`, `Location`, `ETag`) is
  kept for the TTL (24 h by default). A retry with the same key gets that response again, with
  `Idempotent-Replayed: true`, and the route does not run.
- A key is the caller's own: the module's `scope` resolver says who the caller is, and the same key
  from two callers is two keys. Keys live in the module's own schema, so modules never share them.
- A retry while the first request still runs: 409 `idempotency-key-in-use`, `Retry-After: 1`.
- The same key for a different request (method, path, query or body): 422 `idempotency-key-reused`.
- Nothing is kept when the route did not act or may act differently next time: a 5xx, an exception,
  a 429, or a request that failed validation before the route ran. The key is free again.

A module opts in with `Idempotency.route_class` (see `Idempotency`).
"""

from __future__ import annotations

import asyncio
import hashlib
import json
from collections.abc import Awaitable, Callable, Coroutine
from datetime import timedelta
from typing import Any, ClassVar

import anyio
import structlog
from fastapi import Depends, Header, Request, Response
from fastapi.exceptions import RequestValidationError
from fastapi.routing import APIRoute
from starlette.types import ASGIApp, Message, Receive, Scope, Send

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory
from splitstone.kernel.http.idempotency_records import (
    DEFAULT_STALE_AFTER,
    DEFAULT_TTL,
    Claim,
    Existing,
    IdempotencyRecords,
    KeyUse,
    StoredResponse,
)
from splitstone.kernel.http.problems import problem_response

HEADER = "Idempotency-Key"
REPLAYED_HEADER = "Idempotent-Replayed"
MAX_KEY_LENGTH = 255
MAX_SCOPE_LENGTH = 200
_PRINTABLE_ASCII = "^[ -~]+$"
METHODS = frozenset({"POST", "PATCH"})
"""The methods HTTP does not make idempotent; other methods of an opted-in router are left alone."""

ScopeResolver = Callable[[Request], Awaitable[str]]
"""Who is calling, as a short string ("user:<uuid>", "api_key:<uuid>"), from the request's headers (its
body is not available to it); may raise a `DomainError`, such as `NotAuthenticated`."""

_KEPT_HEADERS = ("content-type", "location", "etag")
_HEADER_NAME = HEADER.lower().encode()
# Set on the ASGI scope when FastAPI refused the request before the endpoint ran.
_NOT_RUN = "splitstone.idempotency.not_run"

log = structlog.get_logger("splitstone.idempotency")


class Idempotency:
    """Makes a module's POST and PATCH routes honour `Idempotency-Key`.

    Built by the module (usually in its factory) from its unit of work factory and clock, and a
    `scope` resolver that names the caller. Routes opt in through `route_class`:

        router = APIRouter(prefix=..., route_class=idempotency.route_class)

    or one route at a time with `router.add_api_route(..., route_class_override=idempotency.route_class)`.
    Opted-in routes must answer with a whole body (not a stream): it is kept before it is sent.
    """

    def __init__(
        self,
        uow: UnitOfWorkFactory,
        clock: Clock,
        scope: ScopeResolver,
        *,
        ttl: timedelta = DEFAULT_TTL,
        in_progress_timeout: timedelta = DEFAULT_STALE_AFTER,
    ) -> None:
        """`ttl`: how long a key and its response are kept. `in_progress_timeout`: after how long a
        request that still holds its key is taken to have died with its process, so that a retry may
        run (a route that may run longer should get a longer timeout)."""
        self._records = IdempotencyRecords(uow, clock, ttl=ttl, stale_after=in_progress_timeout)
        self._in_progress_timeout = in_progress_timeout
        self._retrying: set[asyncio.Task[None]] = set()
        self._scope = scope
        self.header_parameter = _documented_header(ttl)
        """The dependency that documents the optional header on the opted-in operations."""
        owner = self

        class _Route(IdempotentRoute):
            idempotency = owner

        self.route_class: type[APIRoute] = _Route

    async def purge_expired(self) -> int:
        """Delete this module's expired keys (for a periodic job); returns how many."""
        return await self._records.purge_expired()

    async def serve(self, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """Answer one request to the route `app`, honouring its `Idempotency-Key` if it has one."""
        keys = [value for name, value in scope["headers"] if name == _HEADER_NAME]
        if not keys:
            await app(scope, receive, send)
            return
        request = Request(scope)
        problem = _key_problem(keys)
        if problem is not None:
            response: Response = problem_response(
                422,
                "invalid-idempotency-key",
                title="Invalid Idempotency-Key",
                detail=problem,
                request=request,
            )
            await response(scope, receive, send)
            return
        body = await _read_body(receive)
        if body is None:  # the client left before it finished sending
            return
        caller = await self._scope(request)
        if not caller or len(caller) > MAX_SCOPE_LENGTH:
            raise ValueError(f"an idempotency scope is 1 to {MAX_SCOPE_LENGTH} characters, not {caller!r}")
        use = KeyUse(
            scope=caller,
            key=keys[0].decode("ascii"),
            method=scope["method"],
            path=scope["path"],
            fingerprint=fingerprint(scope["method"], scope["path"], scope.get("query_string", b""), body),
        )
        outcome = await self._records.claim(use)
        if isinstance(outcome, Existing):
            await _answer_existing(use, outcome, request)(scope, receive, send)
            return
        await self._run(outcome, scope, _replaying(body, receive), send, app)

    async def _run(self, claim: Claim, scope: Scope, receive: Receive, send: Send, app: ASGIApp) -> None:
        """Run the route, keep (or drop) its response, then send it: kept before the client sees it."""
        start: Message | None = None
        chunks: list[bytes] = []
        settled = False

        async def capture(message: Message) -> None:
            nonlocal start, settled
            if settled or message["type"] not in ("http.response.start", "http.response.body"):
                await send(message)
                return
            if message["type"] == "http.response.start":
                start = message
                return
            chunks.append(message.get("body", b""))
            if message.get("more_body", False):
                return
            assert start is not None
            body = b"".join(chunks)
            await self._settle(claim, scope, start, body)
            settled = True
            await send(start)
            await send({"type": "http.response.body", "body": body, "more_body": False})

        try:
            await app(scope, receive, capture)
        except BaseException:
            if not settled:
                await self._release(claim)
            raise
        if not settled:
            await self._release(claim)

    async def _settle(self, claim: Claim, scope: Scope, start: Message, body: bytes) -> None:
        status: int = start["status"]
        if status >= 500 or status == 429 or scope.get(_NOT_RUN):
            await self._release(claim)
            return
        headers: dict[str, str] = {}
        for name, value in start.get("headers", ()):
            text = name.decode("latin-1").lower()
            if text in _KEPT_HEADERS and text not in headers:
                headers[text] = value.decode("latin-1")
        stored = StoredResponse(status, headers, body)
        try:
            kept = await self._records.complete(claim, stored)
        except Exception as error:
            # The response still goes out; the key is settled in the background (a database blip).
            self._retry_later(
                lambda: self._records.complete(claim, stored), claim, "keep the response", error
            )
            return
        if not kept:
            log.warning("an idempotency key was taken over while its request ran", path=claim.use.path)

    async def _release(self, claim: Claim) -> None:
        # Shielded: a cancelled request (client gone, shutdown) must still free its key.
        with anyio.CancelScope(shield=True):
            try:
                await self._records.release(claim)
            except Exception as error:
                self._retry_later(lambda: self._records.release(claim), claim, "release", error)

    def _retry_later(
        self, attempt: Callable[[], Awaitable[object]], claim: Claim, what: str, error: Exception
    ) -> None:
        """Retry settling a key in the background, with backoff, until it would go stale anyway: left
        alone, the client's retries with the same key got 409 `idempotency-key-in-use` for a minute."""
        log.warning(
            f"could not {what} of an idempotency key; retrying", path=claim.use.path, error=repr(error)
        )
        give_up_at = anyio.current_time() + self._in_progress_timeout.total_seconds()

        async def retry() -> None:
            wait = 0.25
            while anyio.current_time() + wait < give_up_at:
                await anyio.sleep(wait)
                try:
                    await attempt()
                except Exception:
                    wait = min(wait * 2, 5.0)
                else:
                    return
            log.error(f"gave up trying to {what} of an idempotency key", path=claim.use.path)

        task = asyncio.get_running_loop().create_task(retry())
        self._retrying.add(task)  # a strong reference until it ends
        task.add_done_callback(self._retrying.discard)


class IdempotentRoute(APIRoute):
    """An `APIRoute` whose POST and PATCH requests honour `Idempotency-Key`; see `Idempotency`.

    Not used directly: `Idempotency.route_class` is a subclass bound to one module's `Idempotency`.
    """

    idempotency: ClassVar[Idempotency]

    def __init__(self, path: str, endpoint: Callable[..., Any], **kwargs: Any) -> None:
        methods = {method.upper() for method in kwargs.get("methods") or ()}
        if methods & METHODS:
            documented = Depends(self.idempotency.header_parameter)
            kwargs["dependencies"] = [*(kwargs.get("dependencies") or ()), documented]
        super().__init__(path, endpoint, **kwargs)

    def get_route_handler(self) -> Callable[[Request], Coroutine[Any, Any, Response]]:
        handler = super().get_route_handler()

        async def run(request: Request) -> Response:
            try:
                return await handler(request)
            except RequestValidationError:
                request.scope[_NOT_RUN] = True
                raise

        return run

    async def handle(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["method"] in METHODS & (self.methods or set()):
            await self.idempotency.serve(scope, receive, send, super().handle)
        else:
            await super().handle(scope, receive, send)


def _documented_header(ttl: timedelta) -> Callable[..., Awaitable[None]]:
    """A dependency that only documents the header in OpenAPI; `Idempotency.serve` handles it first."""
    kept_for = f"{ttl // timedelta(hours=1)} hours" if ttl % timedelta(hours=1) == timedelta(0) else str(ttl)
    description = (
        f"Makes a retry safe: the first response to a key is kept for {kept_for} and sent again "
        f"(with `{REPLAYED_HEADER}: true`) for a retry with the same key, without acting twice. "
        "Use a new random key (a UUID) for each new request; printable ASCII, up to "
        f"{MAX_KEY_LENGTH} characters. The same key with a different request is refused (422 "
        "`idempotency-key-reused`), and a retry while the first still runs gets 409 "
        "`idempotency-key-in-use` with `Retry-After`."
    )

    # A default rather than `Annotated[...]`: annotations are strings here, and `description` is local.
    async def header(
        idempotency_key: str | None = Header(
            None,
            alias=HEADER,
            min_length=1,
            max_length=MAX_KEY_LENGTH,
            pattern=_PRINTABLE_ASCII,
            description=description,
        ),
    ) -> None:
        return None

    return header


def fingerprint(method: str, path: str, query: bytes, body: bytes) -> str:
    """What identifies a request for its key: sha256 of its method, path, query string and raw body."""
    digest = hashlib.sha256(json.dumps([method, path, query.decode("latin-1")]).encode())
    digest.update(b"\n")  # JSON has no raw newline, so the parts cannot run into each other
    digest.update(body)
    return digest.hexdigest()


def _key_problem(values: list[bytes]) -> str | None:
    """Why the key is refused, or None for a good one."""
    if len(values) > 1:
        return f"Send one {HEADER} header, not {len(values)}."
    value = values[0]
    if not value:
        return f"The {HEADER} is empty; use a new random value (such as a UUID) for each request."
    if len(value) > MAX_KEY_LENGTH:
        return f"The {HEADER} has {len(value)} characters; at most {MAX_KEY_LENGTH} are allowed."
    if not all(0x20 <= byte <= 0x7E for byte in value):
        return f"The {HEADER} may contain printable ASCII characters only."
    return None


def _answer_existing(use: KeyUse, existing: Existing, request: Request) -> Response:
    if existing.fingerprint != use.fingerprint:
        first = f"{existing.method} {existing.path}"
        if (existing.method, existing.path) == (use.method, use.path):
            first += " with a different body or query"
        return problem_response(
            422,
            "idempotency-key-reused",
            title="Idempotency-Key reused",
            detail=f"This {HEADER} was first used for {first}; use a new key for a new request.",
            request=request,
        )
    if existing.response is None:
        return problem_response(
            409,
            "idempotency-key-in-use",
            title="Idempotency-Key in use",
            detail=f"A request with this {HEADER} is still being processed; retry shortly.",
            request=request,
            headers={"Retry-After": "1"},
        )
    stored = existing.response
    return Response(stored.body, stored.status, headers={**stored.headers, REPLAYED_HEADER: "true"})


async def _read_body(receive: Receive) -> bytes | None:
    """The whole request body (the fingerprint needs it before the route reads it), or None on disconnect."""
    chunks: list[bytes] = []
    while True:
        message = await receive()
        if message["type"] == "http.disconnect":
            return None
        chunks.append(message.get("body", b""))
        if not message.get("more_body", False):
            return b"".join(chunks)


def _replaying(body: bytes, receive: Receive) -> Receive:
    """A `receive` that hands the route the body read already, then listens to the client again."""
    pending = True

    async def replay() -> Message:
        nonlocal pending
        if pending:
            pending = False
            return {"type": "http.request", "body": body, "more_body": False}
        return await receive()

    return replay
