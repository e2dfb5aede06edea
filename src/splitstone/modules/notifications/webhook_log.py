"""An endpoint's delivery log: its deliveries newest first, page by page, and each one's attempts.

Delivery ids are UUIDv7, so the id orders by creation time and a page's cursor is the last id it
showed, encoded so that clients treat it as opaque.
"""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy import RowMapping, select

from splitstone.kernel.db import UnitOfWorkFactory
from splitstone.kernel.errors import InvalidInput
from splitstone.kernel.pagination import decode_cursor, encode_cursor
from splitstone.modules.auth.api import Principal
from splitstone.modules.notifications.storage import webhook_attempts, webhook_deliveries, webhook_messages
from splitstone.modules.notifications.webhook_domain import Trigger, WebhookDeliveryStatus
from splitstone.modules.notifications.webhook_endpoints import WebhookEndpoints
from splitstone.modules.notifications.webhook_errors import WebhookDeliveryNotFound

MAX_PAGE = 100


class AttemptView(BaseModel):
    id: UUID
    attempt: int
    trigger: Trigger
    started_at: datetime
    latency_ms: int | None
    status_code: int | None
    succeeded: bool
    response_excerpt: str | None
    error: str | None


class DeliveryView(BaseModel):
    id: UUID
    endpoint_id: UUID
    message_id: str
    event_type: str
    status: WebhookDeliveryStatus
    attempts: int
    last_status_code: int | None
    last_attempt_at: datetime | None
    next_attempt_at: datetime | None
    created_at: datetime
    updated_at: datetime


class DeliveryDetail(DeliveryView):
    payload: dict[str, Any]  # the message as it is sent
    attempt_log: list[AttemptView]  # oldest first


class DeliveryPage(BaseModel):
    items: list[DeliveryView]
    next_cursor: str | None  # None on the last page


class WebhookDeliveryLog:
    """Reads an endpoint's deliveries and attempts, for the organization's admins."""

    def __init__(self, *, uow: UnitOfWorkFactory, endpoints: WebhookEndpoints) -> None:
        self._uow = uow
        self._endpoints = endpoints

    async def page(
        self,
        principal: Principal,
        org_id: UUID,
        endpoint_id: UUID,
        *,
        limit: int = 50,
        cursor: str | None = None,
        status: WebhookDeliveryStatus | None = None,
    ) -> DeliveryPage:
        """Up to `limit` deliveries older than `cursor` (from the previous page), newest first."""
        await self._endpoints.get(principal, org_id, endpoint_id)
        if not 1 <= limit <= MAX_PAGE:
            raise InvalidInput(f"limit is 1 to {MAX_PAGE}.")
        query = (
            select(webhook_deliveries)
            .where(webhook_deliveries.c.endpoint_id == endpoint_id)
            .order_by(webhook_deliveries.c.id.desc())
            .limit(limit + 1)
        )
        if cursor is not None:
            query = query.where(webhook_deliveries.c.id < decode_cursor(cursor))
        if status is not None:
            query = query.where(webhook_deliveries.c.status == status)
        async with self._uow(read_only=True) as uow:
            rows = (await uow.session.execute(query)).mappings().all()
        items = [_delivery(row) for row in rows[:limit]]
        more = len(rows) > limit
        return DeliveryPage(items=items, next_cursor=encode_cursor(items[-1].id) if more else None)

    async def get(
        self, principal: Principal, org_id: UUID, endpoint_id: UUID, delivery_id: UUID
    ) -> DeliveryDetail:
        """One delivery of the endpoint, with its message and every attempt."""
        await self._endpoints.get(principal, org_id, endpoint_id)
        async with self._uow(read_only=True) as uow:
            row = (
                (
                    await uow.session.execute(
                        select(webhook_deliveries, webhook_messages.c.payload)
                        .join(webhook_messages, webhook_messages.c.id == webhook_deliveries.c.message_id)
                        .where(
                            webhook_deliveries.c.id == delivery_id,
                            webhook_deliveries.c.endpoint_id == endpoint_id,
                        )
                    )
                )
                .mappings()
                .one_or_none()
            )
            if row is None:
                raise WebhookDeliveryNotFound(f"No delivery {delivery_id} of this endpoint.")
            attempts = (
                (
                    await uow.session.execute(
                        select(webhook_attempts)
                        .where(webhook_attempts.c.delivery_id == delivery_id)
                        .order_by(webhook_attempts.c.id)
                    )
                )
                .mappings()
                .all()
            )
        return DeliveryDetail(
            **_delivery(row).model_dump(),
            payload=json.loads(row["payload"]),
            attempt_log=[AttemptView.model_validate(dict(a)) for a in attempts],
        )


def _delivery(row: RowMapping) -> DeliveryView:
    return DeliveryView.model_validate({k: row[k] for k in DeliveryView.model_fields})
