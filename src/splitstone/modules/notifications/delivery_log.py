"""Reading the delivery-status log: what was sent to whom, how it went, and what an email said."""

from __future__ import annotations

from datetime import datetime
from uuid import UUID

from pydantic import BaseModel
from sqlalchemy import func, select

from splitstone.kernel.db import UnitOfWorkFactory
from splitstone.modules.notifications.api import Channel, DeliveryStatus, NotificationNotFound
from splitstone.modules.notifications.storage import deliveries


class DeliveryEntry(BaseModel):
    id: UUID
    kind: str
    channel: Channel
    user_id: UUID | None
    address: str | None
    status: DeliveryStatus
    subject: str | None
    attempts: int
    last_error: str | None
    created_at: datetime
    sent_at: datetime | None


class DeliveredEmail(DeliveryEntry):
    body_text: str | None


class DeliveryLog:
    def __init__(self, uow: UnitOfWorkFactory) -> None:
        self._uow = uow

    async def recent(
        self,
        *,
        address: str | None = None,
        status: DeliveryStatus | None = None,
        channel: Channel | None = None,
        limit: int = 20,
    ) -> list[DeliveryEntry]:
        """The newest deliveries first, optionally to one address, in one status or on one channel."""
        query = select(deliveries).order_by(deliveries.c.id.desc()).limit(limit)
        if address is not None:
            query = query.where(func.lower(deliveries.c.address) == address.strip().lower())
        if status is not None:
            query = query.where(deliveries.c.status == status)
        if channel is not None:
            query = query.where(deliveries.c.channel == channel)
        async with self._uow(read_only=True) as uow:
            rows = (await uow.session.execute(query)).mappings().all()
        return [DeliveryEntry.model_validate(dict(r)) for r in rows]

    async def email(self, delivery_id: UUID) -> DeliveredEmail:
        async with self._uow(read_only=True) as uow:
            row = (
                (await uow.session.execute(select(deliveries).where(deliveries.c.id == delivery_id)))
                .mappings()
                .first()
            )
        if row is None:
            raise NotificationNotFound(f"No delivery {delivery_id}.")
        return DeliveredEmail.model_validate(dict(row))
