"""A FastAPI dependency that turns the `Authorization` header into a principal, via any resolver.

The kernel knows nothing of auth: a module passes its resolver (auth's `resolve_principal`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from typing import Annotated, TypeVar

from fastapi import Depends
from fastapi.security import HTTPAuthorizationCredentials, HTTPBearer

from splitstone.kernel.errors import NotAuthenticated

P = TypeVar("P")

_bearer = HTTPBearer(auto_error=False, description="An access token, or an API key (`ssk_...`).")


def bearer_principal(resolve: Callable[[str], Awaitable[P]]) -> Callable[..., Awaitable[P]]:
    """A dependency that answers 401 problem+json without valid `Authorization: Bearer ...`."""

    async def dependency(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
    ) -> P:
        if credentials is None or not credentials.credentials.strip():
            raise NotAuthenticated("Send 'Authorization: Bearer <access token or API key>'.")
        return await resolve(f"Bearer {credentials.credentials.strip()}")

    return dependency
