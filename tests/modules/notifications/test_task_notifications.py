"""Projects' events become notifications for the people concerned, and webhooks for every endpoint.

Most tests publish projects' events on projects' own unit of work, as its services do, and let the
worker deliver them; one comments through the API end to end. Emails are read back from the file
backend's `.eml` files, in-app items through the inbox API.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime
from email.utils import parseaddr
from typing import Any
from uuid import UUID

import httpx
import pytest
from uuid6 import uuid7

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.events import Envelope, Event, EventRecorder
from splitstone.kernel.messaging.worker import Worker
from splitstone.modules.notifications.handlers import SUBSCRIPTIONS
from splitstone.modules.notifications.service import NotificationsService
from splitstone.modules.projects.api import (
    ProjectArchived,
    TaskAssigned,
    TaskCommented,
    TaskCreated,
    TaskStatus,
    TaskStatusChanged,
)
from tests.modules.auth.conftest import SignedIn, Users
from tests.modules.auth.org_helpers import add_member, create_api_key
from tests.modules.notifications.test_billing_notifications import Outbox, html, text
from tests.modules.notifications.webhook_support import (  # fixtures are used by name
    Receiver,
    create_endpoint,
    organization,
    receiver_fixture,  # noqa: F401
    webhook_settings_fixture,  # noqa: F401
)
from tests.modules.projects.test_comments_api import insert_task

PROJECTS_EVENT_TYPES = [
    "projects.ProjectArchived",
    "projects.TaskCreated",
    "projects.TaskAssigned",
    "projects.TaskStatusChanged",
    "projects.TaskCommented",
]


@dataclass(frozen=True)
class Org:
    id: UUID
    owner: SignedIn
    alice: SignedIn
    bob: SignedIn
    now: datetime

    def task_url(self, base_url: str, key: str = "WEB-42") -> str:
        return f"{base_url}/orgs/{self.id}/tasks/{key}"


@pytest.fixture
async def org(
    client: httpx.AsyncClient, users: Users, worker: Worker, events: EventRecorder, clock: ManualClock
) -> Org:
    """An organization with an owner and two members, its sign-up mail already sent."""
    owner, org_id = await organization(client, users, worker)
    alice = await add_member(client, events, users, owner, org_id, "member")
    bob = await add_member(client, events, users, owner, org_id, "member")
    await worker.settle()
    return Org(UUID(org_id), owner, alice, bob, clock.now())


@pytest.fixture
def outbox(org: Org, mail_dir: Any) -> Outbox:
    return Outbox(mail_dir)


@pytest.fixture
def base_url(container: Container) -> str:
    return container.settings.public_base_url


async def publish(container: Container, worker: Worker, *events: Event) -> None:
    """Publish as projects' services do (on its unit of work), then let the worker deliver."""
    async with container.units_of_work["projects"]() as uow:
        uow.publish(*events)
        await uow.commit()
    await worker.settle()


async def task_items(client: httpx.AsyncClient, who: SignedIn) -> list[dict[str, Any]]:
    """`who`'s in-app items about tasks, newest first."""
    response = await client.get("/api/v1/notifications", headers=who.headers)
    assert response.status_code == 200, response.text
    return [i for i in response.json()["items"] if i["kind"].startswith("projects.")]


def recipients(outbox: Outbox) -> list[str]:
    return sorted(parseaddr(str(m["To"]))[1] for m in outbox.new())


# -- projects' events, with what a test does not care about filled in -----------------------------------

TASK_ID = uuid7()
PROJECT_ID = uuid7()


def _task(org: Org) -> dict[str, Any]:
    return {
        "occurred_at": org.now,
        "aggregate_id": TASK_ID,
        "org_id": org.id,
        "project_id": PROJECT_ID,
        "task_id": TASK_ID,
        "key": "WEB-42",
        "title": "Fix the <checkout> button",
    }


def assigned(org: Org, **changes: Any) -> TaskAssigned:
    values = {
        "assignee_id": org.alice.user_id,
        "previous_assignee_id": None,
        "assigned_by": org.owner.user_id,
    }
    return TaskAssigned(**{**_task(org), **values, **changes})


def commented(org: Org, **changes: Any) -> TaskCommented:
    values = {
        "comment_id": uuid7(),
        "author_id": org.owner.user_id,
        "excerpt": "Reproduced on Safari 17; the fix is in #128.",
        "watcher_ids": [org.owner.user_id, org.alice.user_id, org.bob.user_id],
    }
    return TaskCommented(**{**_task(org), **values, **changes})


def created(org: Org) -> TaskCreated:
    return TaskCreated(**_task(org), created_by=org.owner.user_id, assignee_id=None)


def status_changed(org: Org) -> TaskStatusChanged:
    return TaskStatusChanged(
        **_task(org),
        status=TaskStatus.IN_PROGRESS,
        previous_status=TaskStatus.TODO,
        changed_by=org.owner.user_id,
    )


def archived(org: Org) -> ProjectArchived:
    return ProjectArchived(
        occurred_at=org.now,
        aggregate_id=PROJECT_ID,
        org_id=org.id,
        project_id=PROJECT_ID,
        key="WEB",
        project_name="Website",
        archived_by=org.owner.user_id,
    )


# -- who hears what -------------------------------------------------------------------------------------


async def test_the_assignee_hears_of_an_assignment_by_email_and_in_the_app(
    org: Org, outbox: Outbox, container: Container, worker: Worker, client: httpx.AsyncClient, base_url: str
) -> None:
    await publish(container, worker, assigned(org))

    [mail] = outbox.new()
    assert parseaddr(str(mail["To"]))[1] == org.alice.email
    owner_name = await _display_name(container, org, org.owner)
    assert mail["Subject"] == f"{owner_name} assigned WEB-42 to you: Fix the <checkout> button"
    body = text(mail)
    assert f"{owner_name} assigned a task to you on Splitstone:" in body
    assert "WEB-42: Fix the <checkout> button" in body
    assert org.task_url(base_url) in body
    assert f'href="{org.task_url(base_url)}"' in html(mail)
    assert "Fix the &lt;checkout&gt; button" in html(mail)
    assert mail["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"  # not transactional
    [item] = await task_items(client, org.alice)
    assert item["kind"] == "projects.task_assigned"
    assert item["category"] == "projects"
    assert item["title"] == f"{owner_name} assigned WEB-42 to you: Fix the <checkout> button"
    assert item["link"] == org.task_url(base_url)
    assert item["org_id"] == str(org.id)
    for other in (org.owner, org.bob):
        assert await task_items(client, other) == []


async def test_no_one_hears_of_taking_a_task_oneself_or_of_an_unassignment(
    org: Org, outbox: Outbox, container: Container, worker: Worker, client: httpx.AsyncClient
) -> None:
    await publish(
        container,
        worker,
        assigned(org, assigned_by=org.alice.user_id),
        assigned(org, assignee_id=None, previous_assignee_id=org.alice.user_id),
        assigned(org, assignee_id=uuid7()),  # not (or no longer) a member
    )

    assert outbox.new() == []
    for who in (org.owner, org.alice, org.bob):
        assert await task_items(client, who) == []


async def test_an_assignment_by_an_api_key_names_no_one(
    org: Org, outbox: Outbox, container: Container, worker: Worker, client: httpx.AsyncClient
) -> None:
    await publish(container, worker, assigned(org, assigned_by=None))

    [mail] = outbox.new()
    assert mail["Subject"] == "WEB-42 was assigned to you: Fix the <checkout> button"
    assert "A task was assigned to you on Splitstone:" in text(mail)


async def test_every_watcher_but_the_author_hears_of_a_comment(
    org: Org, outbox: Outbox, container: Container, worker: Worker, client: httpx.AsyncClient, base_url: str
) -> None:
    stranger = uuid7()  # a watcher who left the organization
    await publish(
        container,
        worker,
        commented(org, watcher_ids=[org.owner.user_id, org.alice.user_id, org.bob.user_id, stranger]),
    )

    mails = outbox.new()
    assert sorted(parseaddr(str(m["To"]))[1] for m in mails) == sorted([org.alice.email, org.bob.email])
    owner_name = await _display_name(container, org, org.owner)
    for mail in mails:
        assert mail["Subject"] == f"{owner_name} commented on WEB-42: Fix the <checkout> button"
        assert "> Reproduced on Safari 17; the fix is in #128." in text(mail)
        assert org.task_url(base_url) in text(mail)
    for who in (org.alice, org.bob):
        [item] = await task_items(client, who)
        assert item["kind"] == "projects.task_commented"
        assert item["body"] == "Reproduced on Safari 17; the fix is in #128."
        assert item["link"] == org.task_url(base_url)
    assert await task_items(client, org.owner) == []


async def test_a_comment_only_its_author_watches_notifies_no_one(
    org: Org, outbox: Outbox, container: Container, worker: Worker, client: httpx.AsyncClient
) -> None:
    await publish(container, worker, commented(org, watcher_ids=[org.owner.user_id]))

    assert outbox.new() == []
    assert await task_items(client, org.owner) == []


async def test_a_comment_through_the_api_reaches_the_task_s_watchers(
    org: Org,
    outbox: Outbox,
    container: Container,
    worker: Worker,
    client: httpx.AsyncClient,
    clock: ManualClock,
    base_url: str,
) -> None:
    """The whole way: the API, projects' outbox, notifications' inbox, the email job, the inbox API."""
    _, key = await insert_task(
        container, clock, org.id, created_by=org.owner.user_id, assignee_id=org.alice.user_id
    )
    response = await client.post(
        f"/api/v1/orgs/{org.id}/tasks/{key}/comments",
        json={"body": "Looks **good**."},
        headers=org.bob.headers,
    )
    assert response.status_code == 201, response.text
    await worker.settle()

    assert recipients(outbox) == sorted([org.owner.email, org.alice.email])
    [item] = await task_items(client, org.alice)
    assert item["body"] == "Looks **good**."
    assert item["link"] == org.task_url(base_url, key)
    assert await task_items(client, org.bob) == []  # the author, now a watcher too

    again = await client.post(
        f"/api/v1/orgs/{org.id}/tasks/{key}/comments", json={"body": "Merged."}, headers=org.alice.headers
    )
    assert again.status_code == 201, again.text
    await worker.settle()
    assert {i["body"] for i in await task_items(client, org.bob)} == {"Merged."}


async def test_a_comment_by_an_api_key_names_no_author(
    org: Org,
    outbox: Outbox,
    container: Container,
    worker: Worker,
    client: httpx.AsyncClient,
    clock: ManualClock,
) -> None:
    _, key = await insert_task(container, clock, org.id, created_by=org.alice.user_id)
    api_key = await create_api_key(client, org.owner, str(org.id), scopes=["tasks:write"])
    response = await client.post(
        f"/api/v1/orgs/{org.id}/tasks/{key}/comments",
        json={"body": "Build 812 passed."},
        headers={"Authorization": f"Bearer {api_key['secret']}"},
    )
    assert response.status_code == 201, response.text
    await worker.settle()

    [mail] = outbox.new()
    assert parseaddr(str(mail["To"]))[1] == org.alice.email
    assert mail["Subject"] == f"New comment on {key}: Fix the checkout button"


async def test_a_user_who_opted_out_of_project_email_still_gets_the_in_app_item(
    org: Org, outbox: Outbox, container: Container, worker: Worker, client: httpx.AsyncClient
) -> None:
    response = await client.put(
        "/api/v1/notifications/preferences",
        json={"preferences": [{"category": "projects", "channel": "email", "enabled": False}]},
        headers=org.alice.headers,
    )
    assert response.status_code == 200, response.text

    await publish(container, worker, assigned(org))

    assert outbox.new() == []
    assert [i["kind"] for i in await task_items(client, org.alice)] == ["projects.task_assigned"]


@pytest.mark.parametrize("notifications_settings", [{"default_locale": "de"}], indirect=True)
async def test_a_german_recipient_reads_german(
    org: Org, outbox: Outbox, container: Container, worker: Worker, client: httpx.AsyncClient
) -> None:
    await publish(container, worker, assigned(org, assigned_by=None), commented(org, author_id=None))

    subjects = sorted(str(m["Subject"]) for m in outbox.to(org.alice.email))
    assert subjects == [
        "Neuer Kommentar zu WEB-42: Fix the <checkout> button",
        "WEB-42 wurde Ihnen zugewiesen: Fix the <checkout> button",
    ]
    titles = sorted(i["title"] for i in await task_items(client, org.alice))
    assert titles == subjects


# -- webhooks -------------------------------------------------------------------------------------------


async def test_an_endpoint_subscribed_to_task_created_gets_only_that(
    org: Org,
    container: Container,
    worker: Worker,
    client: httpx.AsyncClient,
    receiver: Receiver,
    notifications: NotificationsService,
) -> None:
    endpoint = await create_endpoint(
        client, org.owner, str(org.id), receiver.url, event_types=["projects.TaskCreated"]
    )
    task_created = created(org)

    await publish(
        container, worker, task_created, assigned(org), status_changed(org), commented(org), archived(org)
    )

    [request] = receiver.requests
    assert request.signed_by(endpoint["secret"])
    assert request.json()["type"] == "projects.TaskCreated"
    assert request.json()["data"] == {
        "org_id": str(org.id),
        "project_id": str(PROJECT_ID),
        "task_id": str(TASK_ID),
        "key": "WEB-42",
        "title": "Fix the <checkout> button",
        "created_by": str(org.owner.user_id),
        "assignee_id": None,
    }
    deliveries = await client.get(
        f"/api/v1/orgs/{org.id}/webhooks/{endpoint['id']}/deliveries", headers=org.owner.headers
    )
    assert deliveries.status_code == 200, deliveries.text
    [delivery] = deliveries.json()["items"]
    assert delivery["event_type"] == "projects.TaskCreated"
    assert delivery["status"] == "succeeded"


async def test_every_projects_event_reaches_an_endpoint_subscribed_to_everything(
    org: Org, container: Container, worker: Worker, client: httpx.AsyncClient, receiver: Receiver
) -> None:
    await create_endpoint(client, org.owner, str(org.id), receiver.url)

    await publish(
        container, worker, created(org), assigned(org), status_changed(org), commented(org), archived(org)
    )

    assert sorted(r.json()["type"] for r in receiver.requests) == sorted(PROJECTS_EVENT_TYPES)
    comment = next(r.json() for r in receiver.requests if r.json()["type"] == "projects.TaskCommented")
    assert comment["data"]["excerpt"] == "Reproduced on Safari 17; the fix is in #128."


async def test_a_redelivered_projects_event_sends_nothing_twice(
    org: Org,
    outbox: Outbox,
    container: Container,
    worker: Worker,
    client: httpx.AsyncClient,
    receiver: Receiver,
    notifications: NotificationsService,
) -> None:
    await create_endpoint(client, org.owner, str(org.id), receiver.url)
    events: list[Event] = [assigned(org), commented(org)]
    await publish(container, worker, *events)
    assert len(outbox.new()) == 3  # Alice's assignment; Alice's and Bob's comment
    assert len(receiver.requests) == 2

    # The broker delivers them again; then the handlers run again as if the inbox had forgotten them.
    inbox = next(i for i in worker.inboxes if i.module == "notifications")
    await inbox.deliver([Envelope.of(e) for e in events])
    for event in events:
        await SUBSCRIPTIONS[type(event)](notifications)(event)
    await worker.settle()

    assert len(outbox.new()) == 3
    assert len(receiver.requests) == 2
    assert len(await task_items(client, org.alice)) == 2
    assert len(await task_items(client, org.bob)) == 1


async def _display_name(container: Container, org: Org, who: SignedIn) -> str:
    notifications = container.implementations["notifications"]
    assert isinstance(notifications, NotificationsService)
    return (await notifications.auth.get_user(who.user_id)).display_name
