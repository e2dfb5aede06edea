"""`splitstone arch explain MODULE`: one screen for a new engineer, and a clear refusal of unknown names."""

from __future__ import annotations

from pathlib import Path

import pytest
from typer.testing import CliRunner

from splitstone.bootstrap import MODULES
from splitstone.cli import app

ROOT = Path(__file__).parents[2]


@pytest.fixture(autouse=True)
def at_the_repository_root(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(ROOT)


def test_explain_billing_fits_one_screen_and_says_what_a_newcomer_needs() -> None:
    result = CliRunner().invoke(app, ["arch", "explain", "billing"])
    assert result.exit_code == 0, result.output
    lines = result.output.splitlines()
    assert len(lines) <= 40
    billing = next(m for m in MODULES if m.name == "billing")
    assert lines[0] == f"billing: {billing.description}"
    text = result.output
    assert "Contract BillingApi: 4 methods" in text
    assert "  record_usage(): Record usage of a billable metric." in text
    assert "Depends on: auth" in text
    used_by = next(line for line in lines if line.startswith("Used by: "))
    assert {"notifications", "projects"} <= set(used_by.removeprefix("Used by: ").split("   ")[0].split(", "))
    assert "→ notifications listens to InvoiceFinalized, InvoicePaid" in text
    assert "← from auth: OrganizationCreated" in text
    assert "billing.invoices" in text
    assert "environment variables SPLITSTONE_BILLING_*" in text
    assert "Tests alone: pytest tests/modules/billing" in text
    assert "pytest tests/e2e/test_billing_journey.py" in text
    assert "Docs: docs/billing.md" in text


@pytest.mark.parametrize("name", sorted(m.name for m in MODULES))
def test_every_module_fits_one_screen(name: str) -> None:
    result = CliRunner().invoke(app, ["arch", "explain", name])
    assert result.exit_code == 0, result.output
    assert len(result.output.splitlines()) <= 40
    assert all(len(line) <= 100 for line in result.output.splitlines())


def test_an_unknown_module_is_refused_with_the_list_of_modules() -> None:
    result = CliRunner().invoke(app, ["arch", "explain", "invoicing"])
    assert result.exit_code == 2
    names = ", ".join(sorted(m.name for m in MODULES))
    assert f"no module 'invoicing'; the modules are: {names}" in result.output
