"""The notifications module's declaration: what it offers, needs, stores, subscribes to and runs."""

from __future__ import annotations

import secrets
from datetime import timedelta
from pathlib import Path
from typing import cast

from splitstone.kernel.messaging.jobs import Every
from splitstone.kernel.module import Module, ModuleContext
from splitstone.modules.auth.api import AuthApi
from splitstone.modules.notifications import cli, handlers, http, storage
from splitstone.modules.notifications.api import PUBLISHED_EVENTS, NotificationsApi
from splitstone.modules.notifications.delivery_log import DeliveryLog
from splitstone.modules.notifications.dispatch import SEND_EMAIL, Dispatcher
from splitstone.modules.notifications.feed import Feed
from splitstone.modules.notifications.mailer import build_mailer
from splitstone.modules.notifications.preferences import Preferences
from splitstone.modules.notifications.retention import PURGE, Retention
from splitstone.modules.notifications.service import NotificationsService
from splitstone.modules.notifications.settings import NotificationsSettings
from splitstone.modules.notifications.templates import Templates
from splitstone.modules.notifications.unsubscribe import UnsubscribeLinks
from splitstone.modules.notifications.webhooks import DELIVER_WEBHOOK, Webhooks


def build(ctx: ModuleContext) -> NotificationsService:
    settings = cast(NotificationsSettings, ctx.module_settings)
    auth = ctx.dependency(AuthApi)
    base_url = ctx.settings.public_base_url
    templates = Templates(
        product_name=settings.product_name,
        app_url=settings.app_url.format(base_url=base_url),
        default_locale=settings.default_locale,
    )
    feed = Feed(ctx.uow, ctx.clock)
    preferences = Preferences(ctx.uow, ctx.clock)
    explicit = settings.link_secret.get_secret_value() if settings.link_secret else None
    link_secret = ctx.secrets.get(
        "notifications-link.key",
        explicit=explicit,
        env_var="SPLITSTONE_NOTIFICATIONS_LINK_SECRET",
        generate=lambda: secrets.token_urlsafe(32),
    )
    unsubscribe = UnsubscribeLinks(link_secret.encode(), base_url)
    dispatcher = Dispatcher(
        uow=ctx.uow,
        clock=ctx.clock,
        auth=auth,
        templates=templates,
        mailer=build_mailer(settings, ctx.settings.data_dir),
        feed=feed,
        preferences=preferences,
        unsubscribe=unsubscribe,
        settings=settings,
    )
    webhooks = Webhooks(uow=ctx.uow, clock=ctx.clock, settings=settings, auth=auth)
    return NotificationsService(
        dispatcher=dispatcher,
        feed=feed,
        preferences=preferences,
        unsubscribe=unsubscribe,
        webhooks=webhooks,
        auth=auth,
        settings=settings,
        base_url=base_url,
        delivery_log=DeliveryLog(ctx.uow),
        retention=Retention(ctx.uow, ctx.clock, settings),
    )


module = Module(
    name="notifications",
    description="Email, in-app inbox, signed outgoing webhooks, templates and preferences.",
    contract=NotificationsApi,
    depends_on=[AuthApi],
    factory=build,
    router=http.build_router,
    metadata=storage.metadata,
    migrations=Path(__file__).parent / "migrations",
    publishes=PUBLISHED_EVENTS,
    subscriptions=handlers.SUBSCRIPTIONS,
    jobs={PURGE: lambda service: service.retention.purge},
    recurring=[Every(PURGE, timedelta(hours=1))],
    external_jobs={
        SEND_EMAIL: lambda service: service.dispatcher.send_email,
        DELIVER_WEBHOOK: lambda service: service.webhooks.deliver,
    },
    settings=NotificationsSettings,
    cli=cli.build_cli,
)
