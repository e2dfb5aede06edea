"""Password hashing (argon2id, off the event loop) and the password policy (length and zxcvbn score)."""

from __future__ import annotations

import re
import secrets
from collections.abc import Callable
from typing import Any, TypeVar

import anyio.to_thread
from anyio import CapacityLimiter
from argon2 import PasswordHasher as Argon2Hasher
from argon2 import Type
from argon2.exceptions import InvalidHashError, VerificationError
from zxcvbn import zxcvbn

from splitstone.kernel.errors import InvalidInput
from splitstone.modules.auth.settings import AuthSettings

MAX_PASSWORD_LENGTH = 1024
"""Upper bound on a password, so one request cannot make hashing arbitrarily expensive."""

_ZXCVBN_MAX_CHARS = (
    72  # zxcvbn refuses longer input (its cost grows fast); the first 72 characters tell enough
)
_SEPARATORS = re.compile(r"[\W_]+")

T = TypeVar("T")


class WeakPassword(InvalidInput):
    code = "weak-password"
    title = "Password too weak"


class PasswordHasher:
    """argon2id with the configured cost; every hash and verify runs in a bounded thread pool."""

    def __init__(self, settings: AuthSettings) -> None:
        self._argon2 = Argon2Hasher(
            time_cost=settings.argon2_time_cost,
            memory_cost=settings.argon2_memory_kib,
            parallelism=settings.argon2_parallelism,
            type=Type.ID,
        )
        self._workers = settings.password_hash_workers
        self._limiter: CapacityLimiter | None = None
        self._dummy_hash: str | None = None

    async def hash(self, password: str) -> str:
        return await self._run(self._argon2.hash, password)

    async def verify(self, password_hash: str, password: str) -> bool:
        """True when `password` matches; False on a mismatch or an unreadable hash."""
        return await self._run(self._verify_sync, password_hash, password)

    def needs_rehash(self, password_hash: str) -> bool:
        """True when the hash was made with other parameters than the configured ones."""
        try:
            return self._argon2.check_needs_rehash(password_hash)
        except InvalidHashError:
            return True

    async def dummy_verify(self, password: str) -> None:
        """Spend what a real verify costs, so an unknown account answers as slowly as a known one."""
        if self._dummy_hash is None:
            self._dummy_hash = await self.hash(secrets.token_urlsafe(16))
        await self.verify(self._dummy_hash, password)

    def _verify_sync(self, password_hash: str, password: str) -> bool:
        try:
            return self._argon2.verify(password_hash, password)
        except (VerificationError, InvalidHashError):
            return False

    async def _run(self, fn: Callable[..., T], *args: Any) -> T:
        # Created on first use: a limiter belongs to the event loop that uses it.
        if self._limiter is None:
            self._limiter = CapacityLimiter(self._workers)
        return await anyio.to_thread.run_sync(fn, *args, limiter=self._limiter)


def check_password_policy(password: str, *, user_inputs: list[str], min_length: int, min_score: int) -> None:
    """Raise `WeakPassword` unless the password is long enough and hard enough to guess.

    `user_inputs` are words an attacker would try first (email, name); zxcvbn penalises them.
    """
    if len(password) < min_length:
        raise WeakPassword(f"The password must be at least {min_length} characters long.")
    if len(password) > MAX_PASSWORD_LENGTH:
        raise WeakPassword(f"The password must be at most {MAX_PASSWORD_LENGTH} characters long.")
    if not password.strip():
        raise WeakPassword("The password must not be only whitespace.")
    # zxcvbn ranks user inputs by position: the likeliest guesses go first, each once.
    words = list(dict.fromkeys(part for value in user_inputs for part in _words(value)))
    result = zxcvbn(password[:_ZXCVBN_MAX_CHARS], user_inputs=words)
    if result["score"] >= min_score:
        return
    feedback = result.get("feedback") or {}
    warning = str(feedback.get("warning") or "")
    suggestions = [str(s) for s in feedback.get("suggestions") or []]
    if not suggestions:
        suggestions = ["Use a longer passphrase of several uncommon words."]
    hints = " ".join(part for part in (warning, *suggestions) if part)
    detail = f"The password is too easy to guess. {hints}"
    raise WeakPassword(
        detail,
        score=int(result["score"]),
        min_score=min_score,
        warning=warning or None,
        suggestions=suggestions,
    )


def _words(value: str) -> list[str]:
    """A value and its parts, likeliest first: 'Ada.Lovelace@x.org' gives 'adalovelace', 'ada', ..."""
    value = value.strip().lower()
    if not value:
        return []
    local = value.split("@", 1)[0]
    chunks = [chunk for chunk in _SEPARATORS.split(value) if len(chunk) >= 3]
    return [word for word in ("".join(_SEPARATORS.split(local)), local, value, *chunks) if word]
