"""`splitstone arch events`: the event catalog from declarations, deterministic, and checked when stale."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any, ClassVar, Protocol
from uuid import UUID

from typer.testing import CliRunner

from splitstone.bootstrap import MODULES
from splitstone.kernel.arch.catalog import (
    GENERATED_NOTE,
    NO_DESCRIPTION,
    catalog_entries,
    describe,
    render_catalog,
    update_catalog,
)
from splitstone.kernel.events import Event
from splitstone.kernel.module import Module

REPO_ROOT = Path(__file__).parents[2]
EVENTS_DOC = REPO_ROOT / "docs" / "events.md"


class AuthApi(Protocol):
    async def whoami(self) -> str: ...


class ProjectsApi(Protocol):
    async def count(self) -> int: ...


class NotificationsApi(Protocol):
    async def sent(self) -> int: ...


class UserRegistered(Event):
    """A user registered.

    The second paragraph is for readers of the code, not for the catalog.
    """

    name: ClassVar[str] = "auth.UserRegistered"
    user_id: UUID
    email: str


class MemberRemoved(Event):
    """A member left | was removed
    from an organization."""

    name: ClassVar[str] = "auth.MemberRemoved"
    version: ClassVar[int] = 3
    user_id: UUID


class ProjectArchived(Event):
    name: ClassVar[str] = "projects.ProjectArchived"
    project_id: UUID


class InvoicePaid(Event):
    """An invoice was paid (billing runs elsewhere)."""

    name: ClassVar[str] = "billing.InvoicePaid"
    invoice_id: UUID


def handler(_implementation: Any) -> Any:
    async def handle(_event: Event) -> None:
        return None

    return handle


def modules() -> list[Module]:
    def build(_ctx: Any) -> object:
        return object()

    return [
        Module(
            name="auth",
            contract=AuthApi,
            factory=build,
            publishes=(UserRegistered, MemberRemoved),
        ),
        Module(
            name="projects",
            contract=ProjectsApi,
            factory=build,
            depends_on=[AuthApi],
            publishes=(ProjectArchived,),
            subscriptions={MemberRemoved: handler},
        ),
        Module(
            name="notifications",
            contract=NotificationsApi,
            factory=build,
            subscriptions={UserRegistered: handler, MemberRemoved: handler, InvoicePaid: handler},
        ),
    ]


def test_each_event_has_its_publisher_and_sorted_subscribers() -> None:
    entries = {e.name: (e.publisher, e.subscribers) for e in catalog_entries(modules())}

    assert entries == {
        "auth.MemberRemoved": ("auth", ["notifications", "projects"]),
        "auth.UserRegistered": ("auth", ["notifications"]),
        "billing.InvoicePaid": ("billing (not in this build)", ["notifications"]),
        "projects.ProjectArchived": ("projects", []),
    }


def test_the_summary_table_has_one_row_per_event_sorted_by_name() -> None:
    rows = [line for line in render_catalog(modules()).splitlines() if line.startswith("| [")]

    assert rows == [
        "| [`auth.MemberRemoved`](#authmemberremoved) | 3 | `auth` | `notifications`, `projects` | "
        "A member left \\| was removed from an organization. |",
        "| [`auth.UserRegistered`](#authuserregistered) | 1 | `auth` | `notifications` | "
        "A user registered. |",
        "| [`billing.InvoicePaid`](#billinginvoicepaid) | 1 | `billing (not in this build)` | "
        "`notifications` | An invoice was paid (billing runs elsewhere). |",
        f"| [`projects.ProjectArchived`](#projectsprojectarchived) | 1 | `projects` | — | {NO_DESCRIPTION} |",
    ]


def test_the_description_is_the_first_paragraph_of_the_class_own_docstring() -> None:
    assert describe(UserRegistered) == "A user registered."
    assert describe(MemberRemoved) == "A member left | was removed from an organization."
    # Not the docstring of Event, which a class without its own would otherwise inherit.
    assert describe(ProjectArchived) == NO_DESCRIPTION


def test_each_entry_shows_version_publisher_subscribers_and_the_json_schema() -> None:
    text = render_catalog(modules())
    section = text.split("## `auth.MemberRemoved`\n", 1)[1].split("\n## ", 1)[0]

    assert "- Version: 3\n" in section
    assert f"- Publisher: `auth` (`{__name__}.MemberRemoved`)\n" in section
    assert "- Subscribers: `notifications`, `projects`\n" in section
    schema = json.loads(section.split("```json\n", 1)[1].split("\n```", 1)[0])
    assert schema == MemberRemoved.model_json_schema()
    assert list(schema["properties"]) == ["id", "occurred_at", "aggregate_id", "user_id"]


def test_the_header_states_the_guarantees_and_links_the_architecture() -> None:
    text = render_catalog(modules())

    assert text.startswith(f"# Events\n\n{GENERATED_NOTE}\n")
    assert "[architecture.md](architecture.md#events)" in text
    for promise in ("At least once, applied once.", "No order.", "idempotency key"):
        assert promise in text


def test_output_does_not_depend_on_declaration_order() -> None:
    forward = modules()

    assert render_catalog(forward) == render_catalog(list(reversed(forward)))
    assert render_catalog(forward) == render_catalog([forward[1], forward[2], forward[0]])


def test_a_build_without_events_says_so() -> None:
    lonely = Module(name="auth", contract=AuthApi, factory=lambda _ctx: object())

    assert render_catalog([lonely]).endswith("No module of this build publishes or handles an event.\n")


# --- writing and checking -------------------------------------------------------------------------


def test_check_mode_reports_a_stale_or_missing_file_without_writing(tmp_path: Path) -> None:
    doc = tmp_path / "events.md"

    missing = update_catalog(doc, modules(), check=True)
    assert missing.changed
    assert not doc.exists()

    doc.write_text("# Events\n\nold\n")
    stale = update_catalog(doc, modules(), check=True)
    assert stale.changed
    assert "-old" in stale.diff
    assert "+## `auth.MemberRemoved`" in stale.diff
    assert doc.read_text() == "# Events\n\nold\n"


def test_write_mode_writes_the_file_and_is_then_up_to_date(tmp_path: Path) -> None:
    doc = tmp_path / "events.md"

    assert update_catalog(doc, modules()).changed
    assert doc.read_text() == render_catalog(modules())
    again = update_catalog(doc, modules(), check=True)
    assert not again.changed
    assert again.diff == ""


def test_cli_check_fails_on_a_stale_file_and_passes_once_written(tmp_path: Path) -> None:
    from splitstone.cli import app

    doc = tmp_path / "events.md"
    doc.write_text("stale\n")
    runner = CliRunner()

    stale = runner.invoke(app, ["arch", "events", "--check", "--file", str(doc)])
    assert stale.exit_code == 1
    assert "event catalog is stale; run `splitstone arch events`" in stale.output
    assert doc.read_text() == "stale\n"

    written = runner.invoke(app, ["arch", "events", "--file", str(doc)])
    assert written.exit_code == 0, written.output
    assert runner.invoke(app, ["arch", "events", "--check", "--file", str(doc)]).exit_code == 0
    assert doc.read_text() == render_catalog(MODULES)


def test_cli_refuses_a_folder_that_does_not_exist(tmp_path: Path) -> None:
    from splitstone.cli import app

    result = CliRunner().invoke(app, ["arch", "events", "--file", str(tmp_path / "nowhere" / "events.md")])

    assert result.exit_code == 2
    assert "not found" in result.output


# --- the committed catalog ------------------------------------------------------------------------


def test_the_committed_event_catalog_is_up_to_date() -> None:
    update = update_catalog(EVENTS_DOC, MODULES, check=True)

    assert not update.changed, (
        f"docs/events.md is stale; run `splitstone arch events` and commit it:\n{update.diff}"
    )


def test_every_event_of_the_product_is_described() -> None:
    undescribed = [e.name for e in catalog_entries(MODULES) if e.description == NO_DESCRIPTION]

    assert not undescribed, f"give these event classes a docstring: {', '.join(undescribed)}"


def test_the_architecture_document_has_the_section_the_catalog_links_to() -> None:
    headings = (REPO_ROOT / "docs" / "architecture.md").read_text(encoding="utf-8").splitlines()

    assert "## Events" in headings
