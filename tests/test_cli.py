"""The `splitstone` command as an operator runs it, against the test database."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from splitstone.cli import app

runner = CliRunner()


@pytest.fixture
def operator_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLITSTONE_DATABASE_URL", database_url)
    monkeypatch.setenv("SPLITSTONE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SPLITSTONE_ENV", "test")


def test_db_status_reports_every_module_up_to_date(operator_env: None) -> None:
    result = runner.invoke(app, ["db", "status"])
    assert result.exit_code == 0, result.output
    assert "auth: current 0001, head 0001 (up to date)" in result.output


def test_db_status_fails_on_an_unmigrated_database(
    empty_database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setenv("SPLITSTONE_DATABASE_URL", empty_database_url)
    monkeypatch.setenv("SPLITSTONE_DATA_DIR", str(tmp_path / "data"))
    result = runner.invoke(app, ["db", "status"])
    assert result.exit_code == 1
    assert "PENDING" in result.output
    upgraded = runner.invoke(app, ["db", "upgrade"])
    assert upgraded.exit_code == 0, upgraded.output
    assert runner.invoke(app, ["db", "status"]).exit_code == 0


def test_create_user_prompts_for_the_password_and_refuses_a_duplicate(operator_env: None) -> None:
    password = "another granite block 99"
    created = runner.invoke(
        app,
        ["auth", "create-user", "--email", "Ops@Example.com", "--name", "Ops"],
        input=f"{password}\n{password}\n",
    )
    assert created.exit_code == 0, created.output
    assert "<ops@example.com>" in created.output
    again = runner.invoke(
        app, ["auth", "create-user", "--email", "ops@example.com"], input=f"{password}\n{password}\n"
    )
    assert again.exit_code == 1
    assert "already exists" in again.output


def test_create_user_refuses_a_weak_password(operator_env: None) -> None:
    result = runner.invoke(
        app, ["auth", "create-user", "--email", "weak@example.com"], input="password\npassword\n"
    )
    assert result.exit_code == 1
    assert "error:" in result.output
