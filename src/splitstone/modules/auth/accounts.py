"""Accounts: registration, email verification, sign-in sessions with rotating refresh tokens, passwords.

Answers never reveal whether an email address has an account: registration, resending a verification
and forgetting a password answer the same either way, and a failed login costs the same time and
returns the same error for an unknown address as for a wrong password.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Any, NoReturn, cast
from uuid import UUID

import structlog
from sqlalchemy import CursorResult, Result, RowMapping, Select, and_, bindparam, insert, select, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.sql.elements import ColumnElement
from uuid6 import uuid7

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWork, UnitOfWorkFactory
from splitstone.kernel.errors import (
    Conflict,
    DomainError,
    InvalidInput,
    NotAuthenticated,
    NotFound,
    PermissionDenied,
)
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.reads import FetchedRow, PreparedQuery
from splitstone.modules.auth.api import (
    EmailVerificationRequested,
    EmailVerified,
    InvalidCredentials,
    InvalidToken,
    PasswordChanged,
    PasswordResetRequested,
    Principal,
    UserInfo,
    UserNotFound,
    UserRegistered,
)
from splitstone.modules.auth.domain import digests_match, new_opaque_token, normalize_email, token_digest
from splitstone.modules.auth.passwords import PasswordHasher, check_password_policy
from splitstone.modules.auth.settings import AuthSettings
from splitstone.modules.auth.storage import (
    email_verifications,
    password_resets,
    refresh_tokens,
    sessions,
    users,
)
from splitstone.modules.auth.tokens import TokenService

log = structlog.get_logger("splitstone.auth")

LOGIN_FAILED = "The email address or password is incorrect."
REFRESH_FAILED = "The refresh token is invalid, expired or revoked; sign in again."
REFRESH_REUSED = (
    "This refresh token was already used, so it may have been stolen: the session has been revoked. "
    "Sign in again."
)
VERIFICATION_INVALID = "The verification link is invalid, expired or already used; ask for a new one."
ACCOUNT_WIDE_FACTOR = 10
"""An account takes this many times its per-address login limit from all addresses together."""
RESET_INVALID = "The password reset link is invalid, expired or already used; ask for a new one."


class EmailNotVerified(PermissionDenied):
    code = "email-not-verified"
    title = "Email address not verified"


class EmailTaken(Conflict):
    code = "email-taken"
    title = "Email address already registered"


class SessionNotFound(NotFound):
    code = "session-not-found"
    title = "Session not found"


class SessionEnded(NotAuthenticated):
    code = "session-ended"
    title = "Session ended"


class WrongPassword(DomainError):
    code = "wrong-password"
    status = 400
    title = "Current password is incorrect"


class UserRequired(PermissionDenied):
    code = "user-required"
    title = "A signed-in user is required"


@dataclass(frozen=True)
class IssuedTokens:
    """What a login or refresh hands the client."""

    access_token: str
    expires_in: int
    refresh_token: str
    refresh_expires_in: int
    session_id: UUID


@dataclass(frozen=True)
class SessionInfo:
    id: UUID
    created_at: datetime
    last_used_at: datetime
    expires_at: datetime
    user_agent: str | None
    ip_address: str | None
    current: bool


class Accounts:
    """The account use cases. Password hashing runs in a thread pool, outside any transaction."""

    def __init__(
        self,
        *,
        uow: UnitOfWorkFactory,
        clock: Clock,
        settings: AuthSettings,
        hasher: PasswordHasher,
        tokens: TokenService,
        rate_limiter: RateLimiter,
    ) -> None:
        self._uow = uow
        self._clock = clock
        self._settings = settings
        self._hasher = hasher
        self._tokens = tokens
        self._limiter = rate_limiter
        self._register_ip = RateLimiter.parse(settings.register_rate_per_ip)
        self._login_ip = RateLimiter.parse(settings.login_rate_per_ip)
        self._login_account = RateLimiter.parse(settings.login_rate_per_account)
        self._login_account_all_addresses = RateLimiter.scaled(self._login_account, ACCOUNT_WIDE_FACTOR)
        self._forgot_ip = RateLimiter.parse(settings.forgot_password_rate_per_ip)
        self._forgot_account = RateLimiter.parse(settings.forgot_password_rate_per_account)
        self._resend_account = RateLimiter.parse(settings.verification_resend_rate_per_account)

    # Users ------------------------------------------------------------------------------------------

    async def get_user(self, user_id: UUID) -> UserInfo:
        async with self._uow(read_only=True) as uow:
            row = await uow.fetch_one(_USER_BY_ID, user_id=user_id)
        if row is None:
            raise UserNotFound(f"No user with id {user_id}.")
        return _user_info(row)

    async def get_users(self, user_ids: list[UUID]) -> list[UserInfo]:
        if not user_ids:
            return []
        async with self._uow(read_only=True) as uow:
            result = await uow.session.execute(select(users).where(users.c.id.in_(set(user_ids))))
            return [_user_info(row) for row in result.mappings()]

    async def create_user(self, *, email: str, password: str, display_name: str, verified: bool) -> UserInfo:
        """Create a user directly (operator CLI); raises `EmailTaken` or `WeakPassword`."""
        email = normalize_email(email)
        display_name = display_name.strip()
        if not display_name or len(display_name) > 200:
            raise InvalidInput("The display name must be 1 to 200 characters long.")
        self._check_policy(password, email, display_name)
        password_hash = await self._hasher.hash(password)
        now = self._clock.now()
        user_id = uuid7()
        async with self._uow() as uow:
            try:
                await _insert_user(uow, user_id, email, display_name, password_hash, now, verified=verified)
            except IntegrityError:
                raise EmailTaken(f"A user with email {email} already exists.") from None
            await uow.commit()
        return await self.get_user(user_id)

    async def update_profile(self, user_id: UUID, *, display_name: str) -> UserInfo:
        now = self._clock.now()
        async with self._uow() as uow:
            result = await uow.session.execute(
                update(users).where(users.c.id == user_id).values(display_name=display_name, updated_at=now)
            )
            if _rowcount(result) != 1:
                raise UserNotFound(f"No user with id {user_id}.")
            await uow.commit()
        return await self.get_user(user_id)

    # Registration and email verification ------------------------------------------------------------

    async def register(self, *, email: str, password: str, display_name: str, ip: str | None) -> None:
        """Create an unverified user and send a verification link; silently nothing if the email is taken."""
        await self._limiter.hit(self._register_ip, "register-ip", ip or "unknown")
        email = normalize_email(email)
        self._check_policy(password, email, display_name)
        # Hash before looking the address up: a taken address then costs the same time as a free one.
        password_hash = await self._hasher.hash(password)
        now = self._clock.now()
        user_id = uuid7()
        async with self._uow() as uow:
            try:
                await _insert_user(uow, user_id, email, display_name, password_hash, now, verified=False)
            except IntegrityError:
                return  # taken, perhaps by a concurrent registration: answer exactly as for a new address
            token, expires_at = await self._new_verification(uow, user_id, now)
            uow.publish(
                UserRegistered(
                    occurred_at=now,
                    aggregate_id=user_id,
                    user_id=user_id,
                    email=email,
                    display_name=display_name,
                    verification_token=token,
                    verification_expires_at=expires_at,
                )
            )
            await uow.commit()

    async def verify_email(self, token: str) -> UserInfo:
        """Use a verification token (once) and mark its user's address verified."""
        now = self._clock.now()
        async with self._uow() as uow:
            row = await _one(
                uow,
                select(email_verifications).where(email_verifications.c.token_hash == token_digest(token)),
            )
            if row is None or row["used_at"] is not None or row["expires_at"] <= now:
                raise InvalidToken(VERIFICATION_INVALID)
            claimed = await uow.session.execute(
                update(email_verifications)
                .where(email_verifications.c.id == row["id"], email_verifications.c.used_at.is_(None))
                .values(used_at=now)
            )
            if _rowcount(claimed) != 1:
                raise InvalidToken(VERIFICATION_INVALID)
            user = await _user_by(uow, users.c.id == row["user_id"])
            if user is None:
                raise InvalidToken(VERIFICATION_INVALID)
            if user["email_verified_at"] is None:
                await uow.session.execute(
                    update(users)
                    .where(users.c.id == user["id"])
                    .values(email_verified_at=now, updated_at=now)
                )
                uow.publish(
                    EmailVerified(
                        occurred_at=now, aggregate_id=user["id"], user_id=user["id"], email=user["email"]
                    )
                )
            await uow.commit()
        return await self.get_user(row["user_id"])

    async def resend_verification(self, email: str) -> None:
        """Send a new verification link to an existing, unverified address; nothing otherwise."""
        email = normalize_email(email)
        await self._limiter.hit(self._resend_account, "verify-resend-account", email)
        now = self._clock.now()
        async with self._uow() as uow:
            user = await _user_by(uow, users.c.email == email)
            if user is None or user["email_verified_at"] is not None:
                return
            token, expires_at = await self._new_verification(uow, user["id"], now)
            uow.publish(
                EmailVerificationRequested(
                    occurred_at=now,
                    aggregate_id=user["id"],
                    user_id=user["id"],
                    email=user["email"],
                    display_name=user["display_name"],
                    verification_token=token,
                    verification_expires_at=expires_at,
                )
            )
            await uow.commit()

    # Sessions -----------------------------------------------------------------------------------------

    async def login(
        self, *, email: str, password: str, ip: str | None, user_agent: str | None
    ) -> IssuedTokens:
        """Check the password and start a session; the same `InvalidCredentials` for any failure."""
        email = normalize_email(email)
        address = ip or "unknown"
        await self._limiter.hit(self._login_ip, "login-ip", address)
        # Keyed on the address whether or not it has an account, so the limit reveals nothing either.
        # Per account *and* client address: a stranger guessing from elsewhere locks out only themselves
        # (ASVS 6.3.1 asks that lockout not be a denial of service); the wider account-wide limit still
        # bounds guessing spread over many addresses.
        await self._limiter.hit(self._login_account, "login-account", email, address)
        await self._limiter.hit(self._login_account_all_addresses, "login-account-all", email)
        async with self._uow(read_only=True) as uow:
            user = await uow.fetch_one(_USER_BY_EMAIL, email=email)
        if user is None:
            await self._hasher.dummy_verify(password)
            raise InvalidCredentials(LOGIN_FAILED)
        if not await self._hasher.verify(user["password_hash"], password):
            raise InvalidCredentials(LOGIN_FAILED)
        if self._settings.require_verified_email and user["email_verified_at"] is None:
            raise EmailNotVerified(
                "Verify your email address before signing in; "
                "POST /api/v1/auth/verify-email/resend sends a new link."
            )
        new_hash = None
        if self._hasher.needs_rehash(user["password_hash"]):
            new_hash = await self._hasher.hash(password)
        now = self._clock.now()
        async with self._uow() as uow:
            if new_hash is not None:
                # Conditional, so a password changed meanwhile is never overwritten by the old one.
                await uow.session.execute(
                    update(users)
                    .where(users.c.id == user["id"], users.c.password_hash == user["password_hash"])
                    .values(password_hash=new_hash)
                )
            session_id = uuid7()
            # The session and its refresh token are written with the commit, in one statement.
            uow.insert(
                sessions,
                [
                    {
                        "id": session_id,
                        "user_id": user["id"],
                        "created_at": now,
                        "last_used_at": now,
                        "expires_at": now + self._refresh_ttl,
                        "user_agent": _clip(user_agent, 500),
                        "ip_address": _clip(ip, 64),
                    }
                ],
            )
            refresh_token = self._new_refresh_token(uow, session_id, now)
            await uow.commit()
        return self._issue(user["id"], session_id, refresh_token, now + self._refresh_ttl)

    async def refresh(self, refresh_token: str, *, ip: str | None, user_agent: str | None) -> IssuedTokens:
        """Rotate a refresh token. Presenting a used one revokes its whole session (theft detection)."""
        now = self._clock.now()
        async with self._uow() as uow:
            query = (
                select(
                    refresh_tokens.c.id,
                    refresh_tokens.c.used_at,
                    refresh_tokens.c.expires_at,
                    sessions.c.id.label("session_id"),
                    sessions.c.user_id,
                    sessions.c.revoked_at,
                    sessions.c.expires_at.label("session_expires_at"),
                )
                .join(sessions, sessions.c.id == refresh_tokens.c.session_id)
                .where(refresh_tokens.c.token_hash == token_digest(refresh_token))
            )
            row = await _one(uow, query)
            if row is None or row["revoked_at"] is not None:
                raise InvalidCredentials(REFRESH_FAILED)
            if row["used_at"] is not None:
                await self._reuse_detected(uow, row["session_id"])
            if row["expires_at"] <= now or row["session_expires_at"] <= now:
                raise InvalidCredentials(REFRESH_FAILED)
            claimed = await uow.session.execute(
                update(refresh_tokens)
                .where(refresh_tokens.c.id == row["id"], refresh_tokens.c.used_at.is_(None))
                .values(used_at=now)
            )
            if _rowcount(claimed) != 1:
                await self._reuse_detected(uow, row["session_id"])  # a concurrent refresh used it
            new_token = self._new_refresh_token(uow, row["session_id"], now)
            await uow.session.execute(
                update(sessions)
                .where(sessions.c.id == row["session_id"])
                .values(
                    last_used_at=now,
                    expires_at=now + self._refresh_ttl,
                    user_agent=_clip(user_agent, 500),
                    ip_address=_clip(ip, 64),
                )
            )
            await uow.commit()
        return self._issue(row["user_id"], row["session_id"], new_token, now + self._refresh_ttl)

    async def authenticate_session(self, principal: Principal) -> tuple[UUID, UUID]:
        """The (user id, session id) of a user principal whose session is still active.

        Access tokens are checked offline; account operations also check that the session was not
        revoked since, so logging out or revoking a session takes effect here at once.
        """
        async with self._uow(read_only=True) as uow:
            return await self._active_session(uow, principal)

    async def current_user(self, principal: Principal) -> UserInfo:
        """The user of a principal whose session is still active: `authenticate_session` and `get_user`
        in one unit of work (one connection for the two reads behind `GET /me`)."""
        async with self._uow(read_only=True) as uow:
            user_id, _ = await self._active_session(uow, principal)
            row = await uow.fetch_one(_USER_BY_ID, user_id=user_id)
        if row is None:
            raise UserNotFound(f"No user with id {user_id}.")
        return _user_info(row)

    async def _active_session(self, uow: UnitOfWork, principal: Principal) -> tuple[UUID, UUID]:
        if principal.kind != "user" or principal.user_id is None or principal.session_id is None:
            raise UserRequired(
                "This operation acts for a signed-in user; an API key acts for an organization. "
                "Use a user's access token."
            )
        now = self._clock.now()
        row = await uow.fetch_one(_SESSION_STATE, session_id=principal.session_id, user_id=principal.user_id)
        if row is None or row["revoked_at"] is not None or row["expires_at"] <= now:
            raise SessionEnded("This session has ended; sign in again.")
        return principal.user_id, principal.session_id

    async def logout(self, user_id: UUID, session_id: UUID) -> None:
        async with self._uow() as uow:
            await self._revoke(
                uow, sessions.c.id == session_id, sessions.c.user_id == user_id, reason="logout"
            )
            await uow.commit()

    async def list_sessions(self, user_id: UUID, *, current_session_id: UUID | None) -> list[SessionInfo]:
        """The user's active sessions, most recently used first."""
        now = self._clock.now()
        async with self._uow(read_only=True) as uow:
            result = await uow.session.execute(
                select(sessions)
                .where(
                    sessions.c.user_id == user_id,
                    sessions.c.revoked_at.is_(None),
                    sessions.c.expires_at > now,
                )
                .order_by(sessions.c.last_used_at.desc(), sessions.c.id.desc())
            )
            return [
                SessionInfo(
                    id=row["id"],
                    created_at=row["created_at"],
                    last_used_at=row["last_used_at"],
                    expires_at=row["expires_at"],
                    user_agent=row["user_agent"],
                    ip_address=row["ip_address"],
                    current=row["id"] == current_session_id,
                )
                for row in result.mappings()
            ]

    async def revoke_session(self, user_id: UUID, session_id: UUID) -> None:
        """End one of the user's own active sessions; any other id is `SessionNotFound`."""
        now = self._clock.now()
        async with self._uow() as uow:
            revoked = await self._revoke(
                uow,
                sessions.c.id == session_id,
                sessions.c.user_id == user_id,
                sessions.c.expires_at > now,
                reason="revoked-by-user",
            )
            if revoked != 1:
                raise SessionNotFound(f"You have no active session with id {session_id}.")
            await uow.commit()

    # Passwords ----------------------------------------------------------------------------------------

    async def change_password(
        self, user_id: UUID, session_id: UUID, *, current_password: str, new_password: str
    ) -> None:
        """Change the password, keep this session and end every other one."""
        # Bounds guessing of the current password by someone holding a stolen access token.
        await self._limiter.hit(self._login_account, "password-change", str(user_id))
        async with self._uow(read_only=True) as uow:
            user = await _user_by(uow, users.c.id == user_id)
        if user is None:
            raise UserNotFound(f"No user with id {user_id}.")
        if not await self._hasher.verify(user["password_hash"], current_password):
            raise WrongPassword("The current password is incorrect.")
        self._check_policy(new_password, user["email"], user["display_name"])
        new_hash = await self._hasher.hash(new_password)
        now = self._clock.now()
        async with self._uow() as uow:
            if not await self._set_password(uow, user, new_hash, now):
                raise Conflict("The password was changed at the same time; try again.")
            await self._revoke(
                uow, sessions.c.user_id == user_id, sessions.c.id != session_id, reason="password-changed"
            )
            uow.publish(
                PasswordChanged(occurred_at=now, aggregate_id=user_id, user_id=user_id, email=user["email"])
            )
            await uow.commit()

    async def forgot_password(self, email: str, *, ip: str | None) -> None:
        """Send a reset link to an existing address; nothing otherwise (the answer is the same)."""
        email = normalize_email(email)
        await self._limiter.hit(self._forgot_ip, "forgot-ip", ip or "unknown")
        await self._limiter.hit(self._forgot_account, "forgot-account", email)
        now = self._clock.now()
        async with self._uow() as uow:
            user = await _user_by(uow, users.c.email == email)
            if user is None:
                return
            token = new_opaque_token()
            expires_at = now + timedelta(seconds=self._settings.password_reset_ttl_seconds)
            await uow.session.execute(
                insert(password_resets).values(
                    id=uuid7(),
                    user_id=user["id"],
                    token_hash=token_digest(token),
                    password_fingerprint=token_digest(user["password_hash"]),
                    created_at=now,
                    expires_at=expires_at,
                )
            )
            uow.publish(
                PasswordResetRequested(
                    occurred_at=now,
                    aggregate_id=user["id"],
                    user_id=user["id"],
                    email=user["email"],
                    display_name=user["display_name"],
                    reset_token=token,
                    reset_expires_at=expires_at,
                )
            )
            await uow.commit()

    async def reset_password(self, token: str, *, new_password: str) -> None:
        """Set a new password with a reset token (once), ending every session of the user."""
        now = self._clock.now()
        async with self._uow(read_only=True) as uow:
            query = (
                select(
                    password_resets.c.id.label("reset_id"),
                    password_resets.c.used_at,
                    password_resets.c.expires_at,
                    password_resets.c.password_fingerprint,
                    users,
                )
                .join(users, users.c.id == password_resets.c.user_id)
                .where(password_resets.c.token_hash == token_digest(token))
            )
            row = await _one(uow, query)
        if (
            row is None
            or row["used_at"] is not None
            or row["expires_at"] <= now
            or not digests_match(row["password_fingerprint"], token_digest(row["password_hash"]))
        ):
            raise InvalidToken(RESET_INVALID)
        # The policy comes before the token is used up, so a weak choice can be corrected.
        self._check_policy(new_password, row["email"], row["display_name"])
        new_hash = await self._hasher.hash(new_password)
        now = self._clock.now()
        async with self._uow() as uow:
            claimed = await uow.session.execute(
                update(password_resets)
                .where(password_resets.c.id == row["reset_id"], password_resets.c.used_at.is_(None))
                .values(used_at=now)
            )
            if _rowcount(claimed) != 1 or not await self._set_password(uow, row, new_hash, now):
                raise InvalidToken(RESET_INVALID)
            await self._revoke(uow, sessions.c.user_id == row["id"], reason="password-reset")
            uow.publish(
                PasswordChanged(
                    occurred_at=now, aggregate_id=row["id"], user_id=row["id"], email=row["email"]
                )
            )
            await uow.commit()

    # Helpers ------------------------------------------------------------------------------------------

    @property
    def _refresh_ttl(self) -> timedelta:
        return timedelta(seconds=self._settings.refresh_token_ttl_seconds)

    def _check_policy(self, password: str, email: str, display_name: str) -> None:
        check_password_policy(
            password,
            user_inputs=[email, display_name],
            min_length=self._settings.min_password_length,
            min_score=self._settings.min_password_score,
        )

    def _issue(
        self, user_id: UUID, session_id: UUID, refresh_token: str, refresh_expires_at: datetime
    ) -> IssuedTokens:
        access_token, expires_at = self._tokens.issue_access_token(user_id, session_id)
        now = self._clock.now()
        return IssuedTokens(
            access_token=access_token,
            expires_in=max(0, int((expires_at - now).total_seconds())),
            refresh_token=refresh_token,
            refresh_expires_in=max(0, int((refresh_expires_at - now).total_seconds())),
            session_id=session_id,
        )

    async def _new_verification(self, uow: UnitOfWork, user_id: UUID, now: datetime) -> tuple[str, datetime]:
        token = new_opaque_token()
        expires_at = now + timedelta(seconds=self._settings.email_verification_ttl_seconds)
        await uow.session.execute(
            insert(email_verifications).values(
                id=uuid7(),
                user_id=user_id,
                token_hash=token_digest(token),
                created_at=now,
                expires_at=expires_at,
            )
        )
        return token, expires_at

    def _new_refresh_token(self, uow: UnitOfWork, session_id: UUID, now: datetime) -> str:
        """A new refresh token of the session, written at `uow`'s commit (nothing reads it back before)."""
        token = new_opaque_token()
        uow.insert(
            refresh_tokens,
            [
                {
                    "id": uuid7(),
                    "session_id": session_id,
                    "token_hash": token_digest(token),
                    "created_at": now,
                    "expires_at": now + self._refresh_ttl,
                }
            ],
        )
        return token

    async def _set_password(self, uow: UnitOfWork, user: RowMapping, new_hash: str, now: datetime) -> bool:
        """Replace the hash if it is still the one read; outstanding reset links die with the old one."""
        changed = await uow.session.execute(
            update(users)
            .where(users.c.id == user["id"], users.c.password_hash == user["password_hash"])
            .values(password_hash=new_hash, password_changed_at=now, updated_at=now)
        )
        if _rowcount(changed) != 1:
            return False
        await uow.session.execute(
            update(password_resets)
            .where(password_resets.c.user_id == user["id"], password_resets.c.used_at.is_(None))
            .values(used_at=now)
        )
        return True

    async def _revoke(self, uow: UnitOfWork, *where: ColumnElement[bool], reason: str) -> int:
        """Revoke the active sessions matching `where`; how many were revoked."""
        result = await uow.session.execute(
            update(sessions)
            .where(and_(*where), sessions.c.revoked_at.is_(None))
            .values(revoked_at=self._clock.now(), revoked_reason=reason)
        )
        return _rowcount(result)

    async def _reuse_detected(self, uow: UnitOfWork, session_id: UUID) -> NoReturn:
        await self._revoke(uow, sessions.c.id == session_id, reason="refresh-token-reuse")
        await uow.commit()
        log.warning("refresh token reuse: session revoked", session_id=str(session_id))
        raise InvalidCredentials(REFRESH_REUSED)


# The reads behind every signed-in request (`kernel.reads`), and behind a login.
_USER_BY_EMAIL = PreparedQuery(select(users).where(users.c.email == bindparam("email")))
_USER_BY_ID = PreparedQuery(select(users).where(users.c.id == bindparam("user_id")))
_SESSION_STATE = PreparedQuery(
    select(sessions.c.revoked_at, sessions.c.expires_at).where(
        sessions.c.id == bindparam("session_id"), sessions.c.user_id == bindparam("user_id")
    )
)


async def _one(uow: UnitOfWork, query: Select[Any]) -> RowMapping | None:
    row: RowMapping | None = (await uow.session.execute(query)).mappings().one_or_none()
    return row


async def _user_by(uow: UnitOfWork, condition: ColumnElement[bool]) -> RowMapping | None:
    return await _one(uow, select(users).where(condition))


async def _insert_user(
    uow: UnitOfWork,
    user_id: UUID,
    email: str,
    display_name: str,
    password_hash: str,
    now: datetime,
    *,
    verified: bool,
) -> None:
    await uow.session.execute(
        insert(users).values(
            id=user_id,
            email=email,
            display_name=display_name,
            password_hash=password_hash,
            email_verified_at=now if verified else None,
            password_changed_at=now,
            created_at=now,
            updated_at=now,
        )
    )


def _user_info(row: FetchedRow) -> UserInfo:
    return UserInfo(
        id=row["id"],
        email=row["email"],
        display_name=row["display_name"],
        email_verified=row["email_verified_at"] is not None,
        created_at=row["created_at"],
    )


def _rowcount(result: Result[Any]) -> int:
    return cast(CursorResult[Any], result).rowcount


def _clip(value: str | None, limit: int) -> str | None:
    return value[:limit] if value else None
