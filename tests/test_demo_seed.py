"""`splitstone demo seed`: a demo organization made through the API, found (not doubled) the second time."""

from __future__ import annotations

import asyncio
from pathlib import Path
from typing import Any

import httpx
import pytest
from typer.testing import CliRunner

from splitstone.bootstrap import build_container
from splitstone.cli import app
from splitstone.demo import DEMO_EMAIL, DEMO_PASSWORD, MEMBERS
from splitstone.kernel.app import create_app
from splitstone.kernel.settings import Settings

runner = CliRunner()


@pytest.fixture
def operator_env(database_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLITSTONE_DATABASE_URL", database_url)
    monkeypatch.setenv("SPLITSTONE_DATA_DIR", str(tmp_path / "data"))
    monkeypatch.setenv("SPLITSTONE_ENV", "test")
    monkeypatch.setenv("COLUMNS", "250")


async def _look(password: str = DEMO_PASSWORD) -> dict[str, Any]:
    """What the demo owner sees through the API: the org, its members, projects, tasks and usage."""
    container = build_container(Settings())
    try:
        transport = httpx.ASGITransport(app=create_app(container))
        async with httpx.AsyncClient(transport=transport, base_url="http://test") as client:
            login = await client.post("/api/v1/auth/login", json={"email": DEMO_EMAIL, "password": password})
            assert login.status_code == 200, login.text
            headers = {"Authorization": f"Bearer {login.json()['access_token']}"}

            async def get(path: str) -> Any:
                response = await client.get(path, headers=headers)
                assert response.status_code == 200, response.text
                return response.json()

            [org] = [o for o in (await get("/api/v1/orgs"))["items"] if o["name"] == "Demo"]
            base = f"/api/v1/orgs/{org['id']}"
            tasks = (await get(f"{base}/tasks?limit=100"))["items"]
            commented = [t for t in tasks if (await get(f"{base}/tasks/{t['key']}/comments"))["items"]]
            return {
                "org": org,
                "members": (await get(f"{base}/members"))["items"],
                "projects": (await get(f"{base}/projects"))["items"],
                "tasks": tasks,
                "commented": commented,
                "entitlements": (await get(f"{base}/billing/entitlements"))["items"],
            }
    finally:
        await container.aclose()


def test_seed_makes_a_living_demo_and_a_second_seed_finds_it(operator_env: None) -> None:
    seeded = runner.invoke(app, ["demo", "seed", "--tasks", "20"])
    assert seeded.exit_code == 0, seeded.output
    assert "Seeded the demo organization 'Demo'" in seeded.output
    assert "20 tasks" in seeded.output
    assert DEMO_EMAIL in seeded.output
    assert DEMO_PASSWORD in seeded.output
    assert "curl" in seeded.output

    seen = asyncio.run(_look())
    assert seen["org"]["role"] == "owner"
    roles = {m["email"]: m["role"] for m in seen["members"]}
    assert roles == {DEMO_EMAIL: "owner", **{p.email: p.role for p in MEMBERS}}
    assert sorted(p["key"] for p in seen["projects"]) == ["API", "OPS", "WEB"]
    tasks = seen["tasks"]
    assert len(tasks) == 20
    assert len({t["status"] for t in tasks}) >= 2
    assert len({t["priority"] for t in tasks}) >= 2
    assert len({t["assignee_id"] for t in tasks} - {None}) >= 2
    assert any(t["labels"] for t in tasks)
    assert any(t["due_date"] for t in tasks)
    assert seen["commented"]
    # The worker ran: each task was reported to billing as usage.
    [tasks_limit] = [e for e in seen["entitlements"] if e["key"] == "tasks_per_month"]
    assert tasks_limit["used"] == 20

    again = runner.invoke(app, ["demo", "seed", "--tasks", "20"])
    assert again.exit_code == 0, again.output
    assert "already seeded" in again.output
    assert len(asyncio.run(_look())["tasks"]) == 20


def test_seed_with_another_password_than_the_demo_users_have_fails_and_says_why(operator_env: None) -> None:
    assert runner.invoke(app, ["demo", "seed", "--tasks", "0"]).exit_code == 0
    other = runner.invoke(app, ["demo", "seed", "--tasks", "0", "--password", "another granite block 99"])
    assert other.exit_code == 1
    assert "already exists with another password" in other.output


def test_seed_is_refused_in_production(operator_env: None, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLITSTONE_ENV", "production")
    refused = runner.invoke(app, ["demo", "seed"])
    assert refused.exit_code == 2
    assert "not in production" in refused.output
