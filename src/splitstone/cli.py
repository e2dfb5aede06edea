"""The `splitstone` command: serve, migrate, check the architecture, and each module's own commands."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import signal
import sys
from collections.abc import AsyncIterator, Awaitable, Callable
from contextlib import asynccontextmanager
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, NoReturn, TypeVar
from uuid import UUID

import structlog
import typer
import uvicorn
from rich.console import Console
from rich.table import Table
from sqlalchemy.exc import SQLAlchemyError

from splitstone import demo
from splitstone.bootstrap import MODULES, build_container
from splitstone.cli_arch_report import arch_explain, arch_report
from splitstone.cli_scaffold import new_module
from splitstone.cli_topology import topology_app, up
from splitstone.kernel import migrations
from splitstone.kernel.container import Container
from splitstone.kernel.logging import configure_logging
from splitstone.kernel.messaging.admin import (
    InboxEntry,
    JobEntry,
    MessagingAdmin,
    ModuleStatus,
    UnknownModule,
)
from splitstone.kernel.module import ModuleGraphError
from splitstone.kernel.settings import Settings
from splitstone.kernel.topology import Topology, TopologyError

T = TypeVar("T")

TopologyOption = Annotated[
    Path | None,
    typer.Option(
        "--topology",
        help="Topology file: run only --service's modules, calling the others remotely "
        "(default: SPLITSTONE_TOPOLOGY, else every module here).",
        dir_okay=False,
    ),
]
ServiceOption = Annotated[
    str | None, typer.Option("--service", help="Which service of the topology (default: SPLITSTONE_SERVICE).")
]


def _select_service(topology: Path | None, service: str | None) -> None:
    """Pass --topology and --service on the way every setting travels (to uvicorn's factory too), and
    refuse a topology this process cannot run, with its message rather than a traceback."""
    if topology is not None:
        os.environ["SPLITSTONE_TOPOLOGY"] = str(topology)
    if service is not None:
        os.environ["SPLITSTONE_SERVICE"] = service
    if not os.environ.get("SPLITSTONE_TOPOLOGY"):
        return

    async def build_once() -> None:
        await build_container(Settings()).aclose()

    try:
        asyncio.run(build_once())
    except (TopologyError, ModuleGraphError) as error:
        _fail(str(error), code=2)


app = typer.Typer(help="splitstone: a modular monolith that is ready to be split.", no_args_is_help=True)
db_app = typer.Typer(help="Per-module database migrations.", no_args_is_help=True)
app.add_typer(db_app, name="db")
arch_app = typer.Typer(help="Architecture rules and the generated module map.", no_args_is_help=True)
app.add_typer(arch_app, name="arch")
events_app = typer.Typer(
    help="Events between modules: outbox backlogs, inboxes and dead letters.", no_args_is_help=True
)
app.add_typer(events_app, name="events")
events_dead_app = typer.Typer(
    help="Events a handler gave up on (after SPLITSTONE_EVENT_MAX_ATTEMPTS attempts).", no_args_is_help=True
)
events_app.add_typer(events_dead_app, name="dead")
jobs_app = typer.Typer(help="Durable jobs: backlogs and dead jobs.", no_args_is_help=True)
app.add_typer(jobs_app, name="jobs")
jobs_dead_app = typer.Typer(help="Jobs that failed their last allowed attempt.", no_args_is_help=True)
jobs_app.add_typer(jobs_dead_app, name="dead")
demo_app = typer.Typer(help="Demo data, for a first look at a living system.", no_args_is_help=True)
app.add_typer(demo_app, name="demo")


@app.command()
def serve(
    host: Annotated[str | None, typer.Option(help="Interface to bind (default: SPLITSTONE_HOST).")] = None,
    port: Annotated[int | None, typer.Option(help="Port (default: SPLITSTONE_PORT).")] = None,
    migrate: Annotated[bool, typer.Option(help="Apply pending migrations before serving.")] = False,
    workers: Annotated[int, typer.Option(min=1, help="HTTP server processes (uvicorn workers).")] = 1,
    reload: Annotated[bool, typer.Option(help="Restart on code changes (development).")] = False,
    worker: Annotated[
        bool | None,
        typer.Option(
            "--worker/--no-worker",
            help="Run relays, event handlers and jobs in the API process (default: SPLITSTONE_RUN_WORKER, "
            "true). --no-worker serves the API alone, for when `splitstone worker` runs them.",
        ),
    ] = None,
    topology: TopologyOption = None,
    service: ServiceOption = None,
) -> None:
    """Serve the HTTP API (docs at /docs), with the worker inside unless --no-worker."""
    _select_service(topology, service)
    if worker is not None:
        # uvicorn imports the app factory by name (in new processes with --workers or --reload), so the
        # choice travels the way every setting does: through the environment.
        os.environ["SPLITSTONE_RUN_WORKER"] = "true" if worker else "false"
    settings = Settings()
    configure_logging(level=settings.log_level, json=settings.json_logs())
    if migrate:
        asyncio.run(_upgrade(settings))
    else:
        _warn_if_unmigrated(settings, "/readyz fails until `splitstone db upgrade`")
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


@app.command("worker")
def worker_command(topology: TopologyOption = None, service: ServiceOption = None) -> None:
    """Run only the worker (relays, event handlers, jobs) until SIGINT or SIGTERM."""
    _select_service(topology, service)
    settings = Settings()
    configure_logging(level=settings.log_level, json=settings.json_logs())
    _warn_if_unmigrated(settings, "the worker's loops fail until `splitstone db upgrade`")
    asyncio.run(_run_worker(settings))


async def _run_worker(settings: Settings) -> None:
    log = structlog.get_logger("splitstone.worker")
    loop = asyncio.get_running_loop()
    stop = asyncio.Event()
    received: list[str] = []
    handled = (signal.SIGINT, signal.SIGTERM)

    def on_signal(sig: signal.Signals) -> None:
        received.append(sig.name)
        stop.set()
        for each in handled:  # a second signal acts as usual: it interrupts a stop that hangs
            loop.remove_signal_handler(each)

    container = build_container(settings)
    background = container.worker()
    code = 0
    try:
        with contextlib.suppress(NotImplementedError):  # Windows: Ctrl-C interrupts instead
            for sig in handled:
                loop.add_signal_handler(sig, on_signal, sig)
        try:
            await background.start()
        except Exception as error:  # e.g. the broker does not answer: say so, no traceback
            log.error("worker could not start", error=f"{type(error).__name__}: {error}")
            raise typer.Exit(code=1) from None
        log.info(
            "worker running",
            modules=[m.name for m in container.modules],
            transport=settings.event_transport,
            pid=os.getpid(),
        )
        stopping = asyncio.create_task(stop.wait())
        ended = asyncio.create_task(background.wait_loop_ended())
        await asyncio.wait([stopping, ended], return_when=asyncio.FIRST_COMPLETED)
        stopping.cancel()
        ended.cancel()
        if not stop.is_set():  # a loop died: exit with an error, and let the supervisor start a new worker
            log.error("worker stopping: a loop ended", loops=background.ended_loops)
            code = 1
        else:
            log.info("worker stopping", signal=received[0] if received else None)
    finally:
        # Cancelling a handler rolls its transaction back; its inbox row stays pending for next time.
        try:
            await background.stop()
        except Exception:
            if not code:  # a loop's error that was not logged above
                raise
        await container.aclose()
        for sig in handled:
            with contextlib.suppress(NotImplementedError, ValueError):
                loop.remove_signal_handler(sig)
    log.info("worker stopped")
    if code:
        raise typer.Exit(code=code)


@db_app.command("upgrade")
def db_upgrade(topology: TopologyOption = None, service: ServiceOption = None) -> None:
    """Migrate every module (of --service) to its latest revision, each in its own schema."""
    _select_service(topology, service)
    settings = Settings()
    for state in asyncio.run(_upgrade(settings)):
        typer.echo(f"{_label(state)}: at {state.current}")


@db_app.command("status")
def db_status(topology: TopologyOption = None, service: ServiceOption = None) -> None:
    """Show each module's (of --service) current and latest revision; exit 1 if any is behind."""
    _select_service(topology, service)
    settings = Settings()
    states = asyncio.run(_status(settings))
    for state in states:
        mark = "up to date" if state.up_to_date else "PENDING"
        typer.echo(f"{_label(state)}: current {state.current or '-'}, head {state.head or '-'} ({mark})")
    if not all(s.up_to_date for s in states):
        raise typer.Exit(code=1)


@db_app.command("provision")
def db_provision(
    admin_url: Annotated[
        str,
        typer.Option(help="PostgreSQL URL of an administrator (CREATEROLE), e.g. postgresql://root@host/db."),
    ],
    topology: TopologyOption = None,
) -> None:
    """Create each module's PostgreSQL role and its schema, owned by it (idempotent).

    The roles are the users of the modules' database URLs in the topology (or
    SPLITSTONE_MODULE_DATABASE_URLS); run this once as an administrator, then `db upgrade` as the modules.
    """
    from splitstone.kernel.provisioning import ProvisioningError, provision_module_roles

    settings = Settings()
    path = topology or settings.topology
    if path is not None:
        try:
            loaded = Topology.load(path)
        except TopologyError as error:
            _fail(str(error), code=2)
        urls = {m: u for service in loaded.services.values() for m, u in service.database_urls.items()}
    else:
        urls = dict(settings.module_database_urls)
    if not urls:
        _fail("no module database URLs to provision (set them in the topology's database_urls)", code=2)
    try:
        done = asyncio.run(provision_module_roles(admin_url, urls))
    except (ProvisioningError, OSError) as error:
        _fail(str(error), code=1)
    for item in done:
        typer.echo(
            f"{item.module}: role {item.role} in {item.database}: {', '.join(item.actions) or 'in place'}"
        )


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


@arch_app.command("events")
def arch_events(
    file: Annotated[Path, typer.Option(help="The event catalog to write.")] = Path("docs/events.md"),
    check: Annotated[bool, typer.Option(help="Only check that the file is current; exit 1 if not.")] = False,
    show: Annotated[bool, typer.Option("--print", help="Print the catalog instead of writing it.")] = False,
) -> None:
    """Write the event catalog (publisher, subscribers, description, JSON schema) from the declarations."""
    from splitstone.kernel.arch.catalog import render_catalog, update_catalog

    if show:
        typer.echo(render_catalog(MODULES), nl=False)
        return
    if not file.parent.is_dir():
        typer.echo(f"error: {file.parent} not found (run from the repository root, or pass --file)", err=True)
        raise typer.Exit(code=2)
    update = update_catalog(file, MODULES, check=check)
    if not update.changed:
        typer.echo(f"{file}: event catalog up to date")
    elif check:
        typer.echo(update.diff, err=True, nl=False)
        typer.echo(f"{file}: event catalog is stale; run `splitstone arch events`", err=True)
        raise typer.Exit(code=1)
    else:
        typer.echo(f"{file}: event catalog updated")


@arch_app.command("contracts")
def arch_contracts(
    file: Annotated[Path, typer.Option(help="The contract snapshot.")] = Path("docs/contracts.json"),
    check: Annotated[
        bool, typer.Option(help="Only compare the file with the code; exit 1 on any difference.")
    ] = False,
    force: Annotated[
        bool, typer.Option(help="Write a breaking change without a version bump (all services at once).")
    ] = False,
    show: Annotated[bool, typer.Option("--print", help="Print the snapshot instead of writing it.")] = False,
) -> None:
    """Snapshot the JSON Schema of every contract operation and event; refuse unversioned breaks."""
    from splitstone.kernel.arch.contracts import ContractsFileError, render_snapshot, update_contracts

    if show:
        typer.echo(render_snapshot(MODULES), nl=False)
        return
    if not file.parent.is_dir():
        typer.echo(f"error: {file.parent} not found (run from the repository root, or pass --file)", err=True)
        raise typer.Exit(code=2)
    try:
        update = update_contracts(file, MODULES, check=check, force=force)
    except ContractsFileError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=2) from None
    if not update.stale:
        typer.echo(f"{file}: contracts up to date")
        return
    if update.changes:
        typer.echo(update.report(), err=check or update.refused)
    if check:
        if update.unacknowledged:
            typer.echo(f"{file}: breaking changes without a version bump (see above)", err=True)
        else:
            typer.echo(f"{file}: is stale; run `splitstone arch contracts`", err=True)
        raise typer.Exit(code=1)
    if update.refused:
        typer.echo(f"{file}: not written: bump the versions above (or --force for all at once)", err=True)
        raise typer.Exit(code=1)
    forced = " with breaking changes (--force)" if update.unacknowledged else ""
    typer.echo(f"{file}: contracts {'updated' if update.existed else 'written'}{forced}")


arch_app.command("report")(arch_report)
arch_app.command("explain")(arch_explain)


@demo_app.command("seed")
def demo_seed(
    tasks: Annotated[
        int, typer.Option(min=0, max=5_000, help="How many tasks to create.")
    ] = demo.DEFAULT_TASKS,
    password: Annotated[str, typer.Option(help="The demo users' password.")] = demo.DEMO_PASSWORD,
) -> None:
    """Create the demo organization (demo@example.com, 4 members, 3 projects, tasks, comments) via the API.

    Does nothing, and says so, if it exists already. Refused in production.
    """
    settings = Settings()
    if settings.is_production:
        _fail("the demo seed makes users with a published password: not in production", code=2)
    # The progress bar tells the story; the app's info logs (every email written) would bury it.
    configure_logging(level="warning", json=settings.json_logs())
    try:
        result = demo.run(settings, tasks=tasks, password=password, console=_console())
    except demo.SeedError as error:
        _fail(str(error), code=1)
    typer.echo(demo.summary(result, settings, password))


# --- events and jobs: status and dead letters ------------------------------------------------------

ModuleOption = Annotated[str | None, typer.Option("--module", help="Only this module.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print JSON instead of a table.")]
LimitOption = Annotated[int, typer.Option(min=1, help="Show at most this many.")]
AllOption = Annotated[bool, typer.Option("--all", help="Every dead letter (of --module, if given).")]


@events_app.command("status")
def events_status(as_json: JsonOption = False) -> None:
    """Each module's outbox backlog and lag, transport errors, inbox and job counts."""
    now, states = _admin(_status_now)
    if as_json:
        _print_json({"now": now.isoformat(), "modules": [s.to_json() for s in states]})
        return
    table = Table(title="Events")
    for header in ("Module", "Unpublished", "Lag", "Transport errors"):
        table.add_column(header, justify="left" if header == "Module" else "right")
    for header in ("Inbox pending", "Retrying", "Done", "Dead", "Jobs pending", "Jobs dead"):
        table.add_column(header, justify="right")
    for s in states:
        table.add_row(
            s.module,
            str(s.outbox.unpublished),
            _duration(s.outbox.lag_seconds),
            str(s.outbox.failing),
            str(s.inbox.pending),
            str(s.inbox.retrying),
            str(s.inbox.done),
            str(s.inbox.dead),
            str(s.jobs.pending),
            str(s.jobs.dead),
        )
    console = _console()
    console.print(table)
    for s in states:
        if s.outbox.last_error:
            console.print(f"{s.module}: the transport refuses events: {_shorten(s.outbox.last_error, 200)}")
    dead = sum(s.inbox.dead for s in states)
    if dead:
        console.print(f"{dead} dead letter(s): `splitstone events dead list`")


@events_dead_app.command("list")
def events_dead_list(
    module: ModuleOption = None, as_json: JsonOption = False, limit: LimitOption = 50
) -> None:
    """Dead inbox rows: module, handler, event, attempts, last error, received and next times."""
    page = _admin(lambda admin: admin.dead_events(module=module, limit=limit))
    if as_json:
        _print_json({"total": page.total, "items": [e.to_json() for e in page.items]})
        return
    console = _console()
    if not page.items:
        console.print("no dead letters" + (f" in {module}" if module else ""))
        return
    table = Table()
    for header in ("Module", "Handler", "Event id", "Event", "Attempts", "Last error", "Received", "Next"):
        table.add_column(
            header, no_wrap=header != "Last error", justify="right" if header == "Attempts" else "left"
        )
    for e in page.items:
        table.add_row(
            e.module,
            e.handler,
            str(e.event_id),
            e.event_name,
            str(e.attempts),
            _shorten(e.last_error),
            _time(e.received_at),
            _time(e.next_attempt_at),
        )
    console.print(table)
    if page.total > len(page.items):
        console.print(f"showing {len(page.items)} of {page.total}; use --limit for more")


@events_dead_app.command("retry")
def events_dead_retry(
    event_id: Annotated[
        UUID | None, typer.Argument(metavar="EVENT_ID", help="The event's id.", show_default=False)
    ] = None,
    handler: Annotated[str | None, typer.Option(help="Only this handler (module:Event.name).")] = None,
    every: AllOption = False,
    module: ModuleOption = None,
) -> None:
    """Set dead letters back to pending (attempts 0, due now) so the worker runs them again."""
    _require_selection(event_id, every, "EVENT_ID")
    changed = _admin(lambda admin: admin.retry_events(event_id, handler=handler, module=module, every=every))
    _report_events(changed, "set back to pending", event_id, handler, module)


@events_dead_app.command("discard")
def events_dead_discard(
    event_id: Annotated[
        UUID | None, typer.Argument(metavar="EVENT_ID", help="The event's id.", show_default=False)
    ] = None,
    handler: Annotated[str | None, typer.Option(help="Only this handler (module:Event.name).")] = None,
    every: AllOption = False,
    module: ModuleOption = None,
) -> None:
    """Mark dead letters discarded: never run again, kept for audit (and so never redelivered)."""
    _require_selection(event_id, every, "EVENT_ID")
    changed = _admin(
        lambda admin: admin.discard_events(event_id, handler=handler, module=module, every=every)
    )
    _report_events(changed, "discarded", event_id, handler, module)


@jobs_app.command("status")
def jobs_status(as_json: JsonOption = False) -> None:
    """Each module's jobs: pending (and how late the oldest due one is), retrying, done, dead."""
    now, states = _admin(_status_now)
    if as_json:
        modules = [{"module": s.module, "jobs": s.jobs.to_json()} for s in states]
        _print_json({"now": now.isoformat(), "modules": modules})
        return
    table = Table(title="Jobs")
    table.add_column("Module")
    for header in ("Pending", "Lag", "Retrying", "Done", "Dead", "Discarded"):
        table.add_column(header, justify="right")
    for s in states:
        j = s.jobs
        table.add_row(
            s.module,
            str(j.pending),
            _duration(j.lag_seconds),
            str(j.retrying),
            str(j.done),
            str(j.dead),
            str(j.discarded),
        )
    console = _console()
    console.print(table)
    dead = sum(s.jobs.dead for s in states)
    if dead:
        console.print(f"{dead} dead job(s): `splitstone jobs dead list`")


@jobs_dead_app.command("list")
def jobs_dead_list(module: ModuleOption = None, as_json: JsonOption = False, limit: LimitOption = 50) -> None:
    """Dead jobs: module, id, kind, attempts, last error, created and next times."""
    page = _admin(lambda admin: admin.dead_jobs(module=module, limit=limit))
    if as_json:
        _print_json({"total": page.total, "items": [j.to_json() for j in page.items]})
        return
    console = _console()
    if not page.items:
        console.print("no dead jobs" + (f" in {module}" if module else ""))
        return
    table = Table()
    for header in ("Module", "Job id", "Kind", "Attempts", "Last error", "Created", "Run at", "Next"):
        table.add_column(
            header, no_wrap=header != "Last error", justify="right" if header == "Attempts" else "left"
        )
    for j in page.items:
        table.add_row(
            j.module,
            str(j.id),
            j.kind,
            f"{j.attempts}/{j.max_attempts}",
            _shorten(j.last_error),
            _time(j.created_at),
            _time(j.run_at),
            _time(j.next_attempt_at),
        )
    console.print(table)
    if page.total > len(page.items):
        console.print(f"showing {len(page.items)} of {page.total}; use --limit for more")


@jobs_dead_app.command("retry")
def jobs_dead_retry(
    job_id: Annotated[
        UUID | None, typer.Argument(metavar="JOB_ID", help="The job's id.", show_default=False)
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind.")] = None,
    every: AllOption = False,
    module: ModuleOption = None,
) -> None:
    """Set dead jobs back to pending (attempts 0, due now) so the worker runs them again."""
    _require_selection(job_id, every, "JOB_ID")
    changed = _admin(lambda admin: admin.retry_jobs(job_id, kind=kind, module=module, every=every))
    _report_jobs(changed, "set back to pending", job_id, kind, module)


@jobs_dead_app.command("discard")
def jobs_dead_discard(
    job_id: Annotated[
        UUID | None, typer.Argument(metavar="JOB_ID", help="The job's id.", show_default=False)
    ] = None,
    kind: Annotated[str | None, typer.Option(help="Only jobs of this kind.")] = None,
    every: AllOption = False,
    module: ModuleOption = None,
) -> None:
    """Mark dead jobs discarded: never run again, kept for audit."""
    _require_selection(job_id, every, "JOB_ID")
    changed = _admin(lambda admin: admin.discard_jobs(job_id, kind=kind, module=module, every=every))
    _report_jobs(changed, "discarded", job_id, kind, module)


def _admin(operation: Callable[[MessagingAdmin], Awaitable[T]]) -> T:
    """Run one operation against the messaging tables of a container built from the settings."""

    async def run() -> T:
        container = build_container(Settings())
        try:
            return await operation(MessagingAdmin.for_container(container))
        finally:
            await container.aclose()

    try:
        return asyncio.run(run())
    except UnknownModule as error:
        _fail(error.args[0], code=2)
    except (SQLAlchemyError, OSError) as error:
        reason = _shorten(f"{type(error).__name__}: {error}", 300)
        _fail(f"cannot read the messaging tables ({reason}); is the database up and migrated?", code=2)


async def _status_now(admin: MessagingAdmin) -> tuple[datetime, list[ModuleStatus]]:
    return admin.now(), await admin.status()


def _require_selection(key: UUID | None, every: bool, name: str) -> None:
    if key is None and not every:
        _fail(f"give an {name}, or --all for every dead letter", code=2)
    if key is not None and every:
        _fail(f"give an {name} or --all, not both", code=2)


def _report_events(
    changed: list[InboxEntry], done: str, event_id: UUID | None, handler: str | None, module: str | None
) -> None:
    for e in changed:
        typer.echo(f"{done}: {e.handler} for event {e.event_id} ({e.event_name}) in {e.module}")
    if changed:
        typer.echo(f"{len(changed)} dead letter(s) {done}")
        return
    if event_id is None:
        _fail("no dead letters" + (f" in {module}" if module else ""), code=1)
    rows = _admin(lambda admin: admin.find_event(event_id, module=module))
    if handler is not None:
        rows = [r for r in rows if r.handler == handler]
    if rows:
        states = ", ".join(f"{r.handler} in {r.module} is {r.status}" for r in rows)
        _fail(f"event {event_id} has no dead letter to change: {states}", code=1)
    scope = f"handler {handler}" if handler else (f"{module}'s inbox" if module else "any inbox")
    _fail(f"event {event_id} is not in {scope} (`splitstone events dead list` shows dead letters)", code=1)


def _report_jobs(
    changed: list[JobEntry], done: str, job_id: UUID | None, kind: str | None, module: str | None
) -> None:
    for j in changed:
        typer.echo(f"{done}: job {j.id} ({j.kind}) in {j.module}")
    if changed:
        typer.echo(f"{len(changed)} dead job(s) {done}")
        return
    if job_id is None:
        _fail(
            "no dead jobs" + (f" of kind {kind}" if kind else "") + (f" in {module}" if module else ""),
            code=1,
        )
    rows = _admin(lambda admin: admin.find_job(job_id, module=module))
    if rows:
        states = ", ".join(f"{r.kind} in {r.module} is {r.status}" for r in rows)
        _fail(f"job {job_id} is not a dead job{f' of kind {kind}' if kind else ''}: {states}", code=1)
    _fail(f"no job {job_id}" + (f" in {module}" if module else "") + " (`splitstone jobs dead list`)", code=1)


def _fail(message: str, *, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)


def _console() -> Console:
    # Piped output stays one row per line (grep-able ids) instead of wrapping at 80 columns.
    return Console(highlight=False, width=None if sys.stdout.isatty() else 250)


def _print_json(data: object) -> None:
    typer.echo(json.dumps(data, indent=2))


def _time(moment: datetime | None) -> str:
    return "-" if moment is None else moment.strftime("%Y-%m-%d %H:%M:%SZ")


def _duration(seconds: float | None) -> str:
    if seconds is None:
        return "-"
    whole = int(seconds)
    days, rest = divmod(whole, 86_400)
    hours, rest = divmod(rest, 3_600)
    minutes, secs = divmod(rest, 60)
    if days:
        return f"{days}d {hours}h"
    if hours:
        return f"{hours}h {minutes:02d}m"
    if minutes:
        return f"{minutes}m {secs:02d}s"
    return f"{seconds:.1f}s" if seconds < 10 else f"{secs}s"


def _shorten(text: str | None, width: int = 60) -> str:
    if not text:
        return ""
    line = text.strip().splitlines()[0] if text.strip() else ""
    return line if len(line) <= width else line[: width - 1] + "…"


def _warn_if_unmigrated(settings: Settings, consequence: str) -> None:
    pending = asyncio.run(_pending(settings))
    if pending:
        typer.echo(f"warning: not migrated: {', '.join(pending)}; {consequence}", err=True)


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


app.command("up")(up)
app.command("new-module")(new_module)
app.add_typer(topology_app, name="topology")

for _module in MODULES:
    if _module.cli is not None:
        app.add_typer(_module.cli(_provider(_module.name)), name=_module.name, help=_module.description)


def main() -> None:
    app()
