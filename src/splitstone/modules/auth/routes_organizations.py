"""Routes of organizations, members, invitations and API keys: parse, call the use case, shape the answer."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime, and the
# principal dependency is a local alias of `router()`.
from datetime import datetime
from typing import Annotated, Generic, TypeAlias, TypeVar
from uuid import UUID

from fastapi import APIRouter, Depends, Response, status
from pydantic import AfterValidator, AwareDatetime, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from splitstone.kernel.app import API_PREFIX, NOT_BLANK
from splitstone.kernel.http.security import bearer_principal
from splitstone.modules.auth.api import MemberInfo, Permission, Principal, Role
from splitstone.modules.auth.api_keys import READ_SCOPES
from splitstone.modules.auth.service import AuthService

T = TypeVar("T")

_ORG_ID = "0191f0a4-7c1e-7b3a-9d2e-5f6a7b8c9d0e"
_USER_ID = "0191f0a4-1111-7b3a-9d2e-5f6a7b8c9d0e"

Name = Annotated[
    str, StringConstraints(min_length=1, max_length=200, pattern=NOT_BLANK), AfterValidator(str.strip)
]


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Items(BaseModel, Generic[T]):
    """A list answer: `{"items": [...]}`, so fields can be added later without breaking clients."""

    items: list[T]


# -- organizations --------------------------------------------------------------------------------------


class OrganizationCreate(_Request):
    name: Name = Field(
        description="Shown to members; surrounding spaces are removed.", examples=["Acme Inc."]
    )


class OrganizationUpdate(_Request):
    name: Name = Field(examples=["Acme Corporation"])


class OrganizationResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID = Field(examples=[_ORG_ID])
    name: str = Field(examples=["Acme Inc."])
    role: Role | None = Field(
        description="Your role here; null when called with an API key.", examples=["owner"]
    )
    created_at: datetime
    updated_at: datetime


# -- members -----------------------------------------------------------------------------------------------


class MemberResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    org_id: UUID = Field(examples=[_ORG_ID])
    user_id: UUID = Field(examples=[_USER_ID])
    email: str = Field(examples=["ada@example.com"])
    display_name: str = Field(examples=["Ada"])
    role: Role = Field(examples=["member"])
    joined_at: datetime


class MemberRoleUpdate(_Request):
    role: Role = Field(
        description="Admins may set member or admin; only owners grant owner.", examples=["admin"]
    )


# -- invitations -------------------------------------------------------------------------------------------


class InvitationCreate(_Request):
    email: EmailStr = Field(max_length=320, examples=["grace@example.com"])
    role: Role = Field(default=Role.MEMBER, description="The role the invitee gets on accepting.")


class InvitationResponse(BaseModel):
    """An invitation; its token only travels to the invitee (by email), never in an answer."""

    model_config = ConfigDict(from_attributes=True)

    id: UUID
    org_id: UUID = Field(examples=[_ORG_ID])
    email: str = Field(examples=["grace@example.com"])
    role: Role
    invited_by: UUID = Field(examples=[_USER_ID])
    created_at: datetime
    expires_at: datetime


class InvitationAccept(_Request):
    token: str = Field(min_length=1, max_length=200, description="The token from the invitation email.")


# -- API keys ----------------------------------------------------------------------------------------------


class ApiKeyCreate(_Request):
    name: Name = Field(description="What the key is for.", examples=["CI deploys"])
    scopes: list[Permission] = Field(
        default_factory=lambda: sorted(READ_SCOPES),
        min_length=1,
        max_length=len(Permission),
        description="What the key may do; at most your own role's permissions. Default: the read scopes.",
        examples=[["org:read", "projects:read"]],
    )
    expires_at: AwareDatetime | None = Field(
        default=None, description="When the key stops working (timezone-aware, in the future); none: never."
    )


class ApiKeyResponse(BaseModel):
    model_config = ConfigDict(from_attributes=True)

    id: UUID
    name: str = Field(examples=["CI deploys"])
    prefix: str = Field(
        description="The key's visible start, to recognise it.", examples=["ssk_Xb3kQ9mPz2Lw"]
    )
    scopes: list[Permission] = Field(examples=[["org:read", "projects:read"]])
    created_at: datetime
    created_by: UUID = Field(examples=[_USER_ID])
    expires_at: datetime | None
    last_used_at: datetime | None
    revoked_at: datetime | None


class CreatedApiKeyResponse(ApiKeyResponse):
    secret: str = Field(
        description="The whole key, for `Authorization: Bearer ...`. Shown this once; store it safely.",
        examples=["ssk_Xb3kQ9mPz2Lw_3q8V0yV6R1kY7aBd2N4uPm9sT5wX1cE0gH6jK8lZ2oQ"],
    )


def router(service: AuthService) -> APIRouter:
    routes = APIRouter(prefix=API_PREFIX)
    CurrentPrincipal: TypeAlias = Annotated[Principal, Depends(bearer_principal(service.resolve_principal))]
    organizations = service.organizations
    api_keys = service.api_keys

    @routes.post(
        "/orgs",
        status_code=status.HTTP_201_CREATED,
        tags=["organizations"],
        summary="Create an organization; you become its owner",
    )
    async def create_organization(
        body: OrganizationCreate, principal: CurrentPrincipal, response: Response
    ) -> OrganizationResponse:
        org = await organizations.create_organization(principal, body.name)
        response.headers["Location"] = f"{API_PREFIX}/orgs/{org.id}"
        return OrganizationResponse.model_validate(org)

    @routes.get("/orgs", tags=["organizations"], summary="Your organizations, with your role in each")
    async def list_my_organizations(principal: CurrentPrincipal) -> Items[OrganizationResponse]:
        orgs = await organizations.list_my_organizations(principal)
        return Items(items=[OrganizationResponse.model_validate(o) for o in orgs])

    @routes.get("/orgs/{org_id}", tags=["organizations"], summary="One organization (org:read)")
    async def get_organization(org_id: UUID, principal: CurrentPrincipal) -> OrganizationResponse:
        return OrganizationResponse.model_validate(await organizations.get_organization(principal, org_id))

    @routes.patch("/orgs/{org_id}", tags=["organizations"], summary="Rename an organization (org:update)")
    async def update_organization(
        org_id: UUID, body: OrganizationUpdate, principal: CurrentPrincipal
    ) -> OrganizationResponse:
        org = await organizations.rename_organization(principal, org_id, body.name)
        return OrganizationResponse.model_validate(org)

    @routes.get(
        "/orgs/{org_id}/members", tags=["organizations"], summary="Members, oldest first (members:read)"
    )
    async def list_members(org_id: UUID, principal: CurrentPrincipal) -> Items[MemberResponse]:
        members = await organizations.list_members(principal, org_id)
        return Items(items=[_member(m) for m in members])

    @routes.patch(
        "/orgs/{org_id}/members/{user_id}",
        tags=["organizations"],
        summary="Change a member's role (members:manage)",
        description="Admins cannot touch owners or grant owner; the last owner cannot be demoted (409).",
    )
    async def change_member_role(
        org_id: UUID, user_id: UUID, body: MemberRoleUpdate, principal: CurrentPrincipal
    ) -> MemberResponse:
        return _member(await organizations.change_role(principal, org_id, user_id, body.role))

    @routes.delete(
        "/orgs/{org_id}/members/{user_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["organizations"],
        summary="Remove a member (members:manage), or leave (your own user id)",
        description="The last owner can neither leave nor be removed (409).",
    )
    async def remove_member(org_id: UUID, user_id: UUID, principal: CurrentPrincipal) -> None:
        await organizations.remove_member(principal, org_id, user_id)

    @routes.post(
        "/orgs/{org_id}/invitations",
        status_code=status.HTTP_201_CREATED,
        tags=["organizations"],
        summary="Invite someone by email (members:manage)",
        description="Re-inviting a pending address replaces its invitation. The token goes out by email.",
    )
    async def invite(org_id: UUID, body: InvitationCreate, principal: CurrentPrincipal) -> InvitationResponse:
        invitation = await organizations.invite(principal, org_id, str(body.email), body.role)
        return InvitationResponse.model_validate(invitation)

    @routes.get(
        "/orgs/{org_id}/invitations", tags=["organizations"], summary="Pending invitations (members:manage)"
    )
    async def list_invitations(org_id: UUID, principal: CurrentPrincipal) -> Items[InvitationResponse]:
        pending = await organizations.list_invitations(principal, org_id)
        return Items(items=[InvitationResponse.model_validate(i) for i in pending])

    @routes.delete(
        "/orgs/{org_id}/invitations/{invitation_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["organizations"],
        summary="Revoke a pending invitation (members:manage)",
    )
    async def revoke_invitation(org_id: UUID, invitation_id: UUID, principal: CurrentPrincipal) -> None:
        await organizations.revoke_invitation(principal, org_id, invitation_id)

    @routes.post(
        "/invitations/accept",
        tags=["organizations"],
        summary="Accept an invitation as the signed-in user",
        description="The user's email must be the invited one (403 `invitation-email-mismatch`).",
    )
    async def accept_invitation(body: InvitationAccept, principal: CurrentPrincipal) -> MemberResponse:
        return _member(await organizations.accept_invitation(principal, body.token))

    @routes.post(
        "/orgs/{org_id}/api-keys",
        status_code=status.HTTP_201_CREATED,
        tags=["api-keys"],
        summary="Create an API key (api_keys:manage); its secret is shown only in this answer",
    )
    async def create_api_key(
        org_id: UUID, body: ApiKeyCreate, principal: CurrentPrincipal, response: Response
    ) -> CreatedApiKeyResponse:
        created = await api_keys.create(
            principal, org_id, name=body.name, scopes=frozenset(body.scopes), expires_at=body.expires_at
        )
        response.headers["Cache-Control"] = "no-store"
        return CreatedApiKeyResponse.model_validate(created)

    @routes.get(
        "/orgs/{org_id}/api-keys", tags=["api-keys"], summary="The organization's API keys, without secrets"
    )
    async def list_api_keys(org_id: UUID, principal: CurrentPrincipal) -> Items[ApiKeyResponse]:
        keys = await api_keys.list_keys(principal, org_id)
        return Items(items=[ApiKeyResponse.model_validate(k) for k in keys])

    @routes.delete(
        "/orgs/{org_id}/api-keys/{key_id}",
        status_code=status.HTTP_204_NO_CONTENT,
        tags=["api-keys"],
        summary="Revoke an API key (api_keys:manage)",
    )
    async def revoke_api_key(org_id: UUID, key_id: UUID, principal: CurrentPrincipal) -> None:
        await api_keys.revoke(principal, org_id, key_id)

    return routes


def _member(member: MemberInfo) -> MemberResponse:
    return MemberResponse.model_validate(member)
