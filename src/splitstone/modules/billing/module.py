"""The billing module's declaration: what it offers, needs, stores, subscribes to and runs."""

from __future__ import annotations

import secrets
from collections.abc import Awaitable, Callable
from datetime import timedelta
from pathlib import Path
from typing import cast

from fastapi import Request

from splitstone.kernel.errors import NotAuthenticated
from splitstone.kernel.http.idempotency import Idempotency
from splitstone.kernel.messaging.jobs import Every, Job
from splitstone.kernel.module import JobHandlerFactory, Module, ModuleContext
from splitstone.modules.auth.api import AuthApi
from splitstone.modules.billing import cli, handlers, http, storage
from splitstone.modules.billing.accounts import Accounts
from splitstone.modules.billing.api import PUBLISHED_EVENTS, BillingApi
from splitstone.modules.billing.catalog import load_catalog
from splitstone.modules.billing.entitlements import Entitlements
from splitstone.modules.billing.inbound import InboundWebhooks
from splitstone.modules.billing.invoices import Invoices
from splitstone.modules.billing.job_kinds import (
    COLLECT_PAYMENT,
    EXPIRE_INCOMPLETE,
    FINALIZE_INVOICE,
    PURGE,
    RENEW,
    TRIAL_ENDING,
)
from splitstone.modules.billing.payments import Payments
from splitstone.modules.billing.plans import Plans
from splitstone.modules.billing.provider import PaymentProvider
from splitstone.modules.billing.provider_sandbox import SANDBOX_SETTLE, SANDBOX_WEBHOOK, SandboxProvider
from splitstone.modules.billing.provider_stripe import StripeProvider
from splitstone.modules.billing.renewals import Renewals
from splitstone.modules.billing.retention import Retention
from splitstone.modules.billing.service import BillingService
from splitstone.modules.billing.settings import BillingSettings
from splitstone.modules.billing.subscriptions import Subscriptions
from splitstone.modules.billing.upcoming import Upcoming
from splitstone.modules.billing.usage import Usage


def _provider(ctx: ModuleContext, settings: BillingSettings) -> PaymentProvider:
    if settings.provider == "stripe":
        if settings.stripe_api_key is None or settings.stripe_webhook_secret is None:
            raise ValueError(
                "SPLITSTONE_BILLING_PROVIDER=stripe needs SPLITSTONE_BILLING_STRIPE_API_KEY and "
                "SPLITSTONE_BILLING_STRIPE_WEBHOOK_SECRET"
            )
        return StripeProvider(
            api_key=settings.stripe_api_key.get_secret_value(),
            webhook_secret=settings.stripe_webhook_secret.get_secret_value(),
            api_base=settings.stripe_api_base,
            tolerance_seconds=settings.webhook_tolerance_seconds,
        )
    explicit = settings.sandbox_webhook_secret
    secret = ctx.secrets.get(
        "billing-sandbox-webhook.key",
        explicit=explicit.get_secret_value() if explicit else None,
        env_var="SPLITSTONE_BILLING_SANDBOX_WEBHOOK_SECRET",
        generate=lambda: "whsec_" + secrets.token_urlsafe(32),
    )
    url = settings.sandbox_webhook_url
    return SandboxProvider(
        uow=ctx.uow,
        clock=ctx.clock,
        secret=secret,
        webhook_url=url.format(base_url=ctx.settings.public_base_url) if url else None,
        settle_seconds=settings.sandbox_settle_seconds,
        tolerance_seconds=settings.webhook_tolerance_seconds,
    )


def build(ctx: ModuleContext) -> BillingService:
    settings = cast(BillingSettings, ctx.module_settings)
    auth = ctx.dependency(AuthApi)
    catalog = load_catalog(settings.catalog_path)
    plans = Plans(ctx.uow, ctx.clock, catalog)
    provider = _provider(ctx, settings)
    invoices = Invoices(ctx.uow, ctx.clock, plans)
    subscriptions = Subscriptions(ctx.uow, ctx.clock, plans, invoices, settings, provider.name)
    usage = Usage(ctx.uow, ctx.clock, catalog, subscriptions.state)
    entitlements = Entitlements(
        catalog=catalog,
        state=subscriptions.state,
        usage=usage,
        clock=ctx.clock,
        ttl_seconds=settings.entitlement_cache_seconds,
        upgrade_url=settings.upgrade_url.replace("{base_url}", ctx.settings.public_base_url),
    )
    subscriptions.plan_changed.append(entitlements.invalidate)
    payments = Payments(ctx.uow, ctx.clock, provider, settings, invoices, subscriptions)

    async def caller(request: Request) -> str:
        header = request.headers.get("authorization")
        if not header:
            raise NotAuthenticated("Send 'Authorization: Bearer <access token or API key>'.")
        principal = await auth.resolve_principal(header)
        return f"user:{principal.user_id}" if principal.kind == "user" else f"api_key:{principal.api_key_id}"

    return BillingService(
        catalog=catalog,
        plans=plans,
        accounts=Accounts(ctx.uow, ctx.clock, provider),
        subscriptions=subscriptions,
        renewals=Renewals(ctx.uow, ctx.clock, plans, invoices, subscriptions, settings),
        upcoming=Upcoming(ctx.uow, ctx.clock, plans, subscriptions),
        retention=Retention(ctx.uow, ctx.clock, settings),
        usage=usage,
        entitlements=entitlements,
        invoices=invoices,
        payments=payments,
        provider=provider,
        inbound=InboundWebhooks(ctx.uow, ctx.clock, provider, payments),
        auth=auth,
        idempotency=Idempotency(ctx.uow, ctx.clock, caller),
        settings=settings,
        base_url=ctx.settings.public_base_url,
    )


def _sandbox_job(method: str) -> JobHandlerFactory:
    """The sandbox's own jobs; with another provider none are scheduled, and the handler refuses."""

    def factory(service: BillingService) -> Callable[[Job], Awaitable[None]]:
        if isinstance(service.provider, SandboxProvider):
            handler: Callable[[Job], Awaitable[None]] = getattr(service.provider, method)
            return handler

        async def not_sandbox(job: Job) -> None:
            raise RuntimeError(f"job {job.kind} belongs to the sandbox provider, which is not in use")

        return not_sandbox

    return factory


module = Module(
    name="billing",
    description="Plans, subscriptions, usage metering, invoices, payments, dunning and entitlements.",
    contract=BillingApi,
    depends_on=[AuthApi],
    factory=build,
    router=http.build_router,
    metadata=storage.metadata,
    migrations=Path(__file__).parent / "migrations",
    publishes=PUBLISHED_EVENTS,
    subscriptions=handlers.SUBSCRIPTIONS,
    jobs={
        RENEW: lambda service: service.renewals.renew,
        TRIAL_ENDING: lambda service: service.renewals.announce_trial_end,
        EXPIRE_INCOMPLETE: lambda service: service.renewals.expire_incomplete,
        FINALIZE_INVOICE: lambda service: service.payments.finalize_job,
        PURGE: lambda service: service.retention.purge,
        SANDBOX_SETTLE: _sandbox_job("settle"),
    },
    recurring=[Every(PURGE, timedelta(days=1))],
    external_jobs={
        COLLECT_PAYMENT: lambda service: service.payments.collect,
        SANDBOX_WEBHOOK: _sandbox_job("deliver_webhook"),
    },
    settings=BillingSettings,
    cli=cli.build_cli,
)
