"""`splitstone demo seed`: a living demo organization, made through the public HTTP API.

The seed is a client of the product, not part of any module: it builds the whole app in-process (the
composition root), drives it with httpx as a newcomer's browser would (register, verify, log in, create
the organization, invite and accept, create projects, tasks and comments), and runs the worker so
notifications and billing react. Email tokens come from the events the app commits, read through an
`EventRecorder` as the tests do, so nothing touches a module's tables.
"""

from __future__ import annotations

import asyncio
import json
import random
import shlex
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from datetime import date, timedelta
from typing import Any
from uuid import UUID

import httpx
from rich.console import Console
from rich.progress import (
    BarColumn,
    MofNCompleteColumn,
    Progress,
    SpinnerColumn,
    TextColumn,
    TimeElapsedColumn,
)

from splitstone.bootstrap import build_container
from splitstone.kernel.app import create_app
from splitstone.kernel.events import EventRecorder
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.settings import Settings
from splitstone.modules.auth.api import MemberInvited, UserRegistered
from splitstone.modules.projects.api import Priority, TaskStatus

DEMO_ORG = "Demo"
DEMO_EMAIL = "demo@example.com"
DEMO_PASSWORD = "splitstone demo 2030"  # noqa: S105 (documented, development only)
DEFAULT_TASKS = 200


@dataclass(frozen=True)
class Person:
    email: str
    display_name: str
    role: str  # in the demo organization


OWNER = Person(DEMO_EMAIL, "Dana Demo", "owner")
MEMBERS = (
    Person("ada@demo.example.com", "Ada Lovelace", "admin"),
    Person("grace@demo.example.com", "Grace Hopper", "member"),
    Person("alan@demo.example.com", "Alan Turing", "member"),
    Person("katherine@demo.example.com", "Katherine Johnson", "member"),
)


@dataclass(frozen=True)
class DemoProject:
    key: str
    name: str
    description: str
    subjects: tuple[str, ...]
    labels: tuple[str, ...]
    weight: int  # share of the tasks


PROJECTS = (
    DemoProject(
        "WEB",
        "Website",
        "The public website and the signed-in web app.",
        (
            "the pricing page",
            "the sign-up form",
            "the dashboard",
            "dark mode",
            "the onboarding checklist",
            "the settings page",
            "the navigation bar",
            "image lazy loading",
            "the 404 page",
            "keyboard shortcuts",
            "the task board",
            "the search box",
        ),
        ("frontend", "ux", "bug", "feature", "accessibility", "performance"),
        45,
    ),
    DemoProject(
        "API",
        "Public API",
        "The REST API, its SDKs and its documentation.",
        (
            "the tasks endpoint",
            "cursor pagination",
            "the webhooks payload",
            "rate limit headers",
            "the OpenAPI examples",
            "the Python SDK",
            "error codes",
            "API key scopes",
            "the search endpoint",
            "idempotency keys",
            "ETag handling",
            "the changelog",
        ),
        ("backend", "bug", "feature", "docs", "security", "performance"),
        35,
    ),
    DemoProject(
        "OPS",
        "Operations",
        "Deploys, monitoring, backups and the on-call rota.",
        (
            "the nightly backups",
            "the PostgreSQL upgrade",
            "the deploy pipeline",
            "disk usage alerts",
            "the on-call runbook",
            "TLS certificates",
            "the staging environment",
            "log retention",
            "the NATS cluster",
            "database failover",
        ),
        ("infra", "security", "monitoring", "chore", "incident"),
        20,
    ),
)

VERBS = ("Fix", "Improve", "Redesign", "Document", "Test", "Speed up", "Review", "Clean up", "Add metrics to")
DESCRIPTIONS = (
    "Reported by a customer last week; see the support thread.",
    "Part of this quarter's goals.",
    "Small, but it keeps coming up in feedback.",
    "**Acceptance:** works on mobile and desktop, with tests.",
    "Follow-up from the last retrospective.",
    "",
)
COMMENTS = (
    "I can take this one.",
    "Looks good to me, ship it.",
    "Can we split this into two tasks?",
    "Blocked until the API change lands.",
    "Reproduced locally; the fix is small.",
    "Moved the due date: waiting on design.",
    "Added a test that covers the edge case.",
    "Let's discuss this in the planning meeting.",
)
# Where the seeded tasks end up, and how: a task is created in todo, then moves along the workflow.
STATUS_WEIGHTS = {
    TaskStatus.TODO: 40,
    TaskStatus.IN_PROGRESS: 25,
    TaskStatus.DONE: 28,
    TaskStatus.CANCELED: 7,
}
PATHS = {
    TaskStatus.TODO: (),
    TaskStatus.IN_PROGRESS: (TaskStatus.IN_PROGRESS,),
    TaskStatus.DONE: (TaskStatus.IN_PROGRESS, TaskStatus.DONE),
    TaskStatus.CANCELED: (TaskStatus.CANCELED,),
}
PRIORITY_WEIGHTS = {
    Priority.NONE: 20,
    Priority.LOW: 25,
    Priority.MEDIUM: 30,
    Priority.HIGH: 18,
    Priority.URGENT: 7,
}


class SeedError(Exception):
    """The API refused a step of the seed; the message says which and why."""


@dataclass
class SignedIn:
    person: Person
    user_id: UUID
    access_token: str

    @property
    def headers(self) -> dict[str, str]:
        return {"Authorization": f"Bearer {self.access_token}"}


@dataclass
class SeedResult:
    """What the seed found or made; `created` is false when the demo organization already existed."""

    created: bool
    org_id: UUID
    people: list[Person] = field(default_factory=list)
    projects: list[str] = field(default_factory=list)
    tasks: int = 0
    comments: int = 0
    plan: str | None = None


OnProgress = Callable[[str, int], None]
"""`progress(step, advance)`: a step's description, and how many tasks it completed."""


class DemoSeeder:
    """Seeds the demo organization through `client` (the app's HTTP API); `settle` runs the worker."""

    def __init__(
        self,
        client: httpx.AsyncClient,
        events: EventRecorder,
        settle: Callable[[], Awaitable[object]],
        *,
        today: date,
        seed: int = 2030,
    ) -> None:
        self._client = client
        self._events = events
        self._settle = settle
        self._today = today
        self._random = random.Random(seed)  # noqa: S311 (demo data, reproducible)

    async def existing(self, password: str) -> UUID | None:
        """The demo organization's id, if the owner can log in and owns an organization named Demo."""
        response = await self._client.post(
            "/api/v1/auth/login", json={"email": OWNER.email, "password": password}
        )
        if response.status_code != 200:
            return None
        token = response.json()["access_token"]
        orgs = await self._call("GET", "/api/v1/orgs", headers={"Authorization": f"Bearer {token}"})
        for org in orgs["items"]:
            if org["name"] == DEMO_ORG and org["role"] == "owner":
                return UUID(org["id"])
        return None

    async def seed(self, *, tasks: int, password: str, progress: OnProgress | None = None) -> SeedResult:
        """Create the demo organization, or find it (then `created` is false and nothing changes)."""
        step = progress or (lambda _description, _advance: None)
        step("Checking for an existing demo", 0)
        found = await self.existing(password)
        if found is not None:
            return SeedResult(created=False, org_id=found, people=[OWNER, *MEMBERS])

        step("Creating the demo users", 0)
        owner = await self._user(OWNER, password)
        members = [await self._user(person, password) for person in MEMBERS]
        org = await self._call("POST", "/api/v1/orgs", json={"name": DEMO_ORG}, headers=owner.headers)
        org_id = UUID(org["id"])
        base = f"/api/v1/orgs/{org_id}"
        await self._settle()  # billing opens the organization's account when it hears of it

        step("Inviting the members", 0)
        for member in members:
            await self._join(base, owner, member)
        result = SeedResult(created=True, org_id=org_id, people=[OWNER, *MEMBERS])
        result.plan = await self._make_room(base, owner, tasks)

        step("Creating the projects", 0)
        for project in PROJECTS:
            body = {"key": project.key, "name": project.name, "description": project.description}
            await self._call("POST", f"{base}/projects", json=body, headers=owner.headers)
            result.projects.append(project.key)

        everyone = [owner, *members]
        for _ in range(tasks):
            step("Creating tasks", 0)
            result.comments += await self._task(base, everyone)
            result.tasks += 1
            step("Creating tasks", 1)

        step("Running the worker (notifications, usage)", 0)
        await self._settle()
        return result

    # -- steps ------------------------------------------------------------------------------------------

    async def _user(self, person: Person, password: str) -> SignedIn:
        """Register, verify and log in `person`; a user from an earlier, interrupted seed just logs in."""
        before = len(self._events.published)
        body = {"email": person.email, "password": password, "display_name": person.display_name}
        await self._call("POST", "/api/v1/auth/register", json=body, expect=202)
        registered = [
            e
            for e in self._events.published[before:]
            if isinstance(e, UserRegistered) and e.email == person.email
        ]
        if registered:
            token = registered[-1].verification_token
            await self._call("POST", "/api/v1/auth/verify-email", json={"token": token})
        response = await self._client.post(
            "/api/v1/auth/login", json={"email": person.email, "password": password}
        )
        if response.status_code != 200:
            raise SeedError(
                f"{person.email} already exists with another password: pass the password it was seeded "
                f"with (--password), or use a fresh database ({_problem(response)})"
            )
        token = response.json()["access_token"]
        me = await self._call("GET", "/api/v1/auth/me", headers={"Authorization": f"Bearer {token}"})
        return SignedIn(person=person, user_id=UUID(me["id"]), access_token=token)

    async def _join(self, base: str, owner: SignedIn, member: SignedIn) -> None:
        """The owner invites `member`, who accepts with the token the invitation email would carry."""
        body = {"email": member.person.email, "role": member.person.role}
        invitation = await self._call("POST", f"{base}/invitations", json=body, headers=owner.headers)
        invited = [e for e in self._events.of_type(MemberInvited) if str(e.invitation_id) == invitation["id"]]
        if not invited:
            raise SeedError(f"the invitation of {member.person.email} published no auth.MemberInvited event")
        token = invited[-1].invitation_token
        await self._call("POST", "/api/v1/invitations/accept", json={"token": token}, headers=member.headers)

    async def _make_room(self, base: str, owner: SignedIn, tasks: int) -> str | None:
        """Start a trial of the business plan if the current plan cannot hold the demo; its name, if so."""
        entitlements = await self._call("GET", f"{base}/billing/entitlements", headers=owner.headers)
        limits = {e["key"]: e["limit"] for e in entitlements["items"] if e["kind"] == "limit"}

        def fits(key: str, wanted: int) -> bool:
            limit = limits.get(key)
            return limit is None or wanted <= limit

        if (
            fits("projects", len(PROJECTS))
            and fits("members", 1 + len(MEMBERS))
            and fits("tasks_per_month", tasks)
        ):
            return None
        body = {"plan": "business"}
        await self._call("POST", f"{base}/billing/subscription/change", json=body, headers=owner.headers)
        return "business"

    async def _task(self, base: str, everyone: list[SignedIn]) -> int:
        """One task with its status path and perhaps comments; returns how many comments it got."""
        pick = self._random
        project = pick.choices(PROJECTS, weights=[p.weight for p in PROJECTS])[0]
        creator = pick.choice(everyone)
        target = pick.choices(list(STATUS_WEIGHTS), weights=list(STATUS_WEIGHTS.values()))[0]
        priority = pick.choices(list(PRIORITY_WEIGHTS), weights=list(PRIORITY_WEIGHTS.values()))[0]
        body: dict[str, Any] = {
            "title": f"{pick.choice(VERBS)} {pick.choice(project.subjects)}",
            "description": pick.choice(DESCRIPTIONS),
            "priority": priority.name.lower(),  # priorities travel by name
            "labels": pick.sample(project.labels, k=pick.choice((0, 1, 1, 2, 2, 3))),
        }
        if pick.random() < 0.8:
            body["assignee_id"] = str(pick.choice(everyone).user_id)
        if pick.random() < 0.6:
            # Open tasks fall due around now (a few overdue); finished ones fell due in the past weeks.
            days = (
                pick.randint(-30, 0)
                if target in (TaskStatus.DONE, TaskStatus.CANCELED)
                else pick.randint(-7, 45)
            )
            body["due_date"] = (self._today + timedelta(days=days)).isoformat()
        created = await self._call(
            "POST", f"{base}/projects/{project.key}/tasks", json=body, headers=creator.headers, full=True
        )
        task = created.json()
        ref = task["key"]
        etag = created.headers.get("etag")
        mover = everyone[0] if "assignee_id" not in body else _by_id(everyone, body["assignee_id"])
        for status in PATHS[target]:
            headers = dict(mover.headers)
            if etag:
                headers["If-Match"] = etag
            moved = await self._call(
                "PATCH", f"{base}/tasks/{ref}", json={"status": status.value}, headers=headers, full=True
            )
            etag = moved.headers.get("etag")
        comments = pick.choice((0, 0, 0, 0, 1, 1, 2, 3))
        for _ in range(comments):
            author = pick.choice(everyone)
            body = {"body": pick.choice(COMMENTS)}
            await self._call("POST", f"{base}/tasks/{ref}/comments", json=body, headers=author.headers)
        return comments

    # -- HTTP -------------------------------------------------------------------------------------------

    async def _call(
        self,
        method: str,
        path: str,
        *,
        json: object = None,
        headers: dict[str, str] | None = None,
        expect: int | None = None,
        full: bool = False,
    ) -> Any:
        """The response's JSON (the response itself with `full`); a `SeedError` unless it succeeded."""
        response = await self._client.request(method, path, json=json, headers=headers)
        ok = response.status_code == expect if expect is not None else response.is_success
        if not ok:
            raise SeedError(f"{method} {path} answered {response.status_code}: {_problem(response)}")
        if full:
            return response
        return response.json() if response.content else None


def _by_id(people: list[SignedIn], user_id: str) -> SignedIn:
    return next(p for p in people if str(p.user_id) == user_id)


def _problem(response: httpx.Response) -> str:
    try:
        body = response.json()
    except ValueError:
        return response.text[:200]
    if isinstance(body, dict):
        return str(body.get("detail") or body.get("title") or body)
    return str(body)[:200]


async def seed_demo(
    settings: Settings, *, tasks: int, password: str, progress: OnProgress | None = None
) -> SeedResult:
    """Build the app from the composition root, seed it in-process, and close it."""
    events = EventRecorder()
    # The seed is one local operator making a few dozen sign-ups and logins: not what rate limits are for.
    container = build_container(
        settings,
        recorder=events,
        rate_limiter=RateLimiter(settings.rate_limit_storage_url, enabled=False),
    )
    worker = container.worker()
    try:
        transport = httpx.ASGITransport(app=create_app(container))
        async with httpx.AsyncClient(transport=transport, base_url="http://demo.invalid") as client:
            seeder = DemoSeeder(client, events, worker.settle, today=container.clock.now().date())
            return await seeder.seed(tasks=tasks, password=password, progress=progress)
    finally:
        await worker.stop()
        await container.aclose()


def run(settings: Settings, *, tasks: int, password: str, console: Console) -> SeedResult:
    """`seed_demo` with a progress bar (the bar counts tasks; the steps before them show as its text)."""
    columns = (
        SpinnerColumn(),
        TextColumn("{task.description}"),
        BarColumn(),
        MofNCompleteColumn(),
        TimeElapsedColumn(),
    )
    with Progress(*columns, console=console) as bar:
        handle = bar.add_task("Starting", total=tasks)

        def progress(description: str, advance: int) -> None:
            bar.update(handle, description=description, advance=advance)

        result = asyncio.run(seed_demo(settings, tasks=tasks, password=password, progress=progress))
        bar.update(handle, description="Done" if result.created else "Already seeded")
    return result


def summary(result: SeedResult, settings: Settings, password: str) -> str:
    """What was made (or found), how to log in, and a curl example against `splitstone serve`."""
    base = f"http://{settings.host}:{settings.port}"
    members = ", ".join(f"{p.email} ({p.role})" for p in result.people if p is not OWNER)
    if result.created:
        plan = f"; billing: a {result.plan} plan trial" if result.plan else ""
        head = (
            f"Seeded the demo organization {DEMO_ORG!r} ({result.org_id}): {len(result.people)} people, "
            f"{len(result.projects)} projects ({', '.join(result.projects)}), {result.tasks} tasks, "
            f"{result.comments} comments{plan}."
        )
    else:
        head = f"The demo organization {DEMO_ORG!r} ({result.org_id}) is already seeded; nothing changed."
    login = {"email": OWNER.email, "password": password}
    org = f"{base}/api/v1/orgs/{result.org_id}"
    return "\n".join(
        [
            head,
            "",
            f"Log in as {OWNER.email} with the password {password!r} (the owner);",
            f"the members have the same password: {members}.",
            f"Start the server with `splitstone serve` (or `make run`), then open {base}/docs, or:",
            "",
            f"  TOKEN=$(curl -s -X POST {base}/api/v1/auth/login -H 'Content-Type: application/json' \\",
            f"    -d {shlex.quote(json.dumps(login))} | jq -r .access_token)",
            f'  curl -s {org}/projects -H "Authorization: Bearer $TOKEN" | jq',
            f'  curl -s {org}/tasks/WEB-1 -H "Authorization: Bearer $TOKEN" | jq',
        ]
    )
