"""HTTP routes for accounts and sessions under /api/v1/auth: parse, call `Accounts`, shape the answer."""

# No `from __future__ import annotations`: FastAPI reads the endpoints' annotations at runtime, and the
# caller dependency is a local alias inside `router()`.
from dataclasses import dataclass
from datetime import datetime
from typing import Annotated, Literal
from uuid import UUID

from fastapi import Depends, Request, Response, status
from pydantic import AfterValidator, BaseModel, ConfigDict, EmailStr, Field, StringConstraints

from splitstone.kernel.app import API_PREFIX, NOT_BLANK
from splitstone.kernel.http.routing import IndexedRouter
from splitstone.kernel.http.security import bearer_principal
from splitstone.modules.auth.accounts import IssuedTokens
from splitstone.modules.auth.api import Principal, UserInfo
from splitstone.modules.auth.passwords import MAX_PASSWORD_LENGTH
from splitstone.modules.auth.service import AuthService

Email = Annotated[EmailStr, Field(max_length=320, examples=["ada@example.com"])]
Password = Annotated[
    str, Field(min_length=1, max_length=MAX_PASSWORD_LENGTH, examples=["correct horse battery staple"])
]
DisplayName = Annotated[
    str,
    StringConstraints(min_length=1, max_length=200, pattern=NOT_BLANK),
    AfterValidator(str.strip),
    Field(examples=["Ada Lovelace"]),
]
OpaqueToken = Annotated[
    str, Field(min_length=1, max_length=200, examples=["hV3c1n7bR0xk4Qw2s9Jm8pZtY6uE5aLdN1oKfG0iCqU"])
]

ACCEPTED = "If the address can receive it, a message is on its way."


class _Request(BaseModel):
    model_config = ConfigDict(extra="forbid")


class RegisterRequest(_Request):
    email: Email
    password: Password = Field(description="At least 8 characters and not easy to guess (zxcvbn).")
    display_name: DisplayName


class EmailRequest(_Request):
    email: Email


class TokenRequest(_Request):
    token: OpaqueToken = Field(description="The token from the emailed link.")


class LoginRequest(_Request):
    email: Email
    password: Password


class RefreshRequest(_Request):
    refresh_token: OpaqueToken


class ProfileUpdate(_Request):
    display_name: DisplayName


class ChangePasswordRequest(_Request):
    current_password: Password
    new_password: Password


class ResetPasswordRequest(_Request):
    token: OpaqueToken = Field(description="The token from the password reset link.")
    new_password: Password


class Accepted(BaseModel):
    detail: str = Field(examples=[ACCEPTED])


class UserResponse(UserInfo):
    model_config = ConfigDict(
        json_schema_extra={
            "examples": [
                {
                    "id": "01936f1e-8c57-7c1a-9d2b-5f0e4a7b3c21",
                    "email": "ada@example.com",
                    "display_name": "Ada Lovelace",
                    "email_verified": True,
                    "created_at": "2030-01-01T12:00:00Z",
                }
            ]
        }
    )


class TokenResponse(BaseModel):
    access_token: str = Field(description="A JWT (EdDSA); send it as `Authorization: Bearer ...`.")
    token_type: Literal["bearer"] = "bearer"  # noqa: S105 (a scheme name)
    expires_in: int = Field(description="Seconds until the access token expires.", examples=[900])
    refresh_token: str = Field(description="Single-use: each refresh returns a new one.")
    refresh_expires_in: int = Field(
        description="Seconds until the refresh token expires.", examples=[2592000]
    )
    session_id: UUID


class SessionResponse(BaseModel):
    id: UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str | None
    ip_address: str | None
    current: bool = Field(description="Whether this is the session of the token making the request.")


class SessionList(BaseModel):
    items: list[SessionResponse]


@dataclass(frozen=True)
class SignedIn:
    user_id: UUID
    session_id: UUID


def router(service: AuthService) -> IndexedRouter:
    accounts = service.accounts
    api = IndexedRouter(prefix=f"{API_PREFIX}/auth", tags=["auth"])
    principal = bearer_principal(service.resolve_principal)

    async def signed_in(who: Annotated[Principal, Depends(principal)]) -> SignedIn:
        user_id, session_id = await accounts.authenticate_session(who)
        return SignedIn(user_id, session_id)

    Caller = Annotated[SignedIn, Depends(signed_in)]

    @api.post("/register", status_code=status.HTTP_202_ACCEPTED, summary="Create an account")
    async def register(body: RegisterRequest, request: Request) -> Accepted:
        """Sends a verification link. The answer is the same whether or not the address is registered."""
        await accounts.register(
            email=body.email, password=body.password, display_name=body.display_name, ip=_ip(request)
        )
        return Accepted(detail=f"{ACCEPTED} Follow the link in it to verify your address.")

    @api.post("/verify-email", summary="Verify an email address with the emailed token")
    async def verify_email(body: TokenRequest) -> UserResponse:
        return _user(await accounts.verify_email(body.token))

    @api.post(
        "/verify-email/resend", status_code=status.HTTP_202_ACCEPTED, summary="Send a new verification link"
    )
    async def resend_verification(body: EmailRequest) -> Accepted:
        await accounts.resend_verification(body.email)
        return Accepted(detail=ACCEPTED)

    @api.post("/login", summary="Sign in with email and password")
    async def login(body: LoginRequest, request: Request, response: Response) -> TokenResponse:
        """Starts a session: a short-lived access token and a single-use refresh token."""
        issued = await accounts.login(
            email=body.email, password=body.password, ip=_ip(request), user_agent=_user_agent(request)
        )
        return _tokens(issued, response)

    @api.post("/refresh", summary="Exchange a refresh token for a new token pair")
    async def refresh(body: RefreshRequest, request: Request, response: Response) -> TokenResponse:
        """Presenting a refresh token twice revokes its whole session."""
        issued = await accounts.refresh(body.refresh_token, ip=_ip(request), user_agent=_user_agent(request))
        return _tokens(issued, response)

    @api.post("/logout", status_code=status.HTTP_204_NO_CONTENT, summary="End the current session")
    async def logout(caller: Caller) -> None:
        await accounts.logout(caller.user_id, caller.session_id)

    @api.get("/me", summary="The signed-in user")
    async def me(who: Annotated[Principal, Depends(principal)]) -> UserResponse:
        return _user(await accounts.current_user(who))

    @api.patch("/me", summary="Update the signed-in user's profile")
    async def update_me(body: ProfileUpdate, caller: Caller) -> UserResponse:
        return _user(await accounts.update_profile(caller.user_id, display_name=body.display_name))

    @api.get("/sessions", summary="The signed-in user's active sessions")
    async def list_sessions(caller: Caller) -> SessionList:
        found = await accounts.list_sessions(caller.user_id, current_session_id=caller.session_id)
        return SessionList(items=[SessionResponse.model_validate(s, from_attributes=True) for s in found])

    @api.delete(
        "/sessions/{session_id}", status_code=status.HTTP_204_NO_CONTENT, summary="End one of your sessions"
    )
    async def revoke_session(session_id: UUID, caller: Caller) -> None:
        await accounts.revoke_session(caller.user_id, session_id)

    @api.post("/password", status_code=status.HTTP_204_NO_CONTENT, summary="Change your password")
    async def change_password(body: ChangePasswordRequest, caller: Caller) -> None:
        """Ends every other session and invalidates outstanding reset links."""
        await accounts.change_password(
            caller.user_id,
            caller.session_id,
            current_password=body.current_password,
            new_password=body.new_password,
        )

    @api.post("/password/forgot", status_code=status.HTTP_202_ACCEPTED, summary="Send a password reset link")
    async def forgot_password(body: EmailRequest, request: Request) -> Accepted:
        """The answer is the same whether or not the address is registered."""
        await accounts.forgot_password(body.email, ip=_ip(request))
        return Accepted(detail=ACCEPTED)

    @api.post(
        "/password/reset",
        status_code=status.HTTP_204_NO_CONTENT,
        summary="Set a new password with a reset token",
    )
    async def reset_password(body: ResetPasswordRequest) -> None:
        """The token works once, and ends every session of the account."""
        await accounts.reset_password(body.token, new_password=body.new_password)

    return api


def _ip(request: Request) -> str | None:
    return request.client.host if request.client else None


def _user_agent(request: Request) -> str | None:
    return request.headers.get("user-agent")


def _user(user: UserInfo) -> UserResponse:
    return UserResponse.model_validate(user.model_dump())


def _tokens(issued: IssuedTokens, response: Response) -> TokenResponse:
    response.headers["Cache-Control"] = "no-store"  # RFC 6749 §5.1: token responses must not be cached
    return TokenResponse(
        access_token=issued.access_token,
        expires_in=issued.expires_in,
        refresh_token=issued.refresh_token,
        refresh_expires_in=issued.refresh_expires_in,
        session_id=issued.session_id,
    )
