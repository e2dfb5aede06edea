"""`notify` and email delivery: idempotency, preferences, retries, bounces, and events becoming emails.

Emails go to a real SMTP server of the test's own (aiosmtpd), and are read back parsed.
"""

from __future__ import annotations

from collections.abc import Iterator
from datetime import timedelta
from typing import Any
from uuid import UUID

import httpx
import pytest
from sqlalchemy import select

from splitstone.kernel.clock import ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.events import Envelope, EventRecorder
from splitstone.kernel.messaging.jobs import DEAD, DONE, PENDING
from splitstone.kernel.messaging.tables import jobs
from splitstone.kernel.messaging.worker import Worker
from splitstone.modules.auth.api import UserRegistered
from splitstone.modules.notifications.api import (
    Category,
    Channel,
    DeliveryStatus,
    InvalidNotificationData,
    Recipient,
    UnknownNotificationKind,
)
from splitstone.modules.notifications.catalog import KINDS, WEBHOOK_EVENT_TYPES
from splitstone.modules.notifications.handlers import SUBSCRIPTIONS, WEBHOOK_EVENTS
from splitstone.modules.notifications.preferences import PreferenceChange
from splitstone.modules.notifications.service import NotificationsService
from splitstone.modules.notifications.settings import NotificationsSettings
from splitstone.modules.notifications.storage import deliveries
from tests.modules.auth.conftest import Users
from tests.support.mailbox import Mailbox, free_port, smtp_server

MEMBER_JOINED = KINDS["auth.member_joined"].example
DISABLED = KINDS["notifications.webhook_endpoint_disabled"].example


@pytest.fixture
def smtp_port() -> int:
    return free_port()


@pytest.fixture
def notifications_settings(smtp_port: int) -> NotificationsSettings:
    return NotificationsSettings(
        email_backend="smtp",
        smtp_host="127.0.0.1",
        smtp_port=smtp_port,
        smtp_security="none",
        smtp_timeout_seconds=2,
        email_max_attempts=3,
        webhook_allow_private_targets=True,
    )


@pytest.fixture
def mailbox(smtp_port: int) -> Iterator[Mailbox]:
    with smtp_server(smtp_port) as received:
        yield received


async def delivery_rows(container: Container) -> list[dict[str, Any]]:
    async with container.databases["notifications"].session() as connection:
        rows = await connection.execute(select(deliveries).order_by(deliveries.c.id))
        return [dict(r) for r in rows.mappings()]


async def job_rows(container: Container) -> list[dict[str, Any]]:
    async with container.databases["notifications"].session() as connection:
        rows = await connection.execute(select(jobs).where(jobs.c.kind == "notifications.send_email"))
        return [dict(r) for r in rows.mappings()]


class TestEventsBecomeEmails:
    async def test_registering_sends_the_verification_email_once_even_if_the_event_comes_again(
        self,
        users: Users,
        worker: Worker,
        mailbox: Mailbox,
        events: EventRecorder,
        container: Container,
        client: httpx.AsyncClient,
    ) -> None:
        registered = await users.register("ada@example.com")
        await worker.settle()

        [mail] = mailbox.messages("ada@example.com")
        link = mail.link("http://127.0.0.1:8000/verify-email?token=")
        assert link.endswith(registered.verification_token)
        assert mail.message["List-Unsubscribe"] is None  # security mail: no opting out

        # The broker delivers the same event again: no second email.
        inbox = next(i for i in worker.inboxes if i.module == "notifications")
        await inbox.deliver([Envelope.of(events.last(UserRegistered))])
        await worker.settle()
        assert len(mailbox.messages("ada@example.com")) == 1

        token = link.rpartition("=")[2]
        verified = await client.post("/api/v1/auth/verify-email", json={"token": token})
        assert verified.status_code == 200, verified.text

    async def test_a_handler_that_runs_twice_notifies_once(
        self, users: Users, notifications: NotificationsService, events: EventRecorder, container: Container
    ) -> None:
        await users.register("grace@example.com")
        event = events.last(UserRegistered)
        handle = SUBSCRIPTIONS[UserRegistered](notifications)

        await handle(event)  # as if the inbox had forgotten it had run (its record purged)
        await handle(event)

        rows = [r for r in await delivery_rows(container) if r["address"] == event.email]
        assert len(rows) == 1

    def test_every_webhook_event_type_has_a_handler(self) -> None:
        assert tuple(e.name for e in WEBHOOK_EVENTS) == WEBHOOK_EVENT_TYPES
        assert set(WEBHOOK_EVENTS) <= SUBSCRIPTIONS.keys()


class TestNotify:
    async def test_an_idempotency_key_sends_nothing_twice(
        self,
        notifications: NotificationsService,
        users: Users,
        worker: Worker,
        mailbox: Mailbox,
        container: Container,
    ) -> None:
        ada = await users.signed_in("ada@example.com")
        recipients = [Recipient(user_id=ada.user_id)]

        first = await notifications.notify("auth.member_joined", recipients, MEMBER_JOINED, "joined-1")
        again = await notifications.notify("auth.member_joined", recipients, MEMBER_JOINED, "joined-1")
        await worker.settle()

        assert first.duplicate is False
        assert again.duplicate is True
        assert again.notification_id == first.notification_id
        assert sorted(d.channel for d in first.deliveries) == [Channel.EMAIL, Channel.IN_APP]
        assert [d.id for d in again.deliveries] == sorted(d.id for d in first.deliveries)
        assert len(mailbox.messages("ada@example.com", containing="Linus")) == 1
        [email] = [d for d in first.deliveries if d.channel is Channel.EMAIL]
        assert [j["idempotency_key"] for j in await job_rows(container)].count(str(email.id)) == 1

    async def test_product_email_respects_preferences_and_carries_one_click_unsubscribe(
        self,
        notifications: NotificationsService,
        users: Users,
        worker: Worker,
        mailbox: Mailbox,
        client: httpx.AsyncClient,
    ) -> None:
        ada = await users.signed_in("ada@example.com")
        await notifications.notify("auth.member_joined", [Recipient(user_id=ada.user_id)], MEMBER_JOINED, "a")
        await worker.settle()
        [mail] = mailbox.messages("ada@example.com", containing="Linus")
        assert mail.message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
        unsubscribe = str(mail.message["List-Unsubscribe"]).strip("<>")

        # What a mail provider does for one-click unsubscribe (RFC 8058).
        answered = await client.post(
            unsubscribe.removeprefix("http://127.0.0.1:8000"),
            content=b"List-Unsubscribe=One-Click",
            headers={"content-type": "application/x-www-form-urlencoded"},
        )
        assert answered.status_code == 200, answered.text

        result = await notifications.notify(
            "auth.member_joined", [Recipient(user_id=ada.user_id)], MEMBER_JOINED, "b"
        )
        await worker.settle()
        statuses = {d.channel: d.status for d in result.deliveries}
        assert statuses == {Channel.EMAIL: DeliveryStatus.SUPPRESSED, Channel.IN_APP: DeliveryStatus.SENT}
        assert len(mailbox.messages("ada@example.com", containing="Linus")) == 1

    async def test_transactional_mail_ignores_opt_outs(
        self, notifications: NotificationsService, users: Users, worker: Worker, mailbox: Mailbox
    ) -> None:
        ada = await users.signed_in("ada@example.com")
        await notifications.preferences.put(
            ada.user_id,
            [
                PreferenceChange(category=Category.ORGANIZATION, channel=Channel.EMAIL, enabled=False),
                PreferenceChange(category=Category.ORGANIZATION, channel=Channel.IN_APP, enabled=False),
            ],
        )

        result = await notifications.notify(
            "notifications.webhook_endpoint_disabled", [Recipient(user_id=ada.user_id)], DISABLED, "k"
        )
        await worker.settle()

        assert {d.status for d in result.deliveries} == {DeliveryStatus.QUEUED, DeliveryStatus.SENT}
        [mail] = mailbox.messages("ada@example.com", containing=DISABLED["url"])
        assert mail.message["List-Unsubscribe"] is None

    async def test_bad_requests_are_refused_clearly(self, notifications: NotificationsService) -> None:
        someone = [Recipient(email="x@example.com")]
        with pytest.raises(UnknownNotificationKind, match=r"No notification kind 'auth\.nope'"):
            await notifications.notify("auth.nope", someone, {}, "k1")
        with pytest.raises(InvalidNotificationData, match="needs data verify_url, expires_at"):
            await notifications.notify("auth.verify_email", someone, {"display_name": "X"}, "k2")

    async def test_unknown_users_are_skipped_and_addresses_alone_get_email(
        self, notifications: NotificationsService, worker: Worker, mailbox: Mailbox
    ) -> None:
        nobody = UUID("01920000-0000-7000-8000-000000000000")
        result = await notifications.notify(
            "auth.member_joined",
            [Recipient(user_id=nobody), Recipient(email="outsider@example.com", name="Out Sider")],
            MEMBER_JOINED,
            "k",
        )
        await worker.settle()

        assert [(d.channel, d.address) for d in result.deliveries] == [
            (Channel.EMAIL, "outsider@example.com")
        ]
        assert len(mailbox.messages("outsider@example.com")) == 1


class TestDelivery:
    async def test_a_mail_server_that_is_down_is_retried_until_it_accepts(
        self,
        notifications: NotificationsService,
        worker: Worker,
        container: Container,
        clock: ManualClock,
        smtp_port: int,
    ) -> None:
        await notifications.notify(
            "auth.password_changed", [Recipient(email="ada@example.com")], {"changed_at": "2026-01-01"}, "k"
        )
        await worker.settle()  # nothing listens on the port yet

        [row] = await delivery_rows(container)
        assert (row["status"], row["attempts"]) == (DeliveryStatus.QUEUED, 1)
        assert "TemporaryFailure" in row["last_error"]
        [job_row] = await job_rows(container)
        assert (job_row["status"], job_row["attempts"]) == (PENDING, 1)

        with smtp_server(smtp_port) as mailbox:
            clock.advance(timedelta(minutes=10))
            await worker.settle()
            [mail] = mailbox.messages("ada@example.com")

        [row] = await delivery_rows(container)
        assert (row["status"], row["attempts"], row["last_error"]) == (DeliveryStatus.SENT, 2, None)
        assert row["sent_at"] == clock.now()
        assert mail.message["Message-ID"] == f"<{row['id']}@localhost>"
        [job_row] = await job_rows(container)
        assert job_row["status"] == DONE

    async def test_a_send_that_keeps_failing_ends_failed_and_dead_lettered(
        self, notifications: NotificationsService, worker: Worker, container: Container, clock: ManualClock
    ) -> None:
        await notifications.notify(
            "auth.password_changed", [Recipient(email="ada@example.com")], {"changed_at": "2026-01-01"}, "k"
        )
        for _ in range(3):
            await worker.settle()
            clock.advance(timedelta(hours=1))

        [row] = await delivery_rows(container)
        assert (row["status"], row["attempts"]) == (DeliveryStatus.FAILED, 3)
        [job_row] = await job_rows(container)
        assert job_row["status"] == DEAD

    async def test_a_refused_recipient_bounces_without_retries(
        self, notifications: NotificationsService, worker: Worker, container: Container, mailbox: Mailbox
    ) -> None:
        mailbox.refused.add("gone@example.com")
        await notifications.notify(
            "auth.password_changed", [Recipient(email="gone@example.com")], {"changed_at": "2026-01-01"}, "k"
        )
        await worker.settle()

        [row] = await delivery_rows(container)
        assert (row["status"], row["attempts"]) == (DeliveryStatus.BOUNCED, 1)
        assert "550" in row["last_error"]
        [job_row] = await job_rows(container)
        assert job_row["status"] == DONE


async def test_kinds_and_webhook_event_types_are_listed(client: httpx.AsyncClient) -> None:
    kinds = await client.get("/api/v1/notifications/kinds")
    assert kinds.status_code == 200
    by_kind = {k["kind"]: k for k in kinds.json()["items"]}
    assert by_kind.keys() == KINDS.keys()
    assert by_kind["auth.verify_email"] == {
        "kind": "auth.verify_email",
        "category": "security",
        "transactional": True,
        "channels": ["email"],
        "description": KINDS["auth.verify_email"].description,
    }

    types = await client.get("/api/v1/webhooks/event-types")
    assert types.status_code == 200
    assert types.json() == {"items": list(WEBHOOK_EVENT_TYPES), "test_event_type": "webhook.test"}
