"""Routes of notification preferences and of emails' one-click unsubscribe links (RFC 8058).

Included by `routes_inbox` under /api/v1/notifications. The unsubscribe routes need no sign-in: the
signed token in the link says who and what.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime, and the
# user dependency is a local alias of `router()`.
from collections.abc import Awaitable, Callable
from html import escape
from typing import Annotated, Any, Literal, TypeAlias
from urllib.parse import urlencode
from uuid import UUID

from fastapi import APIRouter, Depends, Query, Request
from fastapi.responses import HTMLResponse, JSONResponse
from pydantic import BaseModel, ConfigDict, Field, StrictBool

from splitstone.modules.notifications.api import Category, Channel
from splitstone.modules.notifications.preferences import (
    LOCKED,
    Preference,
    PreferenceChange,
    PreferenceLocked,
)
from splitstone.modules.notifications.service import NotificationsService

UnsubscribeToken = Annotated[
    str, Query(min_length=1, max_length=200, description="The signed token from the email's link.")
]

# The page is static apart from escaped text: no scripts, no third-party anything, and the token in its
# URL must not leak through a Referer.
_PAGE_HEADERS = {
    "Cache-Control": "no-store",
    "Content-Security-Policy": (
        "default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; base-uri 'none'; "
        "frame-ancestors 'none'"
    ),
    "Referrer-Policy": "no-referrer",
    "X-Robots-Tag": "noindex",
}


class PreferenceChoice(PreferenceChange):
    enabled: StrictBool = Field(examples=[False])  # `0` or `"false"` is refused, as the schema says


class PreferencesUpdate(BaseModel):
    model_config = ConfigDict(extra="forbid")

    preferences: list[PreferenceChoice] = Field(
        min_length=1,
        max_length=100,
        description="The choices to change; the others stay as they are.",
        examples=[[{"category": "organization", "channel": "email", "enabled": False}]],
    )


class PreferencesResponse(BaseModel):
    """Every category on every channel (the same shape as the update, so it can be edited and sent)."""

    preferences: list[Preference]


class Unsubscribed(BaseModel):
    category: Category = Field(examples=["organization"])
    channel: Literal[Channel.EMAIL] = Channel.EMAIL
    enabled: Literal[False] = False
    detail: str = Field(examples=["You will no longer receive organization emails."])


def router(service: NotificationsService, current_user: Callable[..., Awaitable[UUID]]) -> APIRouter:
    routes = APIRouter()
    CurrentUser: TypeAlias = Annotated[UUID, Depends(current_user)]
    preferences = service.preferences
    links = service.unsubscribe

    @routes.get("/preferences", summary="Which categories you receive on which channel")
    async def get_preferences(user_id: CurrentUser) -> PreferencesResponse:
        return PreferencesResponse(preferences=await preferences.get(user_id))

    @routes.put(
        "/preferences",
        summary="Turn categories on or off per channel",
        description="Partial: only the listed choices change. `security` cannot be turned off (422).",
    )
    async def put_preferences(body: PreferencesUpdate, user_id: CurrentUser) -> PreferencesResponse:
        return PreferencesResponse(preferences=await preferences.put(user_id, body.preferences))

    @routes.get(
        "/unsubscribe",
        response_class=HTMLResponse,
        summary="The page behind an email's unsubscribe link",
        description=(
            "Changes nothing (link scanners fetch links): it shows a button that POSTs to the same URL."
        ),
    )
    async def unsubscribe_page(token: UnsubscribeToken) -> HTMLResponse:
        _, category = links.verify(token)
        _refuse_locked(category)
        return HTMLResponse(_confirm_page(category, token), headers=_PAGE_HEADERS)

    @routes.post(
        "/unsubscribe",
        summary="One-click unsubscribe (RFC 8058): stop this category's email",
        description=(
            "The target of `List-Unsubscribe` with `List-Unsubscribe-Post: List-Unsubscribe=One-Click`. "
            "Any body is accepted (mail providers send `List-Unsubscribe=One-Click`), and it is "
            "idempotent. Answers HTML to a browser's form, JSON otherwise."
        ),
        response_model=Unsubscribed,
        responses={200: {"content": {"text/html": {}}}},
    )
    async def unsubscribe(token: UnsubscribeToken, request: Request) -> Any:
        user_id, category = links.verify(token)
        _refuse_locked(category)
        await preferences.unsubscribe(user_id, category)
        answer = Unsubscribed(
            category=category, detail=f"You will no longer receive {category.value} emails."
        )
        if "text/html" in request.headers.get("accept", ""):
            return HTMLResponse(_done_page(answer), headers=_PAGE_HEADERS)
        return JSONResponse(answer.model_dump(mode="json"), headers={"Cache-Control": "no-store"})

    return routes


def _refuse_locked(category: Category) -> None:
    if category in LOCKED:
        raise PreferenceLocked(f"{category.value} email is always delivered; it cannot be unsubscribed.")


def _confirm_page(category: Category, token: str) -> str:
    action = escape("?" + urlencode({"token": token}))
    return _page(
        "Unsubscribe",
        f"<p>Stop receiving <strong>{escape(category.value)}</strong> emails?</p>"
        f'<form method="post" action="{action}"><button type="submit">Unsubscribe</button></form>'
        "<p>You can turn them back on in your notification preferences.</p>",
    )


def _done_page(answer: Unsubscribed) -> str:
    return _page("Unsubscribed", f"<p>{escape(answer.detail)}</p>")


def _page(title: str, body: str) -> str:
    return (
        '<!doctype html><html lang="en"><head><meta charset="utf-8">'
        '<meta name="viewport" content="width=device-width, initial-scale=1">'
        f"<title>{escape(title)}</title>"
        "<style>body{font-family:system-ui,sans-serif;max-width:32rem;margin:4rem auto;padding:0 1rem}"
        "button{font-size:1rem;padding:.5rem 1rem}</style>"
        f"</head><body><h1>{escape(title)}</h1>{body}</body></html>"
    )
