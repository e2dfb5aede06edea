"""Routes of the signed-in user's in-app inbox and its live stream, under /api/v1/notifications.

Preferences and unsubscribe links are in `routes_preferences`, included from here.
"""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime, and the
# user dependency is a local alias of `router()`.
from typing import Annotated, TypeAlias
from uuid import UUID

import anyio
from fastapi import APIRouter, Depends, Header, Query
from fastapi.security import APIKeyQuery, HTTPAuthorizationCredentials, HTTPBearer
from pydantic import BaseModel, Field
from sse_starlette import EventSourceResponse

from splitstone.kernel.app import API_PREFIX
from splitstone.kernel.errors import NotAuthenticated, PermissionDenied
from splitstone.kernel.http.security import bearer_principal
from splitstone.modules.auth.api import Principal
from splitstone.modules.notifications import routes_preferences, stream
from splitstone.modules.notifications.feed import InboxItem, InboxPage
from splitstone.modules.notifications.service import NotificationsService

PREFIX = f"{API_PREFIX}/notifications"
TAG = "notifications"
SHUTDOWN_GRACE_SECONDS = 2.0

OrgFilter = Annotated[UUID | None, Query(description="Only items about this organization.")]

_bearer = HTTPBearer(auto_error=False, description="An access token of a signed-in user.")


class UserRequired(PermissionDenied):
    code = "user-required"
    title = "A signed-in user is required"


class UnreadCount(BaseModel):
    unread: int = Field(description="Unread items that are not archived.", examples=[3])


class ReadAllResult(BaseModel):
    updated: int = Field(description="How many items this marked read.", examples=[3])
    unread: int = Field(
        description="Unread items left (in other organizations, when filtered).", examples=[0]
    )


def user_of(principal: Principal) -> UUID:
    """The principal's user id; API keys act for an organization and have no inbox (403)."""
    if principal.kind != "user" or principal.user_id is None:
        raise UserRequired("API keys have no inbox or notification preferences; sign in as a user.")
    return principal.user_id


# A security scheme, not a plain parameter: the schema then says the stream takes either credential.
_access_token = APIKeyQuery(
    name="access_token",
    scheme_name="AccessTokenQuery",
    auto_error=False,
    description=(
        "The access token, for clients that cannot send headers (the browser's `EventSource`). Prefer "
        "the `Authorization` header: a URL can end up in proxy logs and browser history, so use this "
        "only with short-lived access tokens."
    ),
)


def router(service: NotificationsService) -> APIRouter:
    routes = APIRouter(prefix=PREFIX, tags=[TAG])
    resolve = service.auth.resolve_principal
    principal = bearer_principal(resolve)

    async def current_user(who: Annotated[Principal, Depends(principal)]) -> UUID:
        return user_of(who)

    async def stream_user(
        credentials: Annotated[HTTPAuthorizationCredentials | None, Depends(_bearer)],
        access_token: Annotated[str | None, Depends(_access_token)],
    ) -> UUID:
        token = credentials.credentials.strip() if credentials is not None else access_token
        if not token:
            raise NotAuthenticated("Send 'Authorization: Bearer <access token>' or '?access_token='.")
        return user_of(await resolve(f"Bearer {token}"))

    CurrentUser: TypeAlias = Annotated[UUID, Depends(current_user)]
    StreamUser: TypeAlias = Annotated[UUID, Depends(stream_user)]
    feed = service.feed

    @routes.get("", summary="Your inbox, newest first")
    async def list_notifications(
        user_id: CurrentUser,
        cursor: Annotated[
            str | None, Query(max_length=64, description="`next_cursor` of the previous page.")
        ] = None,
        limit: Annotated[int, Query(ge=1, le=100)] = 20,
        unread: Annotated[bool, Query(description="Only unread items.")] = False,
        archived: Annotated[
            bool, Query(description="The archive instead of the inbox: archived items only.")
        ] = False,
        org_id: OrgFilter = None,
    ) -> InboxPage:
        return await feed.page(
            user_id, cursor=cursor, limit=limit, unread_only=unread, archived=archived, org_id=org_id
        )

    @routes.get("/unread-count", summary="How many of your items are unread (the badge)")
    async def unread_count(user_id: CurrentUser, org_id: OrgFilter = None) -> UnreadCount:
        return UnreadCount(unread=await feed.unread_count(user_id, org_id))

    @routes.post("/read-all", summary="Mark every unread item in your inbox read")
    async def read_all(user_id: CurrentUser, org_id: OrgFilter = None) -> ReadAllResult:
        updated = await feed.mark_all_read(user_id, org_id)
        return ReadAllResult(updated=updated, unread=await feed.unread_count(user_id))

    @routes.get(
        "/stream",
        summary="Your new items, live (Server-Sent Events)",
        description=(
            "Each new item arrives as an event `notification` (its `id` is the item id, its `data` the "
            'item as JSON), followed by an event `unread` with `{"unread": n}`; `unread` is also sent '
            "on connecting and whenever the count changes. A comment `ping` keeps idle connections "
            "open. After a reconnect, `Last-Event-ID` (or `after`) resumes after that item; without it "
            "the stream starts with items created from now on. Browsers' `EventSource` cannot send "
            "`Authorization`, hence `access_token`. A stream ends after "
            "`SPLITSTONE_NOTIFICATIONS_STREAM_MAX_SECONDS` (15 minutes): reconnect with `Last-Event-ID` "
            "(and a current token)."
        ),
        response_class=EventSourceResponse,
        responses={200: {"content": {"text/event-stream": {}}, "description": "An endless event stream."}},
    )
    async def live(
        user_id: StreamUser,
        after: Annotated[UUID | None, Query(description="Resume after this item id.")] = None,
        last_event_id: Annotated[
            str | None,
            Header(
                alias="Last-Event-ID",
                max_length=64,
                description="Sent by `EventSource` when it reconnects: resume after this item id.",
            ),
        ] = None,
    ) -> EventSourceResponse:
        resume = last_event_id if last_event_id is not None else (str(after) if after else None)
        position = await stream.open_position(feed, user_id, resume)
        settings = service.settings
        # Set on server shutdown: the stream then ends by itself, within the grace period.
        stop = anyio.Event()
        return EventSourceResponse(
            stream.events(
                feed,
                user_id,
                position,
                poll_seconds=settings.stream_poll_seconds,
                stop=stop,
                max_seconds=settings.stream_max_seconds,
            ),
            ping=settings.stream_keepalive_seconds,
            ping_message_factory=stream.keepalive,
            shutdown_event=stop,
            shutdown_grace_period=SHUTDOWN_GRACE_SECONDS,
        )

    @routes.post("/{item_id}/read", summary="Mark one item read")
    async def mark_read(item_id: UUID, user_id: CurrentUser) -> InboxItem:
        return await feed.mark_read(user_id, item_id)

    @routes.post("/{item_id}/unread", summary="Mark one item unread")
    async def mark_unread(item_id: UUID, user_id: CurrentUser) -> InboxItem:
        return await feed.mark_unread(user_id, item_id)

    @routes.post("/{item_id}/archive", summary="Archive one item: it leaves the inbox for the archive")
    async def archive(item_id: UUID, user_id: CurrentUser) -> InboxItem:
        return await feed.archive(user_id, item_id)

    @routes.post("/{item_id}/unarchive", summary="Bring one item back from the archive")
    async def unarchive(item_id: UUID, user_id: CurrentUser) -> InboxItem:
        return await feed.unarchive(user_id, item_id)

    routes.include_router(routes_preferences.router(service, current_user))
    return routes
