"""`splitstone new-module NAME`: a new business module in the house shape, registered, tested, documented."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from splitstone.scaffold.generate import DEFAULT_DESCRIPTION, Plan, plan_module, write_plan
from splitstone.scaffold.names import ScaffoldError
from splitstone.scaffold.project import Project


def new_module(
    name: Annotated[
        str, typer.Argument(help="The module's name: a lowercase identifier, e.g. invoicing_exports.")
    ],
    depends_on: Annotated[
        str,
        typer.Option(
            "--depends-on",
            help="Modules whose contracts it uses, comma-separated (e.g. auth,billing); auth is always one.",
        ),
    ] = "",
    description: Annotated[
        str, typer.Option(help="One line: what the module does (diagram, CLI help, docs).")
    ] = DEFAULT_DESCRIPTION,
    dry_run: Annotated[
        bool, typer.Option("--dry-run", help="List the files it would write and change.")
    ] = False,
) -> None:
    """Create modules/NAME: contract, declaration, service, table and migration, routes, an event handler,
    tests and docs; register it in bootstrap.py and the topologies; regenerate the architecture docs."""
    try:
        plan = plan_module(Project.find(Path.cwd()), name, depends_on.split(","), description=description)
        if dry_run:
            typer.echo(_listing(plan, "would write", "would change"))
            return
        write_plan(plan)
    except ScaffoldError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    typer.echo(_listing(plan, "wrote", "changed"))
    typer.echo(_summary(plan))


def _listing(plan: Plan, written: str, changed: str) -> str:
    lines = [f"{written}:", *(f"  {plan.relative(p)}" for p in sorted(plan.writes))]
    lines += [f"{changed}:", *(f"  {plan.relative(p)}" for p in sorted(plan.changes))]
    return "\n".join(lines)


def _summary(plan: Plan) -> str:
    names = plan.names
    needs = ", ".join(
        ["AuthApi (always: its routes are an organization's)", *(d.contract for d in plan.dependencies)]
    )
    lines = [
        "",
        f"Module {names.name}: contract {names.contract}, depends on {needs}.",
        f"Routes under /api/v1/orgs/{{org_id}}/{names.dashed}; table {names.name}.items; "
        f"publishes {names.name}.ItemCreated; handles auth.MemberRemoved.",
        f"Runs in service {plan.service!r} of topologies/split.toml; regenerated docs/architecture.md, "
        "docs/events.md, docs/contracts.json and docs/modules.md.",
        *(f"To do: {note}." for note in plan.notes),
        "",
        "Next:",
        f"  pytest tests/modules/{names.name}",
        "  splitstone arch check",
        "  make test",
        f"Then make it yours: docs/{names.name}.md says what to replace.",
    ]
    return "\n".join(lines)
