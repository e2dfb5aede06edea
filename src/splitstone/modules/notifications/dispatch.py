"""`notify`: from a kind, recipients and data to one delivery per recipient and channel.

Everything is decided and written in one transaction of this module: the notification (deduplicated
by its idempotency key), each delivery's rendered content and status, the in-app entries, and one
`send_email` job per email. The email itself leaves later, from the job, outside any transaction; a
failed send is retried by the job runner and logged on the delivery.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from dataclasses import dataclass
from email.utils import parseaddr
from typing import Any
from uuid import UUID

import structlog
from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory, upsert_insert
from splitstone.kernel.messaging.jobs import Job, job
from splitstone.modules.auth.api import AuthApi
from splitstone.modules.notifications.api import (
    Channel,
    Delivery,
    DeliveryStatus,
    InvalidNotificationData,
    NotifyResult,
    Recipient,
)
from splitstone.modules.notifications.catalog import Kind, kind
from splitstone.modules.notifications.feed import Feed
from splitstone.modules.notifications.mailer import Mailer, OutgoingEmail, PermanentFailure, build_message
from splitstone.modules.notifications.preferences import Preferences
from splitstone.modules.notifications.settings import NotificationsSettings
from splitstone.modules.notifications.storage import deliveries, notifications
from splitstone.modules.notifications.templates import Templates
from splitstone.modules.notifications.unsubscribe import UnsubscribeLinks

SEND_EMAIL = "notifications.send_email"

log = structlog.get_logger("splitstone.notifications")


@dataclass(frozen=True)
class _Person:
    user_id: UUID | None
    address: str | None
    name: str | None
    locale: str
    channels: frozenset[Channel] | None  # None: every channel of the kind


@dataclass
class _Planned:
    person: _Person
    channel: Channel
    values: dict[str, Any]  # the delivery row, less its status


class Dispatcher:
    """Plans and records deliveries (`notify`) and sends one email (`send_email`, a job handler)."""

    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        clock: Clock,
        auth: AuthApi,
        templates: Templates,
        mailer: Mailer,
        feed: Feed,
        preferences: Preferences,
        unsubscribe: UnsubscribeLinks,
        settings: NotificationsSettings,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._auth = auth
        self._templates = templates
        self._mailer = mailer
        self._feed = feed
        self._preferences = preferences
        self._unsubscribe = unsubscribe
        self._settings = settings
        _, sender = parseaddr(settings.mail_from)
        self._message_id_domain = sender.rpartition("@")[2] or "splitstone.localhost"

    async def notify(
        self,
        kind_name: str,
        recipients: Sequence[Recipient],
        data: dict[str, Any],
        idempotency_key: str,
        org_id: UUID | None = None,
    ) -> NotifyResult:
        spec = kind(kind_name)
        _check_data(spec, data)
        if not idempotency_key or len(idempotency_key) > 200:
            raise InvalidNotificationData("The idempotency key must be 1 to 200 characters.")
        async with self._uow(read_only=True) as uow:
            earlier = await self._result_for(uow.session, idempotency_key)
        if earlier is not None:
            return earlier

        # Contract calls and rendering happen before this module's transaction opens.
        people = await self._people(recipients)
        planned = [p for person in people for p in self._plan(spec, person, data)]

        notification_id = uuid7()
        now = self._clock.now()
        announced: set[UUID] = set()
        async with self._uow() as uow:
            session = uow.session
            created = await session.execute(
                upsert_insert(notifications, session.dialect)
                .values(
                    id=notification_id,
                    kind=spec.name,
                    org_id=org_id,
                    idempotency_key=idempotency_key,
                    data=json.dumps(data, default=str),
                    created_at=now,
                )
                .on_conflict_do_nothing(index_elements=["idempotency_key"])
            )
            if created.rowcount == 0:  # a concurrent call with the same key won
                earlier = await self._result_for(session, idempotency_key)
                assert earlier is not None
                await uow.commit()  # nothing written; inside a handler, leaving uncommitted would abandon it
                return earlier
            opted_out = await self._preferences.opted_out(
                session, [p.person.user_id for p in planned if p.person.user_id], spec.category
            )
            result: list[Delivery] = []
            for plan in planned:
                delivery_id = uuid7()
                status = self._status(spec, plan, opted_out)
                await session.execute(
                    deliveries.insert().values(
                        id=delivery_id,
                        notification_id=notification_id,
                        status=status,
                        created_at=now,
                        updated_at=now,
                        sent_at=now if status is DeliveryStatus.SENT else None,
                        **plan.values,
                    )
                )
                if status is DeliveryStatus.QUEUED:
                    uow.schedule(
                        job(
                            SEND_EMAIL,
                            {"delivery_id": str(delivery_id)},
                            run_at=now,
                            idempotency_key=str(delivery_id),
                            max_attempts=self._settings.email_max_attempts,
                        )
                    )
                elif status is DeliveryStatus.SENT and plan.person.user_id is not None:
                    await self._feed.add(
                        session,
                        user_id=plan.person.user_id,
                        org_id=org_id,
                        notification_id=notification_id,
                        kind=spec.name,
                        category=spec.category,
                        title=plan.values["subject"],
                        body=plan.values["body_text"],
                        link=_link(data),
                        data=data,
                    )
                    announced.add(plan.person.user_id)
                result.append(
                    Delivery(
                        id=delivery_id,
                        channel=plan.channel,
                        user_id=plan.person.user_id,
                        address=plan.person.address,
                        status=status,
                    )
                )
            if announced:
                uow.after_commit(lambda: self._feed.announce(announced))
            await uow.commit()
        return NotifyResult(notification_id=notification_id, duplicate=False, deliveries=result)

    async def send_email(self, current: Job) -> None:
        """The `notifications.send_email` job: send one queued delivery, and log how it went."""
        delivery_id = UUID(current.payload["delivery_id"])
        async with self._uow(read_only=True) as uow:
            row = (
                (await uow.session.execute(select(deliveries).where(deliveries.c.id == delivery_id)))
                .mappings()
                .first()
            )
        if row is None or row["status"] != DeliveryStatus.QUEUED:
            return  # already sent (a redelivered job), or nothing to send
        message = build_message(
            OutgoingEmail(
                message_id=f"<{delivery_id}@{self._message_id_domain}>",
                sender=self._settings.mail_from,
                to=row["address"],
                to_name=row["recipient_name"],
                subject=row["subject"],
                text=row["body_text"],
                html=row["body_html"],
                headers=json.loads(row["headers"] or "{}"),
            )
        )
        try:
            outcome = await self._mailer.send(message)
        except PermanentFailure as refused:
            await self._record(delivery_id, current, DeliveryStatus.BOUNCED, error=str(refused))
            log.warning("email bounced", delivery_id=str(delivery_id), kind=row["kind"], error=str(refused))
            return
        except Exception as failure:
            status = DeliveryStatus.FAILED if current.is_last_attempt else DeliveryStatus.QUEUED
            await self._record(delivery_id, current, status, error=f"{type(failure).__name__}: {failure}")
            raise
        await self._record(delivery_id, current, DeliveryStatus.SENT, error=None)
        log.info("email sent", delivery_id=str(delivery_id), kind=row["kind"], outcome=outcome)

    async def _record(
        self, delivery_id: UUID, current: Job, status: DeliveryStatus, *, error: str | None
    ) -> None:
        now = self._clock.now()
        async with self._uow() as uow:
            await uow.session.execute(
                update(deliveries)
                .where(deliveries.c.id == delivery_id)
                .values(
                    status=status,
                    attempts=current.attempt,
                    last_error=None if error is None else error[:2000],
                    updated_at=now,
                    sent_at=now if status is DeliveryStatus.SENT else None,
                )
            )
            await uow.commit()

    async def _result_for(self, session: AsyncConnection, idempotency_key: str) -> NotifyResult | None:
        found = (
            await session.execute(
                select(notifications.c.id).where(notifications.c.idempotency_key == idempotency_key)
            )
        ).scalar()
        if found is None:
            return None
        rows = (
            await session.execute(
                select(deliveries).where(deliveries.c.notification_id == found).order_by(deliveries.c.id)
            )
        ).mappings()
        return NotifyResult(
            notification_id=found,
            duplicate=True,
            deliveries=[
                Delivery(
                    id=r["id"],
                    channel=Channel(r["channel"]),
                    user_id=r["user_id"],
                    address=r["address"],
                    status=DeliveryStatus(r["status"]),
                )
                for r in rows
            ],
        )

    async def _people(self, recipients: Sequence[Recipient]) -> list[_Person]:
        """Each distinct recipient with an address and a name, from auth where not given."""
        wanted = [
            r.user_id for r in recipients if r.user_id is not None and (r.email is None or r.name is None)
        ]
        users = {u.id: u for u in await self._auth.get_users(wanted)} if wanted else {}
        people: list[_Person] = []
        seen: set[object] = set()
        for recipient in recipients:
            user = users.get(recipient.user_id) if recipient.user_id is not None else None
            if recipient.user_id is not None and recipient.email is None and user is None:
                log.warning("notification recipient is not a user", user_id=str(recipient.user_id))
                continue
            address = recipient.email or (user.email if user else None)
            name = recipient.name or (user.display_name if user else None)
            identity = recipient.user_id or (address or "").lower()
            if identity in seen:
                continue
            seen.add(identity)
            locale = recipient.locale or self._settings.default_locale
            channels = frozenset(recipient.channels) if recipient.channels is not None else None
            people.append(_Person(recipient.user_id, address, name, locale, channels))
        return people

    def _plan(self, spec: Kind, person: _Person, data: dict[str, Any]) -> list[_Planned]:
        planned = []
        common = {
            "kind": spec.name,
            "category": spec.category,
            "user_id": person.user_id,
            "address": person.address,
            "recipient_name": person.name,
            "locale": person.locale,
        }
        for channel in spec.channels:
            if person.channels is not None and channel not in person.channels:
                continue
            if channel is Channel.EMAIL and person.address:
                unsubscribe = None
                headers: dict[str, str] = {}
                if not spec.transactional and person.user_id is not None:
                    unsubscribe = self._unsubscribe.url(person.user_id, spec.category)
                    headers = {
                        "List-Unsubscribe": f"<{unsubscribe}>",
                        "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
                    }
                email = self._templates.render_email(
                    spec.name, person.locale, data, recipient_name=person.name, unsubscribe_url=unsubscribe
                )
                values = {
                    **common,
                    "channel": channel,
                    "subject": email.subject,
                    "body_text": email.text,
                    "body_html": email.html,
                    "headers": json.dumps(headers),
                }
                planned.append(_Planned(person, channel, values))
            elif channel is Channel.IN_APP and person.user_id is not None:
                entry = self._templates.render_in_app(spec.name, person.locale, data)
                values = {**common, "channel": channel, "subject": entry.title, "body_text": entry.body}
                planned.append(_Planned(person, channel, values))
        return planned

    @staticmethod
    def _status(spec: Kind, plan: _Planned, opted_out: set[tuple[UUID, Channel]]) -> DeliveryStatus:
        user_id = plan.person.user_id
        if not spec.transactional and user_id is not None and (user_id, plan.channel) in opted_out:
            return DeliveryStatus.SUPPRESSED
        return DeliveryStatus.QUEUED if plan.channel is Channel.EMAIL else DeliveryStatus.SENT


def _check_data(spec: Kind, data: dict[str, Any]) -> None:
    missing = [key for key in spec.data if key not in data]
    if missing:
        raise InvalidNotificationData(
            f"Notification kind {spec.name!r} needs data {', '.join(missing)} "
            f"(it takes: {', '.join(spec.data)})."
        )


def _link(data: dict[str, Any]) -> str | None:
    link = data.get("link")
    return link if isinstance(link, str) else None
