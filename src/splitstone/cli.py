"""The `splitstone` command: serve, migrate, check the architecture, and each module's own commands."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Annotated, Any

import typer
import uvicorn

from splitstone.bootstrap import MODULES, build_container
from splitstone.kernel import migrations
from splitstone.kernel.container import Container
from splitstone.kernel.logging import configure_logging
from splitstone.kernel.settings import Settings

app = typer.Typer(help="splitstone: a modular monolith that is ready to be split.", no_args_is_help=True)
db_app = typer.Typer(help="Per-module database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
arch_app = typer.Typer(help="Architecture rules and the generated module map.", no_args_is_help=True)
app.add_typer(arch_app, name="arch")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: SPLITSTONE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: SPLITSTONE_PORT).")] = None,
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations before serving.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="Worker processes.")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
) -> None:
    """Serve the HTTP API (docs at /docs)."""
    settings = Settings()
    configure_logging(level=settings.log_level, json=settings.json_logs())
    if migrate:
        asyncio.run(_upgrade(settings))
    else:
        pending = asyncio.run(_pending(settings))
        if pending:
            typer.echo(
                f"warning: not migrated: {', '.join(pending)}; /readyz fails until `splitstone db upgrade`",
                err=True,
            )
    uvicorn.run(
        "splitstone.bootstrap:create_app",
        factory=True,
        host=host or settings.host,
        port=port or settings.port,
        workers=workers,
        reload=reload,
        log_config=None,
        access_log=False,
        proxy_headers=True,
    )


@db_app.command("upgrade")
def db_upgrade() -> None:
    """Migrate every module to its latest revision, each in its own schema."""
    settings = Settings()
    for state in asyncio.run(_upgrade(settings)):
        typer.echo(f"{_label(state)}: at {state.current}")


@db_app.command("status")
def db_status() -> None:
    """Show each module's current and latest revision; exit 1 if any is behind."""
    settings = Settings()
    states = asyncio.run(_status(settings))
    for state in states:
        mark = "up to date" if state.up_to_date else "PENDING"
        typer.echo(f"{_label(state)}: current {state.current or '-'}, head {state.head or '-'} ({mark})")
    if not all(s.up_to_date for s in states):
        raise typer.Exit(code=1)


@arch_app.command("check")
def arch_check() -> None:
    """Check the import rules between kernel and modules; exit 1 if any is broken."""
    from splitstone.kernel.arch.check import check_modules

    report = check_modules("splitstone", MODULES)
    typer.echo(report.render())
    if not report.ok:
        raise typer.Exit(code=1)


@arch_app.command("diagram")
def arch_diagram(
    file: Annotated[Path, typer.Option(help="The document with the diagram markers.")] = Path(
        "docs/architecture.md"
    ),
    check: Annotated[bool, typer.Option(help="Only check that the file is current; exit 1 if not.")] = False,
    show: Annotated[bool, typer.Option("--print", help="Print the diagram instead of writing it.")] = False,
) -> None:
    """Write the module diagram (Mermaid) and table, generated from the declarations, into the docs."""
    from splitstone.kernel.arch.diagram import DiagramMarkersError, render_diagram, update_document

    if show:
        typer.echo(render_diagram(MODULES), nl=False)
        return
    if not file.is_file():
        typer.echo(f"error: {file} not found (run from the repository root, or pass --file)", err=True)
        raise typer.Exit(code=2)
    try:
        update = update_document(file, MODULES, check=check)
    except DiagramMarkersError as error:
        typer.echo(f"error: {file}: {error}", err=True)
        raise typer.Exit(code=2) from None
    if not update.changed:
        typer.echo(f"{file}: diagram up to date")
    elif check:
        typer.echo(update.diff, err=True, nl=False)
        typer.echo(f"{file}: diagram is stale; run `splitstone arch diagram`", err=True)
        raise typer.Exit(code=1)
    else:
        typer.echo(f"{file}: diagram updated")


def _label(state: migrations.MigrationStatus) -> str:
    return f"{state.module} [kernel]" if state.history == "kernel" else state.module


async def _upgrade(settings: Settings) -> list[migrations.MigrationStatus]:
    container = build_container(settings)
    try:
        return [
            state
            for m in container.modules
            for state in await migrations.upgrade_module(container.databases[m.name], m.migrations)
        ]
    finally:
        await container.aclose()


async def _status(settings: Settings) -> list[migrations.MigrationStatus]:
    container = build_container(settings)
    try:
        return [
            state
            for m in container.modules
            for state in await migrations.status_module(container.databases[m.name], m.migrations)
        ]
    finally:
        await container.aclose()


async def _pending(settings: Settings) -> list[str]:
    try:
        return sorted({s.module for s in await _status(settings) if not s.up_to_date})
    except Exception as error:  # the database may not answer yet; readyz reports it
        return [f"(database unavailable: {type(error).__name__})"]


def _provider(name: str) -> Any:
    @asynccontextmanager
    async def provide() -> AsyncIterator[object]:
        container: Container = build_container(Settings())
        try:
            yield container.implementations[name]
        finally:
            await container.aclose()

    return provide


for _module in MODULES:
    if _module.cli is not None:
        app.add_typer(_module.cli(_provider(_module.name)), name=_module.name, help=_module.description)


def main() -> None:
    app()
