"""The auth module's declaration: what it offers, needs, stores, publishes and serves."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import cast

from splitstone.kernel.module import Module, ModuleContext
from splitstone.modules.auth import cli, http, remote, storage
from splitstone.modules.auth.accounts import Accounts
from splitstone.modules.auth.api import PUBLISHED_EVENTS, AuthApi
from splitstone.modules.auth.api_keys import ApiKeys
from splitstone.modules.auth.organizations import Organizations
from splitstone.modules.auth.passwords import PasswordHasher
from splitstone.modules.auth.service import AuthService
from splitstone.modules.auth.settings import AuthSettings
from splitstone.modules.auth.tokens import TokenService, generate_signing_key_pem


def build(ctx: ModuleContext) -> AuthService:
    settings = cast(AuthSettings, ctx.module_settings)
    if settings.require_verified_email is None:
        settings = settings.model_copy(update={"require_verified_email": ctx.settings.is_production})
    explicit_key = settings.jwt_private_key.get_secret_value() if settings.jwt_private_key else None
    signing_key = ctx.secrets.get(
        "auth-jwt-ed25519.pem",
        explicit=explicit_key,
        env_var="SPLITSTONE_AUTH_JWT_PRIVATE_KEY",
        generate=generate_signing_key_pem,
    )
    tokens = TokenService(
        signing_key,
        issuer=settings.jwt_issuer,
        audience=settings.jwt_audience,
        access_ttl=timedelta(seconds=settings.access_token_ttl_seconds),
        clock=ctx.clock,
    )
    accounts = Accounts(
        uow=ctx.uow,
        clock=ctx.clock,
        settings=settings,
        hasher=PasswordHasher(settings),
        tokens=tokens,
        rate_limiter=ctx.rate_limiter,
    )
    organizations = Organizations(uow=ctx.uow, clock=ctx.clock, settings=settings)
    api_keys = ApiKeys(uow=ctx.uow, clock=ctx.clock, organizations=organizations)
    return AuthService(accounts, organizations, api_keys, tokens)


module = Module(
    name="auth",
    description="Users, organizations, roles, sessions and API keys.",
    contract=AuthApi,
    factory=build,
    router=http.build_router,
    metadata=storage.metadata,
    migrations=Path(__file__).parent / "migrations",
    publishes=PUBLISHED_EVENTS,
    settings=AuthSettings,
    remote=remote.build_remote,
    cli=cli.build_cli,
)
