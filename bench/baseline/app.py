"""The baseline's HTTP app: Starlette routes over one asyncpg pool, one handler per benchmarked endpoint.

Reads run their statements on one pooled connection outside any transaction; the create runs its
writes, the entitlement check, the outbox event and the usage job in one transaction. Every request
carries a trace (its `X-Request-ID` is echoed, its events and jobs store the trace), as splitstone's do.
"""

from __future__ import annotations

import json
import re
import secrets
import sys
import time
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import Any
from uuid import UUID

import asyncpg
import pydantic_core
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.requests import Request
from starlette.responses import Response
from starlette.routing import Route
from starlette.types import ASGIApp, Message, Receive, Scope, Send
from uuid6 import uuid7

from bench.baseline import sql
from bench.baseline.entitlements import TaskEntitlement
from bench.baseline.problems import Problem, problem_response, validation_failed
from bench.baseline.settings import BaselineSettings
from bench.baseline.tasks import (
    MAX_PAGE,
    NewTask,
    decode_cursor,
    encode_cursor,
    list_scope,
    match_expression,
    new_task,
    project_ref,
    search_terms,
    task_json,
    task_ref,
)
from bench.baseline.tokens import AccessTokens

API = "/api/v1"
TASK_ROLES = frozenset({"owner", "admin", "member"})  # every role holds tasks:read and tasks:write
REPORT_USAGE = "projects.report_usage"
_REQUEST_ID = re.compile(r"^[A-Za-z0-9._:\-]{1,128}$")
_TRACEPARENT = re.compile(r"^00-([0-9a-f]{32})-([0-9a-f]{16})-([0-9a-f]{2})$")
_UNSUPPORTED_FILTERS = ("status", "assignee", "label", "due_before", "due_after")

Handler = Callable[["Baseline", Request], Awaitable[Response]]


@dataclass(frozen=True)
class Trace:
    """The request's trace: its id (echoed) and the W3C trace its events and jobs continue."""

    request_id: str
    trace_id: str
    flags: str

    def next_hop(self) -> tuple[str, str]:
        """(traceparent, request_id) for a row written now: the same trace, a span of its own."""
        return f"00-{self.trace_id}-{secrets.token_hex(8)}-{self.flags}", self.request_id


class RequestContext:
    """Pure ASGI middleware: a trace per request (the caller's where valid), `X-Request-ID` echoed."""

    def __init__(self, app: ASGIApp, access_log: bool = False) -> None:
        self.app = app
        self.access_log = access_log

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            await self.app(scope, receive, send)
            return
        trace = _trace(scope)
        scope.setdefault("state", {})["trace"] = trace
        echoed = (b"x-request-id", trace.request_id.encode())
        started = time.perf_counter()
        status = 500

        async def send_with_id(message: Message) -> None:
            nonlocal status
            if message["type"] == "http.response.start":
                status = message["status"]
                message = {**message, "headers": [*message.get("headers", ()), echoed]}
            await send(message)

        try:
            await self.app(scope, receive, send_with_id)
        finally:
            if self.access_log:
                elapsed = round((time.perf_counter() - started) * 1000, 2)
                sys.stderr.write(
                    f"{datetime.now(UTC).isoformat()} [info] request [splitstone.access] "
                    f"duration_ms={elapsed} "
                    f"method={scope['method']} path={scope['path']} request_id={trace.request_id} "
                    f"status={status} trace_id={trace.trace_id}\n"
                )


def _trace(scope: Scope) -> Trace:
    request_id = traceparent = None
    for name, value in scope["headers"]:
        if name == b"x-request-id" and request_id is None:
            request_id = value.decode("latin-1")
        elif name == b"traceparent" and traceparent is None:
            traceparent = value.decode("latin-1")
    if request_id is None or not _REQUEST_ID.fullmatch(request_id):
        request_id = str(uuid7())
    parsed = _TRACEPARENT.fullmatch(traceparent or "")
    if parsed is None or parsed.group(1) == "0" * 32 or parsed.group(2) == "0" * 16:
        return Trace(request_id, secrets.token_hex(16), "01")
    return Trace(request_id, parsed.group(1), "01" if int(parsed.group(3), 16) & 1 else "00")


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> Response:
    return Response(pydantic_core.to_json(body), status, headers, media_type="application/json")


class Baseline:
    """The handlers, and what they share: the pool, the token verifier, the plan cache."""

    def __init__(self, settings: BaselineSettings) -> None:
        self.settings = settings
        self.tokens = AccessTokens(
            settings.signing_key_pem, issuer=settings.issuer, audience=settings.audience
        )
        self.entitlement = TaskEntitlement(
            catalog_path=settings.catalog_path,
            cache_seconds=settings.entitlement_cache_seconds,
            upgrade_url=settings.upgrade_url,
        )
        self._pool: asyncpg.Pool | None = None

    @property
    def pool(self) -> asyncpg.Pool:
        if self._pool is None:
            raise RuntimeError("the baseline's pool is opened by the app's lifespan")
        return self._pool

    async def open(self) -> None:
        size = self.settings.pool_size
        # The same cap on connections as one of splitstone's module engines (pool_size + 2 x overflow).
        # Released connections are not reset: nothing here sets session state, locks or LISTENs, and
        # asyncpg still rolls back a transaction left open.
        self._pool = await asyncpg.create_pool(
            self.settings.dsn, min_size=size, max_size=size * 3, reset=_nothing_to_reset
        )

    async def close(self) -> None:
        if self._pool is not None:
            await self._pool.close()
            self._pool = None

    # -- endpoints ------------------------------------------------------------------------------------

    async def healthz(self, request: Request) -> Response:
        return Response(b'{"status":"ok"}', media_type="application/json")

    async def me(self, request: Request) -> Response:
        user_id, session_id = self.tokens.user_of(request.headers.get("authorization"))
        async with self.pool.acquire() as conn:
            session = await conn.fetchrow(sql.SESSION, session_id, user_id)
            if (
                session is None
                or session["revoked_at"] is not None
                or session["expires_at"] <= datetime.now(UTC)
            ):
                raise Problem(401, "session-ended", "Session ended", "This session has ended; sign in again.")
            user = await conn.fetchrow(sql.USER, user_id)
        if user is None:
            raise Problem(404, "user-not-found", "User not found", f"No user with id {user_id}.")
        return json_response(
            {
                "id": user["id"],
                "email": user["email"],
                "display_name": user["display_name"],
                "email_verified": user["email_verified_at"] is not None,
                "created_at": user["created_at"],
            }
        )

    async def get_task(self, request: Request) -> Response:
        user_id, _ = self.tokens.user_of(request.headers.get("authorization"))
        org_id = _path_uuid(request, "org_id")
        ref = _path_ref(request, "task_ref")
        async with self.pool.acquire() as conn:
            await _authorize(conn, org_id, user_id, "tasks:read")
            parsed = task_ref(ref)
            if parsed is None:
                raise _task_not_found(f"{ref!r} is neither a task id nor a task key such as WEB-42.", ref)
            if isinstance(parsed, UUID):
                row = await conn.fetchrow(sql.TASK_BY_ID, org_id, parsed)
            else:
                row = await conn.fetchrow(sql.TASK_BY_KEY, org_id, *parsed)
        if row is None:
            raise _task_not_found(f"No task {ref} in this organization.", ref)
        return json_response(task_json(row, row["project_key"]), headers={"ETag": f'"{row["version"]}"'})

    async def list_tasks(self, request: Request) -> Response:
        user_id, _ = self.tokens.user_of(request.headers.get("authorization"))
        org_id = _path_uuid(request, "org_id")
        ref = _path_ref(request, "project_ref")
        limit, q, cursor, order = _list_parameters(request)
        async with self.pool.acquire() as conn:
            await _authorize(conn, org_id, user_id, "tasks:read")
            terms = search_terms(q) if q is not None else None
            project = await _project(conn, org_id, ref)
            scope = list_scope(order, org_id, project["id"], terms)
            arguments: list[Any] = [org_id, project["id"]]
            if terms is not None:
                arguments.append(match_expression(terms))
            if cursor is not None:
                arguments.append(decode_cursor(cursor, scope))
            query = sql.task_page(
                search=terms is not None, after=cursor is not None, descending=order == "desc"
            )
            rows = await conn.fetch(query, *arguments, limit + 1)
        key = project["key"]
        next_cursor = encode_cursor(rows[limit - 1]["id"], scope) if len(rows) > limit else None
        return json_response(
            {"items": [task_json(row, key) for row in rows[:limit]], "next_cursor": next_cursor}
        )

    async def create_task(self, request: Request) -> Response:
        try:
            body = json.loads(await request.body())
        except ValueError:
            raise validation_failed(
                [{"loc": ["body"], "msg": "JSON decode error", "type": "json_invalid"}]
            ) from None
        user_id, _ = self.tokens.user_of(request.headers.get("authorization"))
        org_id = _path_uuid(request, "org_id")
        ref = _path_ref(request, "project_ref")
        new = new_task(body)
        trace: Trace = request.scope["state"]["trace"]
        async with self.pool.acquire() as conn:
            await _authorize(conn, org_id, user_id, "tasks:write")
            project = await _project(conn, org_id, ref, detail_ref=ref)
            _require_active(project["status"], project["id"], project["key"])
            async with conn.transaction():
                await self.entitlement.require(conn, org_id)
                if (
                    new.assignee_id is not None
                    and await conn.fetchval(sql.IS_MEMBER, org_id, new.assignee_id) is None
                ):
                    raise Problem(
                        422,
                        "not-assignable",
                        "The assignee is not a member of the organization",
                        f"User {new.assignee_id} is not a member of this organization.",
                        assignee_id=str(new.assignee_id),
                    )
                task = await self._insert_task(conn, org_id, project, user_id, new, trace)
        headers = {"Location": f"{API}/orgs/{org_id}/tasks/{task['id']}", "ETag": f'"{task["version"]}"'}
        return json_response(task_json(task, project["key"]), 201, headers)

    async def _insert_task(
        self,
        conn: asyncpg.Connection,
        org_id: UUID,
        project: asyncpg.Record,
        user_id: UUID,
        new: NewTask,
        trace: Trace,
    ) -> dict[str, Any]:
        """Number the task and write it with its labels, watchers, activity, events and usage job."""
        numbered = await conn.fetchrow(sql.NEXT_NUMBER, project["id"], org_id)
        if numbered is None:
            raise Problem(
                404, "project-not-found", "Project not found",
                f"No project {project['key']} in this organization.", project=project["key"],
            )  # fmt: skip
        _require_active(numbered["status"], project["id"], project["key"])
        now = datetime.now(UTC)
        task_id = uuid7()
        number = numbered["last_number"]
        key = f"{project['key']}-{number}"
        labels = json.dumps(new.labels)
        await conn.execute(
            sql.INSERT_TASK, task_id, org_id, project["id"], number, new.title, new.description, new.status,
            new.priority, new.assignee_id, new.due_date, labels, user_id, now,
        )  # fmt: skip
        if new.labels:
            await conn.execute(sql.INSERT_LABELS, task_id, org_id, new.labels)
        watchers = [user_id] if new.assignee_id in (None, user_id) else [user_id, new.assignee_id]
        await conn.execute(sql.INSERT_WATCHERS, task_id, watchers, org_id, now)
        activity = json.dumps({"key": key, "title": new.title, "status": new.status})
        await conn.execute(sql.INSERT_ACTIVITY, uuid7(), org_id, task_id, user_id, activity, now)
        event: dict[str, Any] = {
            "occurred_at": now,
            "aggregate_id": task_id,
            "org_id": org_id,
            "project_id": project["id"],
            "task_id": task_id,
            "key": key,
            "title": new.title,
        }
        events = [("projects.TaskCreated", {**event, "created_by": user_id, "assignee_id": new.assignee_id})]
        if new.assignee_id is not None:
            assigned = {"assignee_id": new.assignee_id, "previous_assignee_id": None, "assigned_by": user_id}
            events.append(("projects.TaskAssigned", {**event, **assigned}))
        for name, fields in events:
            event_id = uuid7()
            payload = pydantic_core.to_json({"id": event_id, **fields}).decode()
            await conn.execute(sql.INSERT_EVENT, event_id, name, task_id, now, payload, *trace.next_hop())
        job = json.dumps({"org_id": str(org_id), "task_id": str(task_id), "occurred_at": now.isoformat()})
        await conn.execute(
            sql.INSERT_JOB, uuid7(), REPORT_USAGE, str(task_id), job, self.settings.job_max_attempts, now,
            *trace.next_hop(),
        )  # fmt: skip
        await conn.execute(sql.WAKE_WORKER)
        return {
            "id": task_id,
            "org_id": org_id,
            "project_id": project["id"],
            "number": number,
            "title": new.title,
            "description": new.description,
            "status": new.status,
            "priority": new.priority,
            "assignee_id": new.assignee_id,
            "due_date": new.due_date,
            "labels": labels,
            "created_by": user_id,
            "created_at": now,
            "updated_at": now,
            "version": 1,
        }


async def _nothing_to_reset(conn: asyncpg.Connection) -> None:
    return None


async def _authorize(conn: asyncpg.Connection, org_id: UUID, user_id: UUID, permission: str) -> None:
    """Auth's `authorize`: a member of the organization whose role holds `permission`; 404 to others."""
    role = await conn.fetchval(sql.ROLE, org_id, user_id)
    if role is None:
        raise Problem(
            404,
            "organization-not-found",
            "Organization not found",
            f"No organization {org_id} that you can access.",
        )
    if role not in TASK_ROLES:
        raise Problem(
            403,
            "missing-permission",
            "Missing permission",
            f"This needs the '{permission}' permission, which the {role} role does not include.",
            permission=permission,
        )


async def _project(
    conn: asyncpg.Connection, org_id: UUID, ref: str, *, detail_ref: str | None = None
) -> asyncpg.Record:
    """The organization's project by id or key (404 otherwise). Lists name it in the 404 by its parsed
    id, the create by the reference as sent (`detail_ref`), as splitstone's two lookups do."""
    parsed = project_ref(ref)
    row = None
    if isinstance(parsed, UUID):
        row = await conn.fetchrow(sql.PROJECT_BY_ID, org_id, parsed)
    elif parsed is not None:
        row = await conn.fetchrow(sql.PROJECT_BY_KEY, org_id, parsed)
    if row is None:
        named = detail_ref if detail_ref is not None else str(parsed if isinstance(parsed, UUID) else ref)
        raise Problem(
            404,
            "project-not-found",
            "Project not found",
            f"No project {named} in this organization.",
            project=named,
        )
    return row


def _require_active(status: str, project_id: UUID, key: str) -> None:
    if status != "active":
        raise Problem(
            409,
            "project-archived",
            "The project is archived",
            f"Project {key} is archived: its tasks are read-only until it is unarchived.",
            project_id=str(project_id),
            project_key=key,
        )


def _task_not_found(detail: str, ref: str) -> Problem:
    return Problem(404, "task-not-found", "Task not found", detail, task=ref)


def _path_uuid(request: Request, name: str) -> UUID:
    try:
        return UUID(request.path_params[name])
    except ValueError:
        raise validation_failed(
            [{"loc": ["path", name], "msg": "Input should be a valid UUID", "type": "uuid_parsing"}]
        ) from None


def _path_ref(request: Request, name: str) -> str:
    ref: str = request.path_params[name]
    if len(ref) > 100:
        raise validation_failed(
            [
                {
                    "loc": ["path", name],
                    "msg": "String should have at most 100 characters",
                    "type": "string_too_long",
                }
            ]
        )
    return ref


def _list_parameters(request: Request) -> tuple[int, str | None, str | None, str]:
    """(limit, q, cursor, order) of a list request; the baseline lists newest (or oldest) first only."""
    params = request.query_params
    errors: list[dict[str, Any]] = []

    def error(name: str, msg: str, kind: str) -> None:
        errors.append({"loc": ["query", name], "msg": msg, "type": kind})

    limit = 50
    if "limit" in params:
        try:
            limit = int(params["limit"])
        except ValueError:
            error("limit", "Input should be a valid integer", "int_parsing")
        else:
            if not 1 <= limit <= MAX_PAGE:
                error("limit", f"Input should be from 1 to {MAX_PAGE}", "greater_than_equal")
    q, cursor = params.get("q"), params.get("cursor")
    if q is not None and len(q) > 200:
        error("q", "String should have at most 200 characters", "string_too_long")
    if cursor is not None and len(cursor) > 500:
        error("cursor", "String should have at most 500 characters", "string_too_long")
    order = params.get("order", "desc")
    if order not in ("asc", "desc"):
        error("order", "Input should be 'asc' or 'desc'", "enum")
    if errors:
        raise validation_failed(errors)
    unsupported = [name for name in _UNSUPPORTED_FILTERS if name in params]
    if params.get("sort", "created") != "created" or unsupported:
        raise Problem(
            400, "unsupported", "Not in the baseline", "The baseline lists tasks newest first, with q only."
        )
    return limit, q, cursor, order


def _endpoint(baseline: Baseline, handler: Handler) -> Callable[[Request], Awaitable[Response]]:
    async def endpoint(request: Request) -> Response:
        try:
            return await handler(baseline, request)
        except Problem as problem:
            trace: Trace = request.scope["state"]["trace"]
            return problem_response(problem, request.scope["path"], trace.request_id)

    return endpoint


def create_app(settings: BaselineSettings) -> Starlette:
    baseline = Baseline(settings)

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await baseline.open()
        try:
            yield
        finally:
            await baseline.close()

    org = f"{API}/orgs/{{org_id}}"
    routes = [
        Route("/healthz", _endpoint(baseline, Baseline.healthz)),
        Route(f"{API}/auth/me", _endpoint(baseline, Baseline.me)),
        Route(f"{org}/tasks/{{task_ref}}", _endpoint(baseline, Baseline.get_task)),
        Route(f"{org}/projects/{{project_ref}}/tasks", _endpoint(baseline, Baseline.list_tasks)),
        Route(
            f"{org}/projects/{{project_ref}}/tasks",
            _endpoint(baseline, Baseline.create_task),
            methods=["POST"],
        ),
    ]
    app = Starlette(
        routes=routes,
        middleware=[Middleware(RequestContext, access_log=settings.access_log)],
        lifespan=lifespan,
    )
    app.state.baseline = baseline
    return app
