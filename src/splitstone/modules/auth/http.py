"""Auth's HTTP surface: accounts and sessions, organizations and API keys, and the JWKS document."""

from __future__ import annotations

from typing import Any

from fastapi import APIRouter

from splitstone.modules.auth import routes_accounts, routes_organizations
from splitstone.modules.auth.service import AuthService


def build_router(service: AuthService) -> APIRouter:
    router = APIRouter()
    router.include_router(routes_accounts.router(service))
    router.include_router(routes_organizations.router(service))

    @router.get(
        "/.well-known/jwks.json",
        tags=["auth"],
        summary="Public keys that verify access tokens",
        response_model=None,
    )
    async def jwks() -> dict[str, Any]:
        return service.tokens.jwks()

    return router
