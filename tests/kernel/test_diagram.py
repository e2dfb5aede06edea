"""`splitstone arch diagram`: edges from declarations, sorted output, marker replacement, check mode."""

from __future__ import annotations

from pathlib import Path
from typing import Any, ClassVar, Protocol
from uuid import UUID

import pytest
from typer.testing import CliRunner

from splitstone.bootstrap import MODULES
from splitstone.kernel.arch.diagram import (
    END_MARKER,
    START_MARKER,
    DiagramMarkersError,
    event_edges,
    render_diagram,
    replace_generated,
    update_document,
)
from splitstone.kernel.events import Event
from splitstone.kernel.module import Module

ARCHITECTURE_DOC = Path(__file__).parents[2] / "docs" / "architecture.md"


class AuthApi(Protocol):
    async def whoami(self) -> str: ...


class ProjectsApi(Protocol):
    async def count(self) -> int: ...


class NotificationsApi(Protocol):
    async def sent(self) -> int: ...


class UserRegistered(Event):
    name: ClassVar[str] = "auth.UserRegistered"
    user_id: UUID


class MemberRemoved(Event):
    name: ClassVar[str] = "auth.MemberRemoved"
    user_id: UUID


class ProjectArchived(Event):
    name: ClassVar[str] = "projects.ProjectArchived"
    project_id: UUID


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
            description='Users & "orgs" <tenancy>',
            contract=AuthApi,
            factory=build,
            publishes=(UserRegistered, MemberRemoved),
        ),
        Module(
            name="projects",
            description="Projects and tasks.",
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
            depends_on=[ProjectsApi, AuthApi],
            subscriptions={UserRegistered: handler, ProjectArchived: handler, MemberRemoved: handler},
        ),
    ]


def test_contract_dependencies_are_solid_edges_labelled_with_the_contract() -> None:
    text = render_diagram(modules())

    assert "    projects -->|AuthApi| auth\n" in text
    assert "    notifications -->|AuthApi| auth\n" in text
    assert "    notifications -->|ProjectsApi| projects\n" in text


def test_events_are_dashed_edges_from_publisher_to_subscriber() -> None:
    text = render_diagram(modules())

    assert '    auth -.->|"auth.MemberRemoved<br/>auth.UserRegistered"| notifications\n' in text
    assert '    auth -.->|"auth.MemberRemoved"| projects\n' in text
    assert '    projects -.->|"projects.ProjectArchived"| notifications\n' in text
    assert event_edges(modules()) == {
        ("auth", "notifications"): ["auth.MemberRemoved", "auth.UserRegistered"],
        ("auth", "projects"): ["auth.MemberRemoved"],
        ("projects", "notifications"): ["projects.ProjectArchived"],
    }


def test_nodes_show_name_and_escaped_description() -> None:
    text = render_diagram(modules())

    assert '    auth["<b>auth</b><br/>Users #amp; #quot;orgs#quot; #lt;tenancy#gt;"]\n' in text
    assert '    notifications["<b>notifications</b>"]\n' in text
    assert text.index("```mermaid\nflowchart LR\n") < text.index("    auth[")


def test_the_table_lists_contract_dependencies_and_events_of_each_module() -> None:
    rows = [line for line in render_diagram(modules()).splitlines() if line.startswith("| `")]

    assert rows == [
        "| `auth` | `AuthApi` | — | `auth.MemberRemoved`, `auth.UserRegistered` | — |",
        "| `notifications` | `NotificationsApi` | `AuthApi` (auth), `ProjectsApi` (projects) | — | "
        "`auth.MemberRemoved`, `auth.UserRegistered`, `projects.ProjectArchived` |",
        "| `projects` | `ProjectsApi` | `AuthApi` (auth) | `projects.ProjectArchived` | "
        "`auth.MemberRemoved` |",
    ]


def test_output_does_not_depend_on_declaration_order() -> None:
    forward = modules()
    shuffled = [forward[2], forward[0], forward[1]]

    assert render_diagram(forward) == render_diagram(shuffled) == render_diagram(list(reversed(forward)))


def test_an_event_nobody_lists_as_published_comes_from_the_module_its_name_names() -> None:
    auth, projects, _ = modules()
    silent_auth = Module(name="auth", contract=AuthApi, factory=auth.factory)

    assert event_edges([silent_auth, projects]) == {("auth", "projects"): ["auth.MemberRemoved"]}


# --- the markers ----------------------------------------------------------------------------------


DOCUMENT = f"# Title\n\nBefore.\n\n{START_MARKER}\nold diagram\n{END_MARKER}\n\nAfter.\n"


def test_only_the_text_between_the_markers_is_replaced() -> None:
    updated = replace_generated(DOCUMENT, "new diagram\n")

    assert updated == f"# Title\n\nBefore.\n\n{START_MARKER}\nnew diagram\n{END_MARKER}\n\nAfter.\n"
    assert replace_generated(updated, "new diagram\n") == updated


@pytest.mark.parametrize(
    "document",
    [
        "no markers at all\n",
        f"{START_MARKER}\nonly a start\n",
        f"{START_MARKER}\n{END_MARKER}\n{START_MARKER}\n{END_MARKER}\n",
        f"{END_MARKER}\nbackwards\n{START_MARKER}\n",
    ],
)
def test_missing_duplicated_or_misordered_markers_are_refused(document: str) -> None:
    with pytest.raises(DiagramMarkersError):
        replace_generated(document, "diagram")


def test_check_mode_reports_a_stale_file_without_writing_it(tmp_path: Path) -> None:
    doc = tmp_path / "architecture.md"
    doc.write_text(DOCUMENT)

    update = update_document(doc, modules(), check=True)

    assert update.changed
    assert "-old diagram" in update.diff
    assert "+    projects -->|AuthApi| auth" in update.diff
    assert doc.read_text() == DOCUMENT


def test_write_mode_updates_the_file_and_is_then_up_to_date(tmp_path: Path) -> None:
    doc = tmp_path / "architecture.md"
    doc.write_text(DOCUMENT)

    assert update_document(doc, modules()).changed
    assert "projects -->|AuthApi| auth" in doc.read_text()
    assert doc.read_text().endswith(f"{END_MARKER}\n\nAfter.\n")
    again = update_document(doc, modules(), check=True)
    assert not again.changed
    assert again.diff == ""


# --- the committed document -----------------------------------------------------------------------


def test_the_committed_architecture_diagram_is_up_to_date() -> None:
    update = update_document(ARCHITECTURE_DOC, MODULES, check=True)

    assert not update.changed, (
        f"docs/architecture.md is stale; run `splitstone arch diagram` and commit it:\n{update.diff}"
    )


def test_cli_check_fails_on_a_stale_file_and_passes_once_written(tmp_path: Path) -> None:
    from splitstone.cli import app

    doc = tmp_path / "architecture.md"
    doc.write_text(DOCUMENT)
    runner = CliRunner()

    stale = runner.invoke(app, ["arch", "diagram", "--check", "--file", str(doc)])
    assert stale.exit_code == 1
    assert "diagram is stale; run `splitstone arch diagram`" in stale.output
    assert doc.read_text() == DOCUMENT

    written = runner.invoke(app, ["arch", "diagram", "--file", str(doc)])
    assert written.exit_code == 0, written.output
    assert runner.invoke(app, ["arch", "diagram", "--check", "--file", str(doc)]).exit_code == 0


def test_cli_refuses_a_document_without_markers(tmp_path: Path) -> None:
    from splitstone.cli import app

    doc = tmp_path / "architecture.md"
    doc.write_text("# nothing to replace\n")

    result = CliRunner().invoke(app, ["arch", "diagram", "--file", str(doc)])

    assert result.exit_code == 2
    assert "expected one" in result.output
