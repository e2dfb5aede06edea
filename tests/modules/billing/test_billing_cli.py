"""`splitstone billing ...` as an operator runs it: the plans, their versions, checking a catalog file."""

from __future__ import annotations

import asyncio
import re
from importlib import resources
from pathlib import Path

import pytest
from typer.testing import CliRunner

from splitstone.bootstrap import build_container
from splitstone.cli import app
from splitstone.kernel.settings import Settings
from splitstone.modules.billing.service import BillingService

runner = CliRunner()

SHIPPED = resources.files("splitstone.modules.billing").joinpath("catalog.toml").read_text(encoding="utf-8")
PRO_PRICES = "prices = { month = 1900, year = 19000 }"
RAISED = "prices = { month = 2900, year = 29000 }"


@pytest.fixture
def operator_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLITSTONE_DATABASE_URL", database_url)
    monkeypatch.setenv("SPLITSTONE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SPLITSTONE_ENV", "test")
    monkeypatch.setenv("SPLITSTONE_BILLING_SANDBOX_WEBHOOK_URL", "")
    monkeypatch.delenv("SPLITSTONE_BILLING_CATALOG_PATH", raising=False)
    monkeypatch.setenv("COLUMNS", "250")  # rich tables: one row per line


def write(path: Path, text: str) -> Path:
    path.write_text(text, encoding="utf-8")
    return path


def rows(output: str) -> list[list[str]]:
    """A rich table's rows (the header first) as lists of cells."""
    return [
        [cell.strip() for cell in re.split("[│┃]", line.strip())[1:-1]]
        for line in output.splitlines()
        if line.strip()[:1] in ("│", "┃")
    ]


def store_catalog() -> None:
    """Store the plans as a server does when it first uses its catalog."""

    async def sync() -> None:
        container = build_container(Settings())
        try:
            service = container.implementations["billing"]
            assert isinstance(service, BillingService)
            await service.plans.sync()
        finally:
            await container.aclose()

    asyncio.run(sync())


def use_catalog(monkeypatch: pytest.MonkeyPatch, path: Path, text: str) -> None:
    path.write_text(text, encoding="utf-8")
    monkeypatch.setenv("SPLITSTONE_BILLING_CATALOG_PATH", str(path))


# -- plans and their versions (the database) -------------------------------------------------------------


def test_plans_lists_the_configured_plans_with_their_versions(operator_env: None) -> None:
    store_catalog()
    result = runner.invoke(app, ["billing", "plans"])
    assert result.exit_code == 0, result.output
    table = rows(result.output)
    assert [r[0] for r in table] == ["code", "free", "pro", "business"]
    assert table[0] == ["code", "name", "version", "prices", "trial", "limits"]
    assert table[2] == [
        "pro",
        "Pro",
        "1",
        "19.00 USD/month, 190.00 USD/year",
        "14 days",
        "projects 50, members 50, tasks_per_month 10000",
    ]
    assert table[1][4] == "-"
    assert table[3][5] == "projects unlimited, members unlimited, tasks_per_month unlimited"
    assert "Not stored yet" not in result.output


def test_the_commands_only_read_and_show_what_is_not_stored_yet(
    operator_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    fresh = runner.invoke(app, ["billing", "plans"])
    assert fresh.exit_code == 0, fresh.output
    assert [r[2] for r in rows(fresh.output)[1:]] == ["1 (not stored yet)"] * 3
    assert "Not stored yet: billing stores a changed plan as its next version" in fresh.output

    store_catalog()
    use_catalog(monkeypatch, tmp_path / "raised.toml", SHIPPED.replace(PRO_PRICES, RAISED))
    raised = runner.invoke(app, ["billing", "plans"])
    assert [r[2] for r in rows(raised.output)[1:]] == ["1", "2 (not stored yet)", "1"]
    versions = runner.invoke(app, ["billing", "plan-versions", "pro"])
    assert versions.exit_code == 0, versions.output
    assert [(r[0], r[7]) for r in rows(versions.output)[1:]] == [("1", "")]  # nothing was stored
    assert "The catalog's pro will be version 2. Not stored yet" in versions.output


def test_plan_versions_shows_each_stored_version_and_which_is_current(
    operator_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_catalog()
    first = runner.invoke(app, ["billing", "plan-versions", "pro"])
    assert first.exit_code == 0, first.output
    table = rows(first.output)
    assert table[0] == [
        "version",
        "created (UTC)",
        "name",
        "prices",
        "trial",
        "limits",
        "fingerprint",
        "current",
    ]
    assert [(r[0], r[3], r[7]) for r in table[1:]] == [("1", "19.00 USD/month, 190.00 USD/year", "yes")]

    # A new catalog raises Pro's price: it becomes version 2, and version 1 is still listed.
    use_catalog(monkeypatch, tmp_path / "raised.toml", SHIPPED.replace(PRO_PRICES, RAISED))
    store_catalog()
    second = runner.invoke(app, ["billing", "plan-versions", "pro"])
    assert second.exit_code == 0, second.output
    assert [(r[0], r[3], r[7]) for r in rows(second.output)[1:]] == [
        ("1", "19.00 USD/month, 190.00 USD/year", ""),
        ("2", "29.00 USD/month, 290.00 USD/year", "yes"),
    ]
    assert "not stored yet" not in second.output.lower()
    listed = runner.invoke(app, ["billing", "plans"])
    assert [(r[0], r[2]) for r in rows(listed.output)[1:]] == [("free", "1"), ("pro", "2"), ("business", "1")]


def test_plan_versions_of_a_plan_no_longer_in_the_catalog(
    operator_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    store_catalog()
    use_catalog(monkeypatch, tmp_path / "two-plans.toml", SHIPPED[: SHIPPED.index("[plans.business]")])
    result = runner.invoke(app, ["billing", "plan-versions", "business"])
    assert result.exit_code == 0, result.output
    assert [(r[0], r[2], r[7]) for r in rows(result.output)[1:]] == [("1", "Business", "")]
    assert "business is not in the catalog: no new subscription can choose it." in result.output


def test_plan_versions_of_an_unknown_plan_fails(operator_env: None) -> None:
    result = runner.invoke(app, ["billing", "plan-versions", "gold"])
    assert result.exit_code == 1
    assert "error: there is no plan 'gold'; the catalog's plans: free, pro, business" in result.output


def test_an_invalid_configured_catalog_is_reported(
    operator_env: None, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    use_catalog(
        monkeypatch, tmp_path / "bad.toml", SHIPPED.replace('default_plan = "free"', 'default_plan = "pro"')
    )
    for command in (["billing", "plans"], ["billing", "plan-versions", "pro"]):
        result = runner.invoke(app, command)
        assert result.exit_code == 1, result.output
        assert f"error: {tmp_path / 'bad.toml'}: invalid catalog:" in result.output
        assert "default_plan 'pro' must be free" in result.output


# -- catalog check (no database) ---------------------------------------------------------------------------


def test_catalog_check_summarizes_the_shipped_catalog(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    result = runner.invoke(app, ["billing", "catalog", "check"])
    assert result.exit_code == 0, result.output
    assert (
        "ok: the shipped catalog: currency USD, default plan free; 4 metrics, 5 entitlements, 3 plans"
        in result.output
    )
    table = rows(result.output)
    assert [r[0] for r in table] == ["code", "free", "pro", "business"]
    assert table[3][5] == "api_calls, active_users, storage_gb"
    assert len(table[2][6]) == 12  # the fingerprint's start: what changes when the plan does


def test_catalog_check_of_a_file(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("COLUMNS", "250")
    path = write(tmp_path / "catalog.toml", SHIPPED.replace(PRO_PRICES, "prices = { month = 2900 }"))
    result = runner.invoke(app, ["billing", "catalog", "check", str(path)])
    assert result.exit_code == 0, result.output
    assert f"ok: {path}: currency USD" in result.output
    assert rows(result.output)[2][2] == "29.00 USD/month"


def test_catalog_check_prints_what_is_wrong_and_fails(tmp_path: Path) -> None:
    invalid = SHIPPED.replace(
        "limits = { projects = 50, members = 50, tasks_per_month = 10000 }", "limits = {}"
    )
    path = write(tmp_path / "catalog.toml", invalid)
    result = runner.invoke(app, ["billing", "catalog", "check", str(path)])
    assert result.exit_code == 1
    assert f"error: {path}: invalid catalog:" in result.output
    assert "plan 'pro' limits: missing ['members', 'projects', 'tasks_per_month']" in result.output

    broken = runner.invoke(
        app, ["billing", "catalog", "check", str(write(tmp_path / "b.toml", "currency = "))]
    )
    assert broken.exit_code == 1
    assert "not valid TOML" in broken.output

    missing = runner.invoke(app, ["billing", "catalog", "check", str(tmp_path / "missing.toml")])
    assert missing.exit_code == 1
    assert "error: cannot read the billing catalog" in missing.output
