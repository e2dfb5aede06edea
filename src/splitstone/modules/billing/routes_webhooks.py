"""The payment providers' inbound webhooks: `POST /api/v1/billing/webhooks/{provider}`."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime.
from typing import Annotated

from fastapi import APIRouter, Path, Request
from pydantic import BaseModel, Field

from splitstone.kernel.app import API_PREFIX
from splitstone.modules.billing.service import BillingService


class WebhookReceipt(BaseModel):
    received: bool = True
    event_id: str = Field(examples=["evt_1QaZ2b3C4d5E6f7G8h9I0j1K"])
    type: str = Field(examples=["payment_intent.succeeded"])
    duplicate: bool = Field(description="true: this event was received before and changed nothing now.")


def router(service: BillingService) -> APIRouter:
    routes = APIRouter(prefix=f"{API_PREFIX}/billing/webhooks", tags=["billing"])

    @routes.post(
        "/{provider}",
        summary="Receive a payment provider's signed webhook",
        description="For the provider, not for clients. The signature (`Stripe-Signature`, or "
        "`Sandbox-Signature` for the sandbox) is verified over the raw body, with a timestamp tolerance; "
        "400 `webhook-rejected` otherwise. Each event id is applied once: a replay answers 200 with "
        "`duplicate: true`. 404 `unknown-payment-provider` for a provider not in use.",
        openapi_extra={"requestBody": {"content": {"application/json": {"schema": {"type": "object"}}}}},
    )
    async def receive(provider: Annotated[str, Path(max_length=50)], request: Request) -> WebhookReceipt:
        receipt = await service.inbound.receive(provider, await request.body(), request.headers)
        return WebhookReceipt(event_id=receipt.event_id, type=receipt.type, duplicate=receipt.duplicate)

    return routes
