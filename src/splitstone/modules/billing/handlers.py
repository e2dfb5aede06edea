"""Other modules' events that billing reacts to.

Each handler runs in the inbox transaction of its event, so its writes commit with the inbox record.
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Any

from splitstone.kernel.module import EventHandlerFactory
from splitstone.modules.auth.api import OrganizationCreated
from splitstone.modules.billing.service import BillingService

Handler = Callable[[Any], Awaitable[None]]


def start_free_plan(service: BillingService) -> Handler:
    async def handle(event: OrganizationCreated) -> None:
        await service.subscriptions.open_account(event.org_id, event.org_name)

    return handle


SUBSCRIPTIONS: dict[type, EventHandlerFactory] = {OrganizationCreated: start_free_plan}
