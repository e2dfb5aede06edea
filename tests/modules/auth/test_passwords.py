"""Password hashing (argon2id in a bounded thread pool) and the password policy."""

from __future__ import annotations

import os
import threading
import time
from collections.abc import Awaitable, Callable

import anyio
import pytest

from splitstone.kernel.errors import InvalidInput
from splitstone.modules.auth.passwords import (
    MAX_PASSWORD_LENGTH,
    PasswordHasher,
    WeakPassword,
    check_password_policy,
)
from splitstone.modules.auth.settings import AuthSettings

# The cheapest parameters the settings allow, so the suite stays fast.
CHEAP = AuthSettings(argon2_time_cost=1, argon2_memory_kib=7_168, argon2_parallelism=1)
STRONG = "correct horse battery staple 42"


@pytest.fixture
def hasher() -> PasswordHasher:
    return PasswordHasher(CHEAP)


async def test_hash_is_argon2id_with_the_configured_parameters(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash(STRONG)

    assert hashed.startswith("$argon2id$v=19$m=7168,t=1,p=1$")
    assert STRONG not in hashed


async def test_same_password_hashes_differently_each_time(hasher: PasswordHasher) -> None:
    assert await hasher.hash(STRONG) != await hasher.hash(STRONG)


async def test_verify_accepts_the_password_and_nothing_else(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash(STRONG)

    assert await hasher.verify(hashed, STRONG) is True
    assert await hasher.verify(hashed, STRONG + " ") is False
    assert await hasher.verify(hashed, "") is False


@pytest.mark.parametrize("broken", ["", "not a hash", "$argon2id$v=19$m=7168,t=1,p=1$garbage"])
async def test_verify_against_an_unreadable_hash_is_false(hasher: PasswordHasher, broken: str) -> None:
    assert await hasher.verify(broken, STRONG) is False


async def test_needs_rehash_when_the_parameters_change(hasher: PasswordHasher) -> None:
    hashed = await hasher.hash(STRONG)
    stronger = PasswordHasher(AuthSettings(argon2_time_cost=2, argon2_memory_kib=7_168))

    assert hasher.needs_rehash(hashed) is False
    assert stronger.needs_rehash(hashed) is True
    assert await stronger.verify(hashed, STRONG) is True  # old hashes still verify
    assert hasher.needs_rehash("not a hash") is True


async def test_dummy_verify_costs_about_as_much_as_a_real_verify() -> None:
    hasher = PasswordHasher(AuthSettings())  # real parameters, so the cost is measurable
    hashed = await hasher.hash(STRONG)
    await hasher.dummy_verify("warm-up")  # the first call also makes the dummy hash

    async def fastest(call: Callable[[], Awaitable[object]]) -> float:
        # The minimum of several runs is robust against other work on a busy machine.
        times = []
        for _ in range(5):
            started = time.perf_counter()
            await call()
            times.append(time.perf_counter() - started)
        return min(times)

    real = await fastest(lambda: hasher.verify(hashed, "wrong password"))
    dummy = await fastest(lambda: hasher.dummy_verify("wrong password"))

    assert 0.5 < dummy / real < 2.0


async def test_hashing_does_not_block_the_event_loop() -> None:
    hasher = PasswordHasher(AuthSettings())
    ticks = 0
    done = False

    async def ticker() -> None:
        nonlocal ticks
        while not done:
            ticks += 1
            await anyio.sleep(0.001)

    async with anyio.create_task_group() as tasks:
        tasks.start_soon(ticker)
        await hasher.hash(STRONG)
        done = True

    assert ticks >= 3  # the loop kept running while argon2 worked in a thread


class SlowArgon2:
    """Stands in for argon2 and records how many hashes run at once."""

    def __init__(self) -> None:
        self.running = 0
        self.most = 0
        self.lock = threading.Lock()

    def hash(self, password: str) -> str:
        with self.lock:
            self.running += 1
            self.most = max(self.most, self.running)
        time.sleep(0.02)
        with self.lock:
            self.running -= 1
        return "hashed"


@pytest.mark.parametrize("workers", [1, 3])
async def test_the_pool_bounds_concurrent_hashes(workers: int, monkeypatch: pytest.MonkeyPatch) -> None:
    hasher = PasswordHasher(AuthSettings(password_hash_workers=workers))
    fake = SlowArgon2()
    monkeypatch.setattr(hasher, "_argon2", fake)

    async with anyio.create_task_group() as tasks:
        for _ in range(8):
            tasks.start_soon(hasher.hash, STRONG)

    assert fake.most == workers


def test_hashing_threads_default_to_the_cores_the_process_may_use(monkeypatch: pytest.MonkeyPatch) -> None:
    """More threads than cores only make argon2's large working sets take turns on a core."""
    monkeypatch.delenv("SPLITSTONE_AUTH_PASSWORD_HASH_WORKERS", raising=False)
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: {0})
    assert AuthSettings().password_hash_workers == 1
    monkeypatch.setattr(os, "sched_getaffinity", lambda _pid: set(range(4)))
    assert AuthSettings().password_hash_workers == 4


# -- policy -----------------------------------------------------------------------------------------------


def policy(password: str, *user_inputs: str, min_length: int = 8, min_score: int = 2) -> None:
    check_password_policy(password, user_inputs=list(user_inputs), min_length=min_length, min_score=min_score)


def test_a_strong_password_passes() -> None:
    policy(STRONG, "ada@example.com", "Ada Lovelace")


def test_weak_password_is_invalid_input_with_its_own_code() -> None:
    with pytest.raises(WeakPassword) as caught:
        policy("short")
    assert isinstance(caught.value, InvalidInput)
    assert caught.value.code == "weak-password"
    assert caught.value.status == 422


def test_too_short() -> None:
    with pytest.raises(WeakPassword, match="at least 12 characters"):
        policy("Xq7!vB2#", min_length=12)


def test_too_long_bounds_the_hashing_cost() -> None:
    policy("x7!Kq" * (MAX_PASSWORD_LENGTH // 5))  # at the limit: fine
    with pytest.raises(WeakPassword, match=f"at most {MAX_PASSWORD_LENGTH}"):
        policy("x" * (MAX_PASSWORD_LENGTH + 1))


def test_only_whitespace_is_refused() -> None:
    with pytest.raises(WeakPassword, match="whitespace"):
        policy(" " * 20, min_score=0)


def test_common_password_is_refused_with_zxcvbn_feedback() -> None:
    with pytest.raises(WeakPassword) as caught:
        policy("password123")

    assert "too easy to guess" in caught.value.detail
    assert "very common password" in caught.value.detail
    assert caught.value.extra["score"] < 2
    assert caught.value.extra["min_score"] == 2
    assert caught.value.extra["suggestions"]


def test_password_made_of_the_users_own_name_and_email_is_refused() -> None:
    password = "AdaLovelace2030"
    policy(password)  # strong enough for a stranger...

    with pytest.raises(WeakPassword):  # ...but not for Ada
        policy(password, "ada.lovelace@example.com", "Ada Lovelace")


def test_min_score_is_configurable() -> None:
    policy("lovelace!2024", min_score=3)
    with pytest.raises(WeakPassword):
        policy("lovelace!2024", min_score=4)


def test_very_long_passwords_are_scored_without_error() -> None:
    policy("correct horse battery staple " * 30)
    with pytest.raises(WeakPassword):
        policy("a" * 500)
