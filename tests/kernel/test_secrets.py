"""Secrets: generated once and kept 0600 outside production; explicit or refused in production."""

from __future__ import annotations

import itertools
import os
import stat
from pathlib import Path

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey

from splitstone.kernel.secrets import MissingSecretError, SecretStore
from splitstone.kernel.settings import Environment, Settings


class Generator:
    """Counts its calls and returns a different value each time."""

    def __init__(self) -> None:
        self.calls = 0
        self._values = (f"generated-{n}" for n in itertools.count(1))

    def __call__(self) -> str:
        self.calls += 1
        return next(self._values)


def mode(path: Path) -> int:
    return stat.S_IMODE(path.stat().st_mode)


def test_a_secret_is_generated_once_kept_0600_and_reused(tmp_path: Path) -> None:
    directory = tmp_path / "secrets"
    generate = Generator()
    store = SecretStore(directory, production=False)

    first = store.get("signing.pem", explicit=None, env_var="SPLITSTONE_X", generate=generate)
    assert first == "generated-1"
    assert (directory / "signing.pem").read_text() == first
    assert mode(directory / "signing.pem") == 0o600
    assert mode(directory) == 0o700
    assert list(directory.iterdir()) == [directory / "signing.pem"]  # no temporary file left behind

    again = store.get("signing.pem", explicit=None, env_var="SPLITSTONE_X", generate=generate)
    after_restart = SecretStore(directory, production=False).get(
        "signing.pem", explicit=None, env_var="SPLITSTONE_X", generate=generate
    )
    assert again == after_restart == first
    assert generate.calls == 1

    other = store.get("other", explicit=None, env_var="SPLITSTONE_Y", generate=generate)
    assert other == "generated-2"


def test_a_secret_file_is_private_even_with_a_permissive_umask(tmp_path: Path) -> None:
    previous = os.umask(0)
    try:
        SecretStore(tmp_path / "s", production=False).get(
            "key", explicit=None, env_var="SPLITSTONE_X", generate=Generator()
        )
    finally:
        os.umask(previous)
    assert mode(tmp_path / "s" / "key") == 0o600


@pytest.mark.parametrize("production", [False, True])
def test_an_explicit_value_wins_and_is_not_written(tmp_path: Path, production: bool) -> None:
    generate = Generator()
    store = SecretStore(tmp_path / "secrets", production=production)
    value = store.get("signing.pem", explicit="from-the-env", env_var="SPLITSTONE_X", generate=generate)
    assert value == "from-the-env"
    assert generate.calls == 0
    assert not (tmp_path / "secrets").exists()


def test_production_never_generates_a_secret(tmp_path: Path) -> None:
    generate = Generator()
    store = SecretStore(tmp_path / "secrets", production=True)
    with pytest.raises(MissingSecretError, match="SPLITSTONE_AUTH_JWT_PRIVATE_KEY is not set"):
        store.get("auth.pem", explicit=None, env_var="SPLITSTONE_AUTH_JWT_PRIVATE_KEY", generate=generate)
    with pytest.raises(MissingSecretError):
        store.get("auth.pem", explicit="", env_var="SPLITSTONE_AUTH_JWT_PRIVATE_KEY", generate=generate)
    assert generate.calls == 0
    assert not (tmp_path / "secrets").exists()


def test_production_ignores_a_secret_left_on_disk(tmp_path: Path) -> None:
    SecretStore(tmp_path / "secrets", production=False).get(
        "auth.pem", explicit=None, env_var="SPLITSTONE_X", generate=Generator()
    )
    with pytest.raises(MissingSecretError):
        SecretStore(tmp_path / "secrets", production=True).get(
            "auth.pem", explicit=None, env_var="SPLITSTONE_X", generate=Generator()
        )


# --- the real application ---------------------------------------------------------------------------


@pytest.fixture
def no_splitstone_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for name in list(os.environ):
        if name.startswith("SPLITSTONE_"):
            monkeypatch.delenv(name)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)  # and no .env


def real_settings(tmp_path: Path, env: Environment) -> Settings:
    return Settings(
        env=env,
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'db' / 'splitstone.db'}",
    )


def ed25519_pem() -> str:
    key = Ed25519PrivateKey.generate()
    return key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()
    ).decode()


async def test_production_refuses_to_start_without_explicit_secrets(
    no_splitstone_env: None, tmp_path: Path
) -> None:
    from splitstone.bootstrap import build_container  # needs the real modules

    with pytest.raises(MissingSecretError, match="SPLITSTONE_AUTH_JWT_PRIVATE_KEY"):
        build_container(real_settings(tmp_path, Environment.PRODUCTION))
    assert not (tmp_path / "data" / "secrets").exists()


async def test_production_starts_with_explicit_secrets_and_development_generates_them(
    no_splitstone_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from splitstone.bootstrap import build_container  # needs the real modules

    development = build_container(real_settings(tmp_path / "dev", Environment.DEVELOPMENT))
    await development.aclose()
    generated = list((tmp_path / "dev" / "data" / "secrets").iterdir())
    assert generated
    assert all(mode(path) == 0o600 for path in generated)

    monkeypatch.setenv("SPLITSTONE_AUTH_JWT_PRIVATE_KEY", ed25519_pem())
    # Each module asks for its own, in the order the modules are built.
    with pytest.raises(MissingSecretError, match="SPLITSTONE_BILLING_SANDBOX_WEBHOOK_SECRET"):
        build_container(real_settings(tmp_path / "prod", Environment.PRODUCTION))
    monkeypatch.setenv("SPLITSTONE_BILLING_SANDBOX_WEBHOOK_SECRET", "whsec_an operator's sandbox secret")
    with pytest.raises(MissingSecretError, match="SPLITSTONE_NOTIFICATIONS_LINK_SECRET"):
        build_container(real_settings(tmp_path / "prod", Environment.PRODUCTION))
    monkeypatch.setenv("SPLITSTONE_NOTIFICATIONS_LINK_SECRET", "an operator's unsubscribe link secret")
    production = build_container(real_settings(tmp_path / "prod", Environment.PRODUCTION))
    await production.aclose()
    assert {"auth", "billing", "notifications"} <= production.implementations.keys()
    assert not (tmp_path / "prod" / "data" / "secrets").exists()
