"""The mixed workload, open-loop at a fixed rate, and the ledger of what the service accepted.

Open-loop: a request starts every 1/rate seconds whether or not earlier ones have answered, as
independent users would; a slow or failing service does not slow the workload down. The mix:
create a task (with `Idempotency-Key`; each task's `TaskCreated` is delivered to its organization's
webhook endpoint), report usage (key in the body and the header), list tasks, read usage, sign in,
register (then the emailed link verifies the address, and the new user signs in), and create webhook
endpoints. A write whose outcome the client never learned (network error, 5xx after every retry) is
retried with the same key once the run is over, as a real client would, so the ledger ends exact.
"""

from __future__ import annotations

import asyncio
import random
import secrets
import time
import uuid
from collections import Counter
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from urllib.parse import parse_qs, urlsplit

from tests.faults.client import Answer, Client
from tests.modules.notifications.webhook_support import Receiver
from tests.support.mailbox import Mailbox

PASSWORD = "granite quarry splits 7 ways"
API = "/api/v1"
PROJECT = "LOAD"
TASK_EVENTS = ["projects.TaskCreated"]
SPARE_EVENTS = ["projects.TaskCommented"]  # the workload never comments: spare endpoints stay silent
MAIL_WITHIN = 120.0

MIX: dict[str, int] = {
    "create_task": 30,
    "report_usage": 25,
    "list_tasks": 18,
    "read_usage": 5,
    "login": 10,
    "register": 8,
    "create_webhook": 4,
}


@dataclass
class Org:
    id: str
    owner_email: str
    auth: dict[str, str]
    endpoint_id: str


@dataclass
class Ledger:
    """What the service accepted (2xx), and what the workload could not settle."""

    tasks: dict[str, set[str]] = field(default_factory=dict)
    usage: Counter[str] = field(default_factory=Counter)
    usage_keys: set[str] = field(default_factory=set)
    registrations: set[str] = field(default_factory=set)
    verified: set[str] = field(default_factory=set)
    signed_in: set[str] = field(default_factory=set)
    endpoints: dict[str, set[str]] = field(default_factory=dict)
    refused: Counter[str] = field(default_factory=Counter)
    """Writes answered 4xx at the end: none of the workload's requests is invalid, so each is a finding."""
    unsettled: list[str] = field(default_factory=list)


@dataclass
class Pending:
    """A write to settle later: send it again as it was (same key) until it gets an answer."""

    name: str
    send: Callable[[], Awaitable[Answer]]
    accept: Callable[[Answer], None]


class Workload:
    def __init__(self, client: Client, mailbox: Mailbox, receiver: Receiver, *, seed: int = 9) -> None:
        self.client = client
        self.mailbox = mailbox
        self.receiver = receiver
        self.orgs: list[Org] = []
        self.ledger = Ledger()
        self.random = random.Random(seed)
        self.pending: list[Pending] = []
        self.in_flight: set[asyncio.Task[None]] = set()
        self.errors: list[str] = []
        self.started = 0
        self._names = iter(range(1, 10**9))
        self._run = secrets.token_hex(3)

    # --- set-up: organizations on a paid plan, each with a project and a webhook endpoint -------------

    async def set_up(self, organizations: int) -> None:
        self.orgs = list(await asyncio.gather(*(self._organization(i) for i in range(organizations))))

    async def _organization(self, index: int) -> Org:
        email = f"owner{index}-{self._run}@example.com"
        auth = await self._sign_up(email, required=True)
        assert auth is not None
        org_id = str(
            (await self._must("POST", f"{API}/orgs", json={"name": f"Load {index}"}, headers=auth))["id"]
        )
        billing = f"{API}/orgs/{org_id}/billing"
        await self._until(f"{billing}/subscription", auth, lambda b: b.get("plan", {}).get("code") == "free")
        # An organization's one trial goes first (a paid start would begin with it); then the paid period
        # starts at once, with its invoice, paid by the sandbox's card.
        await self._must("POST", f"{billing}/subscription/change", json={"plan": "pro"}, headers=auth)
        ended = {"at_period_end": False}
        await self._must("POST", f"{billing}/subscription/cancel", json=ended, headers=auth)
        card = {"token": "pm_debit_success"}
        await self._must("POST", f"{billing}/payment-method", json=card, headers=auth)
        change = await self.client.call(
            "set-up", "POST", f"{billing}/subscription/change", json={"plan": "business"}, headers=auth,
            idempotent=True,
        )  # fmt: skip
        assert change.ok, f"subscribe: {change.status} {change.response and change.response.text}"
        await self._until(f"{billing}/subscription", auth, lambda b: b["status"] == "active")
        org = f"{API}/orgs/{org_id}"
        await self._must("POST", f"{org}/projects", json={"key": PROJECT, "name": "Load"}, headers=auth)
        endpoint = await self._must(
            "POST",
            f"{org}/webhooks",
            json={"url": f"{self.receiver.url}/{org_id}", "event_types": TASK_EVENTS},
            headers=auth,
        )
        return Org(org_id, email, auth, str(endpoint["id"]))

    # --- the run ------------------------------------------------------------------------------------------

    async def run(
        self, seconds: float, rate: float, *, on_tick: Callable[[float], None] | None = None
    ) -> None:
        """Start `rate` operations a second for `seconds`, without waiting for their answers."""
        operations = list(MIX)
        weights = [MIX[o] for o in operations]
        began = time.monotonic()
        count = int(seconds * rate)
        for n in range(count):
            due = began + n / rate
            delay = due - time.monotonic()
            if delay > 0:
                await asyncio.sleep(delay)
            if on_tick is not None:
                on_tick(time.monotonic() - began)
            name = self.random.choices(operations, weights)[0]
            self.spawn(getattr(self, name)())
        self.started += count

    def spawn(self, work: Awaitable[None]) -> None:
        async def guarded() -> None:
            try:
                await work
            except Exception as error:  # an operation's own assertion (e.g. no verification email)
                self.errors.append(f"{type(error).__name__}: {error}")

        task = asyncio.create_task(guarded())
        self.in_flight.add(task)
        task.add_done_callback(self.in_flight.discard)

    async def drain(self, within: float) -> None:
        """Wait for every started operation (and its follow-ups), then settle what is pending."""
        deadline = time.monotonic() + within
        while self.in_flight:
            left = deadline - time.monotonic()
            if left <= 0:
                raise AssertionError(f"{len(self.in_flight)} operations still running after {within} s")
            await asyncio.wait(set(self.in_flight), timeout=left)
        while self.pending and time.monotonic() < deadline:
            write = self.pending.pop(0)
            answer = await write.send()
            if answer.ok:
                write.accept(answer)
            elif _settled(answer):
                self.ledger.refused[f"{write.name}:{answer.status}"] += 1
            else:
                self.pending.append(write)
                await asyncio.sleep(0.5)
        self.ledger.unsettled = [w.name for w in self.pending]

    # --- operations ---------------------------------------------------------------------------------------

    def _org(self) -> Org:
        return self.random.choice(self.orgs)

    async def create_task(self, org: Org | None = None) -> str | None:
        org = org or self._org()
        key = str(uuid.uuid4())
        title = f"load task {next(self._names)}"

        def send() -> Awaitable[Answer]:
            return self.client.call(
                "create_task", "POST", f"{API}/orgs/{org.id}/projects/{PROJECT}/tasks", json={"title": title},
                headers=org.auth, idempotent=True, key=key,
            )  # fmt: skip

        def accept(answer: Answer) -> None:
            self.ledger.tasks.setdefault(org.id, set()).add(answer.json()["id"])

        answer = await self._write("create_task", send, accept)
        return str(answer.json()["id"]) if answer.ok else None

    async def report_usage(self) -> None:
        org = self._org()
        key = str(uuid.uuid4())
        quantity = self.random.randint(1, 50)
        body = {"metric": "api_calls", "quantity": quantity, "idempotency_key": key}

        def send() -> Awaitable[Answer]:
            return self.client.call(
                "report_usage", "POST", f"{API}/orgs/{org.id}/billing/usage", json=body, headers=org.auth,
                idempotent=True, key=key,
            )  # fmt: skip

        def accept(answer: Answer) -> None:
            if key not in self.ledger.usage_keys:
                self.ledger.usage_keys.add(key)
                self.ledger.usage[org.id] += quantity

        await self._write("report_usage", send, accept)

    async def list_tasks(self) -> None:
        org = self._org()
        await self.client.call(
            "list_tasks", "GET", f"{API}/orgs/{org.id}/tasks", params={"limit": 20}, headers=org.auth
        )

    async def read_usage(self) -> None:
        org = self._org()
        await self.client.call("read_usage", "GET", f"{API}/orgs/{org.id}/billing/usage", headers=org.auth)

    async def login(self) -> None:
        org = self._org()
        await self.client.call(
            "login", "POST", f"{API}/auth/login", json={"email": org.owner_email, "password": PASSWORD},
            retry=True,
        )  # fmt: skip

    async def register(self) -> None:
        email = f"user{next(self._names)}-{self._run}@example.com"
        await self._sign_up(email, required=False)

    async def create_webhook(self) -> None:
        org = self._org()
        # No Idempotency-Key on this route: a write of unknown outcome is not sent again.
        answer = await self.client.call(
            "create_webhook", "POST", f"{API}/orgs/{org.id}/webhooks",
            json={"url": f"{self.receiver.url}/spare", "event_types": SPARE_EVENTS}, headers=org.auth,
        )  # fmt: skip
        if answer.ok:
            self.ledger.endpoints.setdefault(org.id, set()).add(answer.json()["id"])
        elif answer.response is not None and answer.response.status_code < 500:
            self.ledger.refused[f"create_webhook:{answer.status}"] += 1

    # --- helpers ------------------------------------------------------------------------------------------

    async def _write(
        self, name: str, send: Callable[[], Awaitable[Answer]], accept: Callable[[Answer], None]
    ) -> Answer:
        answer = await send()
        if answer.ok:
            accept(answer)
        elif _settled(answer):
            self.ledger.refused[f"{name}:{answer.status}"] += 1
        else:
            self.pending.append(Pending(name, send, accept))
        return answer

    async def _sign_up(self, email: str, *, required: bool) -> dict[str, str] | None:
        """Register, verify through the emailed link, sign in; the bearer headers (None if it failed)."""
        body = {"email": email, "password": PASSWORD, "display_name": email.split("@")[0]}

        def send() -> Awaitable[Answer]:
            # Registering an address again answers as the first time and sends nothing: safe to retry.
            return self.client.call("register", "POST", f"{API}/auth/register", json=body, retry=True)

        def accept(answer: Answer) -> None:
            self.ledger.registrations.add(email)

        answer = await self._write("register", send, accept)
        if not answer.ok:
            assert not required, f"register {email}: {answer.status}"
            return None
        [mail] = await self.mailbox.wait_for(email, containing="/verify-email?token=", within=MAIL_WITHIN)
        token = parse_qs(urlsplit(mail.link("http")).query)["token"][0]
        verified = await self.client.call(
            "verify_email", "POST", f"{API}/auth/verify-email", json={"token": token}, retry=True
        )
        # A retry after a lost answer finds the token used: the sign-in below says whether it worked.
        if verified.ok:
            self.ledger.verified.add(email)
        login = await self.client.call(
            "login", "POST", f"{API}/auth/login", json={"email": email, "password": PASSWORD}, retry=True
        )
        if not login.ok:
            assert not required, f"login {email}: {login.status}"
            self.ledger.refused[f"login-after-sign-up:{login.status}"] += 1
            return None
        self.ledger.signed_in.add(email)
        return {"Authorization": f"Bearer {login.json()['access_token']}"}

    async def _must(self, method: str, url: str, **kwargs: object) -> dict[str, object]:
        answer = await self.client.call("set-up", method, url, retry=True, **kwargs)  # type: ignore[arg-type]
        assert answer.ok, f"{method} {url}: {answer.status} {answer.response and answer.response.text}"
        return dict(answer.json())

    async def _until(
        self, url: str, auth: dict[str, str], done: Callable[[dict[str, object]], bool], within: float = 30
    ) -> None:
        deadline = time.monotonic() + within
        last: object = None
        while time.monotonic() < deadline:
            answer = await self.client.call("set-up", "GET", url, headers=auth)
            if answer.ok:
                last = answer.json()
                if done(dict(answer.json())):
                    return
            await asyncio.sleep(0.1)
        raise AssertionError(f"{url} never got there within {within} s; last: {last}")


def _settled(answer: Answer) -> bool:
    """A final answer: a 4xx, except 409 `idempotency-key-in-use` (the first try may still be running)."""
    response = answer.response
    if response is None or response.status_code >= 500:
        return False
    return not (response.status_code == 409 and "idempotency-key-in-use" in response.text)
