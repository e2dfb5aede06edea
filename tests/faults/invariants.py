"""What must hold after the run, read back through the API, the mailbox and the webhook receiver.

Each check has a name, a verdict and a message that says what was expected and what was found.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections import Counter
from dataclasses import asdict, dataclass
from typing import Any

from tests.faults.workload import API, PROJECT, Workload
from tests.modules.notifications.webhook_support import Receiver


@dataclass
class Check:
    name: str
    ok: bool
    detail: str

    def as_dict(self) -> dict[str, object]:
        return asdict(self)


@dataclass
class Effects:
    """Events handled, as seen from outside: emails and webhook deliveries, and their redeliveries."""

    verification_emails: int = 0
    email_redeliveries: int = 0
    webhook_deliveries: int = 0
    webhook_redeliveries: int = 0


def task_deliveries(receiver: Receiver) -> dict[str, Counter[str]]:
    """{task id: {webhook-id: times received}} of the `TaskCreated` webhooks the receiver got."""
    found: dict[str, Counter[str]] = {}
    for request in list(receiver.requests):
        try:
            payload = json.loads(request.body)
        except ValueError:
            continue
        if payload.get("type") == "projects.TaskCreated":
            task_id = str(payload["data"]["task_id"])
            found.setdefault(task_id, Counter())[request.headers["webhook-id"]] += 1
    return found


def delivered_task_ids(receiver: Receiver) -> set[str]:
    return set(task_deliveries(receiver))


async def check_all(workload: Workload, *, events_within: float) -> tuple[list[Check], Effects]:
    checks: list[Check] = []
    effects = Effects()
    ledger = workload.ledger
    checks.append(
        _check(
            "every write settled",
            not ledger.unsettled and not workload.errors and not ledger.refused,
            f"unsettled: {ledger.unsettled[:5]} ({len(ledger.unsettled)}); refused (4xx to valid writes): "
            f"{dict(ledger.refused)}; operations that failed: {workload.errors[:5]}",
        )
    )
    accepted_tasks = {t for tasks in ledger.tasks.values() for t in tasks}
    await _wait_until(lambda: accepted_tasks <= delivered_task_ids(workload.receiver), events_within)
    await _wait_until(lambda: _all_mailed(workload), events_within)
    for org in workload.orgs:
        checks.extend(await _org_checks(workload, org.id, org.auth, events_within))
    checks.append(_emails(workload, effects))
    checks.append(
        _check(
            "every registration verified and signed in",
            ledger.registrations == ledger.signed_in,
            f"{len(ledger.registrations)} registered, {len(ledger.signed_in)} signed in; missing: "
            f"{sorted(ledger.registrations - ledger.signed_in)[:5]}",
        )
    )
    checks.append(_webhooks(workload, accepted_tasks, effects))
    tally = workload.client.tally
    checks.append(
        _check(
            "no request hung past its client timeout",
            tally.outcomes["timeout"] == 0 and not tally.over_deadline,
            f"{tally.outcomes['timeout']} timed out (deadline {workload.client.deadline:g} s); slowest "
            f"{tally.slowest_seconds:.2f} s; {tally.over_deadline[:3]}",
        )
    )
    return checks, effects


async def _org_checks(workload: Workload, org_id: str, auth: dict[str, str], within: float) -> list[Check]:
    client = workload.client
    ledger = workload.ledger
    listed: set[str] = set()
    cursor: str | None = None
    while True:
        params: dict[str, Any] = {"limit": 100, **({"cursor": cursor} if cursor else {})}
        page = await client.call(
            "check", "GET", f"{API}/orgs/{org_id}/projects/{PROJECT}/tasks", params=params, headers=auth
        )
        assert page.ok, f"listing tasks: {page.status}"
        listed |= {t["id"] for t in page.json()["items"]}
        cursor = page.json()["next_cursor"]
        if not cursor:
            break
    accepted = ledger.tasks.get(org_id, set())
    # Tasks are metered by a job of their own, after the task commits: wait for it, within the bound.
    deadline = time.monotonic() + within
    while True:
        usage = await client.call("check", "GET", f"{API}/orgs/{org_id}/billing/usage", headers=auth)
        assert usage.ok, f"reading usage: {usage.status}"
        values = {m["metric"]: m["value"] for m in usage.json()["metrics"]}
        if values.get("tasks") == len(accepted) or time.monotonic() > deadline:
            break
        await asyncio.sleep(0.2)
    hooks = await client.call("check", "GET", f"{API}/orgs/{org_id}/webhooks", headers=auth)
    assert hooks.ok, f"listing webhooks: {hooks.status}"
    endpoints = {e["id"] for e in hooks.json()["items"]}
    invoices = await client.call("check", "GET", f"{API}/orgs/{org_id}/billing/invoices", headers=auth)
    assert invoices.ok, f"listing invoices: {invoices.status}"
    periods = Counter(i["period_start"] for i in invoices.json()["items"])
    short = org_id[-6:]
    return [
        _check(
            f"org …{short}: tasks present, exactly the accepted ones",
            listed == accepted,
            f"{len(accepted)} accepted, {len(listed)} listed; accepted but missing: "
            f"{sorted(accepted - listed)[:3]}; listed but never acknowledged: "
            f"{sorted(listed - accepted)[:3]}",
        ),
        _check(
            f"org …{short}: usage totals exact",
            values.get("api_calls") == ledger.usage[org_id] and values.get("tasks") == len(accepted),
            f"api_calls {values.get('api_calls')} (accepted {ledger.usage[org_id]}), tasks metered "
            f"{values.get('tasks')} (accepted {len(accepted)})",
        ),
        _check(
            f"org …{short}: webhook endpoints present",
            ledger.endpoints.get(org_id, set()) <= endpoints,
            f"created {len(ledger.endpoints.get(org_id, set()))}, missing "
            f"{sorted(ledger.endpoints.get(org_id, set()) - endpoints)[:3]}",
        ),
        _check(
            f"org …{short}: one invoice per subscription period",
            len(periods) == 1 and set(periods.values()) == {1},
            f"invoices per period start: {dict(periods)}",
        ),
    ]


def _emails(workload: Workload, effects: Effects) -> Check:
    wrong: list[str] = []
    for email in workload.ledger.registrations:
        mails = workload.mailbox.messages(email, containing="/verify-email?token=")
        distinct = {str(m.message["Message-ID"]) for m in mails}
        effects.verification_emails += len(distinct)
        effects.email_redeliveries += len(mails) - len(distinct)
        if len(distinct) != 1:
            wrong.append(f"{email}: {len(distinct)}")
    return _check(
        "one verification email per registration",
        not wrong,
        f"{len(workload.ledger.registrations)} registrations, {effects.verification_emails} distinct emails, "
        f"{effects.email_redeliveries} redelivered copies; wrong: {wrong[:5]}",
    )


def _webhooks(workload: Workload, accepted: set[str], effects: Effects) -> Check:
    deliveries = task_deliveries(workload.receiver)
    for ids in deliveries.values():
        effects.webhook_deliveries += len(ids)
        effects.webhook_redeliveries += sum(ids.values()) - len(ids)
    missing = sorted(accepted - set(deliveries))
    twice = sorted(t for t, ids in deliveries.items() if len(ids) > 1)
    unknown = sorted(set(deliveries) - accepted)
    return _check(
        "each task's event delivered once by webhook-id",
        not missing and not twice and not unknown,
        f"{len(accepted)} tasks, {effects.webhook_deliveries} distinct deliveries, "
        f"{effects.webhook_redeliveries} redelivered copies; never delivered: {missing[:3]} "
        f"({len(missing)}); under two ids: {twice[:3]}; for tasks never acknowledged: {unknown[:3]}",
    )


def _all_mailed(workload: Workload) -> bool:
    return all(workload.mailbox.messages(e) for e in workload.ledger.registrations)


async def _wait_until(condition: Any, within: float) -> None:
    """Poll `condition` (what it reads is filled by other threads and sockets: no event to wait on)."""
    deadline = time.monotonic() + within
    while time.monotonic() < deadline:
        if condition():
            return
        await asyncio.sleep(0.1)


def _check(name: str, ok: bool, detail: str) -> Check:
    return Check(name, bool(ok), detail)
