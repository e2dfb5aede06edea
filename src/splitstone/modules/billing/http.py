"""Billing's HTTP surface: the public catalog, and each organization's subscription, billing account,
usage, entitlements and invoices; plus the payment providers' inbound webhooks."""

from __future__ import annotations

from fastapi import APIRouter

from splitstone.modules.billing import (
    routes_invoices,
    routes_plans,
    routes_subscription,
    routes_usage,
    routes_webhooks,
)
from splitstone.modules.billing.service import BillingService


def build_router(service: BillingService) -> APIRouter:
    router = APIRouter()
    router.include_router(routes_plans.router(service))
    router.include_router(routes_subscription.router(service))
    router.include_router(routes_usage.router(service))
    router.include_router(routes_invoices.router(service))
    router.include_router(routes_webhooks.router(service))
    return router
