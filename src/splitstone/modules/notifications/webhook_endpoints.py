"""An organization's webhook endpoints: create, read, change, delete, and their signing secrets.

Every operation needs `webhooks:manage` in the organization; an endpoint of another organization is
not found. A secret is shown when the endpoint is created, on request (`secret`) and after a rotation,
never in an endpoint's description. After a rotation the previous secret keeps signing alongside the
new one for `webhook_secret_rotation_hours`, so receivers can switch without dropping a message.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy import RowMapping, delete, select, update
from sqlalchemy.ext.asyncio import AsyncConnection
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory
from splitstone.modules.auth.api import AuthApi, Permission, Principal
from splitstone.modules.notifications.storage import webhook_deliveries, webhook_endpoints
from splitstone.modules.notifications.webhook_domain import WebhookDeliveryStatus, check_event_types
from splitstone.modules.notifications.webhook_errors import WebhookEndpointNotFound
from splitstone.modules.notifications.webhook_signing import generate_secret
from splitstone.modules.notifications.webhook_targets import TargetGuard

DISABLED_BY_USER = "Disabled through the API."


class EndpointView(BaseModel):
    """An endpoint as its organization sees it; never its secret."""

    id: UUID
    org_id: UUID
    url: str
    description: str
    event_types: list[str]
    enabled: bool
    disabled_reason: str | None
    disabled_at: datetime | None
    failing_since: datetime | None
    created_at: datetime
    updated_at: datetime


class CreatedEndpoint(EndpointView):
    secret: str


class EndpointSecret(BaseModel):
    secret: str
    previous_secret_expires_at: datetime | None  # until then the previous secret signs too


class WebhookEndpoints:
    """The endpoint operations behind the HTTP API."""

    def __init__(
        self, *, uow: UnitOfWorkFactory, clock: Clock, auth: AuthApi, guard: TargetGuard, rotation: timedelta
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._auth = auth
        self._guard = guard
        self._rotation = rotation

    async def create(
        self,
        principal: Principal,
        org_id: UUID,
        *,
        url: str,
        description: str = "",
        event_types: list[str] | None = None,
        enabled: bool = True,
    ) -> CreatedEndpoint:
        """A new endpoint; its secret is in this answer. An empty `event_types` means every type."""
        await self.authorize(principal, org_id)
        chosen = check_event_types(event_types or [])
        checked_url = await self._guard.check_url(url)
        now = self._clock.now()
        values: dict[str, Any] = {
            "id": uuid7(),
            "org_id": org_id,
            "url": checked_url,
            "description": description,
            "event_types": json.dumps(chosen),
            "secret": generate_secret(),
            "enabled": enabled,
            "disabled_reason": None if enabled else DISABLED_BY_USER,
            "disabled_at": None if enabled else now,
            "created_by": principal.user_id,
            "created_at": now,
            "updated_at": now,
        }
        async with self._uow() as uow:
            await uow.session.execute(webhook_endpoints.insert().values(**values))
            await uow.commit()
        return CreatedEndpoint(
            **_view({**values, "failing_since": None}).model_dump(), secret=values["secret"]
        )

    async def list_endpoints(self, principal: Principal, org_id: UUID) -> list[EndpointView]:
        """The organization's endpoints, newest first."""
        await self.authorize(principal, org_id)
        async with self._uow(read_only=True) as uow:
            rows = (
                (
                    await uow.session.execute(
                        select(webhook_endpoints)
                        .where(webhook_endpoints.c.org_id == org_id)
                        .order_by(webhook_endpoints.c.id.desc())
                    )
                )
                .mappings()
                .all()
            )
        return [_view(row) for row in rows]

    async def get(self, principal: Principal, org_id: UUID, endpoint_id: UUID) -> EndpointView:
        """One endpoint; `WebhookEndpointNotFound` unless it is the organization's."""
        await self.authorize(principal, org_id)
        async with self._uow(read_only=True) as uow:
            return _view(await endpoint_row(uow.session, org_id, endpoint_id))

    async def update(
        self,
        principal: Principal,
        org_id: UUID,
        endpoint_id: UUID,
        *,
        url: str | None = None,
        description: str | None = None,
        event_types: list[str] | None = None,
        enabled: bool | None = None,
    ) -> EndpointView:
        """Change what is given (None: unchanged).

        Re-enabling forgets why the endpoint was disabled and since when it failed; disabling cancels
        its pending deliveries.
        """
        await self.authorize(principal, org_id)
        now = self._clock.now()
        changes: dict[str, Any] = {"updated_at": now}
        if url is not None:
            changes["url"] = await self._guard.check_url(url)
        if description is not None:
            changes["description"] = description
        if event_types is not None:
            changes["event_types"] = json.dumps(check_event_types(event_types))
        async with self._uow() as uow:
            current = await endpoint_row(uow.session, org_id, endpoint_id)
            if enabled is True and not current["enabled"]:
                changes.update(enabled=True, disabled_reason=None, disabled_at=None, failing_since=None)
            elif enabled is False and current["enabled"]:
                changes.update(enabled=False, disabled_reason=DISABLED_BY_USER, disabled_at=now)
                await cancel_pending(uow.session, endpoint_id, now)
            await uow.session.execute(
                update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id).values(**changes)
            )
            await uow.commit()
        return _view({**current, **changes})

    async def delete(self, principal: Principal, org_id: UUID, endpoint_id: UUID) -> None:
        """Delete an endpoint; its deliveries and their attempts go with it (ON DELETE CASCADE)."""
        await self.authorize(principal, org_id)
        async with self._uow() as uow:
            await endpoint_row(uow.session, org_id, endpoint_id)
            await uow.session.execute(delete(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id))
            await uow.commit()

    async def secret(self, principal: Principal, org_id: UUID, endpoint_id: UUID) -> EndpointSecret:
        """The endpoint's current signing secret."""
        await self.authorize(principal, org_id)
        async with self._uow(read_only=True) as uow:
            row = await endpoint_row(uow.session, org_id, endpoint_id)
        return _secret(row, self._clock.now())

    async def rotate_secret(self, principal: Principal, org_id: UUID, endpoint_id: UUID) -> EndpointSecret:
        """A new secret; the current one keeps signing too for the rotation period."""
        await self.authorize(principal, org_id)
        now = self._clock.now()
        async with self._uow() as uow:
            row = await endpoint_row(uow.session, org_id, endpoint_id)
            keep_previous = self._rotation > timedelta(0)
            changes = {
                "secret": generate_secret(),
                "previous_secret": row["secret"] if keep_previous else None,
                "previous_secret_expires_at": now + self._rotation if keep_previous else None,
                "updated_at": now,
            }
            await uow.session.execute(
                update(webhook_endpoints).where(webhook_endpoints.c.id == endpoint_id).values(**changes)
            )
            await uow.commit()
        return _secret({**row, **changes}, now)

    async def authorize(self, principal: Principal, org_id: UUID) -> None:
        """`webhooks:manage` in the organization, or `OrganizationNotFound` / `MissingPermission`."""
        await self._auth.authorize(principal, org_id, Permission.WEBHOOKS_MANAGE)


async def cancel_pending(session: AsyncConnection, endpoint_id: UUID, now: datetime) -> None:
    """Cancel the endpoint's deliveries that have not succeeded or failed yet."""
    await session.execute(
        update(webhook_deliveries)
        .where(
            webhook_deliveries.c.endpoint_id == endpoint_id,
            webhook_deliveries.c.status == WebhookDeliveryStatus.PENDING,
        )
        .values(status=WebhookDeliveryStatus.CANCELED, next_attempt_at=None, updated_at=now)
    )


async def endpoint_row(session: AsyncConnection, org_id: UUID, endpoint_id: UUID) -> RowMapping:
    """The organization's endpoint row; `WebhookEndpointNotFound` if it has none by that id."""
    row = (
        (
            await session.execute(
                select(webhook_endpoints).where(
                    webhook_endpoints.c.id == endpoint_id, webhook_endpoints.c.org_id == org_id
                )
            )
        )
        .mappings()
        .one_or_none()
    )
    if row is None:
        raise WebhookEndpointNotFound(f"No webhook endpoint {endpoint_id} in this organization.")
    return row


def _view(row: RowMapping | dict[str, Any]) -> EndpointView:
    return EndpointView(
        id=row["id"],
        org_id=row["org_id"],
        url=row["url"],
        description=row["description"],
        event_types=json.loads(row["event_types"]),
        enabled=row["enabled"],
        disabled_reason=row["disabled_reason"],
        disabled_at=row["disabled_at"],
        failing_since=row["failing_since"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


def _secret(row: RowMapping | dict[str, Any], now: datetime) -> EndpointSecret:
    expires = row["previous_secret_expires_at"]
    return EndpointSecret(
        secret=row["secret"],
        previous_secret_expires_at=expires if row["previous_secret"] and expires and expires > now else None,
    )
