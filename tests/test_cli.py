"""The `splitstone` command as an operator runs it, against the test database."""

from __future__ import annotations

import asyncio
import re
from pathlib import Path

import pytest
from typer.testing import CliRunner

from splitstone.bootstrap import build_container
from splitstone.cli import app
from splitstone.kernel.settings import Settings
from splitstone.modules.notifications.api import Recipient
from splitstone.modules.notifications.service import NotificationsService

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


def test_the_delivery_log_lists_and_shows_emails(operator_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")

    async def send() -> None:
        container = build_container(Settings())
        try:
            service = container.implementations["notifications"]
            assert isinstance(service, NotificationsService)
            await service.notify(
                "auth.password_changed",
                [Recipient(email="ops@example.com")],
                {"changed_at": "2026-01-01T00:00:00+00:00"},
                "cli-test",
            )
        finally:
            await container.aclose()

    asyncio.run(send())

    listed = runner.invoke(app, ["notifications", "deliveries", "--to", "OPS@example.com"])
    assert listed.exit_code == 0, listed.output
    assert "auth.password_changed" in listed.output
    assert "queued" in listed.output  # no worker ran: the email waits for its job
    [delivery_id] = re.findall(r"[0-9a-f]{8}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{4}-[0-9a-f]{12}", listed.output)
    assert (
        runner.invoke(app, ["notifications", "deliveries", "--to", "x@example.com"]).output.count("auth.")
        == 0
    )

    shown = runner.invoke(app, ["notifications", "show", delivery_id])
    assert shown.exit_code == 0, shown.output
    assert "To: ops@example.com" in shown.output
    assert "Subject: " in shown.output
    assert "1 January 2026" in shown.output  # the rendered text, with its date

    newest = runner.invoke(app, ["notifications", "show", "--to", "ops@example.com"])
    assert newest.exit_code == 0, newest.output
    assert newest.output == shown.output
    assert runner.invoke(app, ["notifications", "show"]).exit_code == 2
    nobody = runner.invoke(app, ["notifications", "show", "--to", "nobody@example.com"])
    assert nobody.exit_code == 1
    assert "No email to nobody@example.com" in nobody.output

    missing = runner.invoke(app, ["notifications", "show", "01920000-0000-7000-8000-000000000000"])
    assert missing.exit_code == 1
    assert "No delivery" in missing.output
