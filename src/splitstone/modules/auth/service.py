"""`AuthService`: auth's implementation of its contract, composed of its use-case classes."""

from __future__ import annotations

from uuid import UUID

from splitstone.modules.auth.accounts import Accounts
from splitstone.modules.auth.api import Access, MemberInfo, Permission, Principal, UserInfo
from splitstone.modules.auth.api_keys import API_KEY_PREFIX, ApiKeys
from splitstone.modules.auth.organizations import Organizations
from splitstone.modules.auth.tokens import TokenService, bearer_credentials


class AuthService:
    """Implements `AuthApi`; the HTTP routes reach the use cases through its parts."""

    def __init__(
        self, accounts: Accounts, organizations: Organizations, api_keys: ApiKeys, tokens: TokenService
    ) -> None:
        self.accounts = accounts
        self.organizations = organizations
        self.api_keys = api_keys
        self.tokens = tokens

    async def resolve_principal(self, authorization: str) -> Principal:
        credentials = bearer_credentials(authorization)
        if credentials.startswith(API_KEY_PREFIX):
            return await self.api_keys.authenticate(credentials)
        return self.tokens.verify_access_token(credentials)

    async def authorize(self, principal: Principal, org_id: UUID, permission: Permission) -> Access:
        return await self.organizations.authorize(principal, org_id, permission)

    async def get_user(self, user_id: UUID) -> UserInfo:
        return await self.accounts.get_user(user_id)

    async def get_users(self, user_ids: list[UUID]) -> list[UserInfo]:
        return await self.accounts.get_users(user_ids)

    async def get_member(self, org_id: UUID, user_id: UUID) -> MemberInfo:
        return await self.organizations.get_member(org_id, user_id)

    async def list_members(self, org_id: UUID) -> list[MemberInfo]:
        return await self.organizations.list_member_infos(org_id)
