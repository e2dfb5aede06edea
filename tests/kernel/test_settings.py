"""Settings: defaults, `SPLITSTONE_*` variables, `.env`, per-module database URLs and module settings."""

from __future__ import annotations

import os
from pathlib import Path

import pytest
from pydantic import ValidationError
from pydantic_settings import SettingsConfigDict

from splitstone.kernel.container import Container
from splitstone.kernel.module import ModuleContext
from splitstone.kernel.settings import Environment, ModuleSettings, Settings
from tests.kernel.conftest import NotesService, build_notes, notes_module


@pytest.fixture
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    """No SPLITSTONE_* variables and no .env in the working directory (a temporary one)."""
    for name in list(os.environ):
        if name.startswith("SPLITSTONE_"):
            monkeypatch.delenv(name)
    workdir = tmp_path / "work"
    workdir.mkdir()
    monkeypatch.chdir(workdir)
    return workdir


def test_defaults_run_on_sqlite_under_the_data_dir(clean_env: Path) -> None:
    settings = Settings()
    assert settings.env is Environment.DEVELOPMENT
    assert not settings.is_production
    assert settings.data_dir == Path("data")
    assert settings.database_url is None
    assert settings.database_url_for("auth") == "sqlite+aiosqlite:///data/splitstone.db"
    assert settings.host == "127.0.0.1"
    assert settings.port == 8000
    assert settings.rate_limit_storage_url == "memory://"
    assert settings.max_request_body_bytes == 1_048_576
    assert settings.json_logs() is False


def test_environment_variables_use_the_splitstone_prefix(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPLITSTONE_ENV", "production")
    monkeypatch.setenv("SPLITSTONE_PORT", "9001")
    monkeypatch.setenv("SPLITSTONE_DATA_DIR", "/srv/splitstone")
    monkeypatch.setenv("SPLITSTONE_PUBLIC_BASE_URL", "https://api.example.com/")
    monkeypatch.setenv("SPLITSTONE_RATE_LIMITS_ENABLED", "false")
    monkeypatch.setenv("PORT", "1")  # unprefixed: not ours

    settings = Settings()
    assert settings.is_production
    assert settings.port == 9001
    assert settings.data_dir == Path("/srv/splitstone")
    assert settings.public_base_url == "https://api.example.com"
    assert settings.rate_limits_enabled is False
    assert settings.json_logs() is True  # "auto" means JSON in production
    assert settings.database_url_for("auth") == "sqlite+aiosqlite:////srv/splitstone/splitstone.db"


@pytest.mark.parametrize(
    ("variable", "value"),
    [("SPLITSTONE_PORT", "0"), ("SPLITSTONE_ENV", "staging"), ("SPLITSTONE_MAX_REQUEST_BODY_BYTES", "10")],
)
def test_invalid_values_are_refused(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, variable: str, value: str
) -> None:
    monkeypatch.setenv(variable, value)
    with pytest.raises(ValidationError, match=variable.removeprefix("SPLITSTONE_").lower()):
        Settings()


def test_a_dotenv_file_is_read_and_the_environment_wins(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    (clean_env / ".env").write_text(
        "SPLITSTONE_LOG_LEVEL=debug\n"
        "SPLITSTONE_DATABASE_URL=postgresql+asyncpg://app@127.0.0.1:5432/app\n"
        "SPLITSTONE_PORT=8100\n"
    )
    monkeypatch.setenv("SPLITSTONE_PORT", "8200")
    settings = Settings()
    assert settings.log_level == "debug"
    assert settings.database_url == "postgresql+asyncpg://app@127.0.0.1:5432/app"
    assert settings.port == 8200


def test_a_module_database_url_overrides_the_shared_one(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPLITSTONE_DATABASE_URL", "postgresql+asyncpg://app@127.0.0.1:5432/app")
    monkeypatch.setenv(
        "SPLITSTONE_MODULE_DATABASE_URLS",
        '{"billing": "postgresql+asyncpg://billing@127.0.0.1:5432/billing"}',
    )
    settings = Settings()
    assert settings.database_url_for("billing") == "postgresql+asyncpg://billing@127.0.0.1:5432/billing"
    assert settings.database_url_for("auth") == "postgresql+asyncpg://app@127.0.0.1:5432/app"

    embedded = Settings(database_url=None, module_database_urls={"billing": "sqlite+aiosqlite:///b/main.db"})
    assert embedded.database_url_for("billing") == "sqlite+aiosqlite:///b/main.db"
    assert embedded.database_url_for("auth") == "sqlite+aiosqlite:///data/splitstone.db"


async def test_the_container_connects_each_module_to_its_own_url(tmp_path: Path) -> None:
    override = tmp_path / "elsewhere" / "main.db"
    settings = Settings(
        env=Environment.TEST,
        data_dir=tmp_path / "data",
        database_url=f"sqlite+aiosqlite:///{tmp_path / 'shared' / 'main.db'}",
        module_database_urls={"notes": f"sqlite+aiosqlite:///{override}"},
    )
    container = Container.build(settings, [notes_module()])
    try:
        assert container.databases["notes"].engine.url.database == str(override)
    finally:
        await container.aclose()


class NotesSettings(ModuleSettings):
    model_config = SettingsConfigDict(env_prefix="SPLITSTONE_NOTES_", env_file=".env", extra="ignore")

    page_size: int = 20
    title: str = "Notes"


def test_module_settings_read_their_own_prefix(clean_env: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (clean_env / ".env").write_text("SPLITSTONE_NOTES_TITLE=From dotenv\nSPLITSTONE_PORT=8100\n")
    monkeypatch.setenv("SPLITSTONE_NOTES_PAGE_SIZE", "50")
    monkeypatch.setenv("SPLITSTONE_PAGE_SIZE", "99")  # the process prefix is not the module's
    notes = NotesSettings()
    assert notes.page_size == 50
    assert notes.title == "From dotenv"


async def test_the_container_hands_a_module_its_settings(
    clean_env: Path, monkeypatch: pytest.MonkeyPatch, tmp_path: Path
) -> None:
    monkeypatch.setenv("SPLITSTONE_NOTES_PAGE_SIZE", "7")
    seen: list[ModuleSettings | None] = []

    def factory(ctx: ModuleContext) -> NotesService:
        seen.append(ctx.module_settings)
        return build_notes(ctx)

    settings = Settings(env=Environment.TEST, data_dir=tmp_path / "data")
    module = notes_module(settings=NotesSettings, factory=factory)
    for given, expected in ((None, 7), ({"notes": NotesSettings(page_size=3)}, 3)):
        container = Container.build(settings, [module], module_settings=given)
        await container.aclose()
        found = seen.pop()
        assert isinstance(found, NotesSettings)
        assert found.page_size == expected
