"""`splitstone up` and `splitstone topology ...`: run a topology on this machine, show it, check it, and
generate the reverse proxy in front of it.

`up` is a local runner (development, demos, the split end-to-end tests): each service's API and worker
and the proxy are child processes of one supervisor (see kernel/supervisor.py). In production, run the
same commands (`splitstone serve/worker --topology F --service S`, nginx with `splitstone topology nginx`)
under your process manager or orchestrator instead.
"""

from __future__ import annotations

import asyncio
import os
import secrets
import sys
from enum import StrEnum
from pathlib import Path
from typing import Annotated, NoReturn
from urllib.parse import urlsplit

import typer
from rich.console import Console
from rich.table import Table

from splitstone.bootstrap import MODULES
from splitstone.kernel.proxy.nginx import (
    find_nginx,
    nginx_command,
    nginx_config,
    prepare_prefix,
    worker_user,
    write_docs,
)
from splitstone.kernel.proxy.routes import RouteTable, collect_routes_of
from splitstone.kernel.secrets import SecretStore
from splitstone.kernel.settings import Settings
from splitstone.kernel.supervisor import Child, Supervisor
from splitstone.kernel.topology import Topology, TopologyError, crossings

DEFAULT_TOPOLOGY = Path("topologies/monolith.toml")
SERVICE_TOKEN_SECRET = "service-token"  # noqa: S105 (the name of the file it is kept in)

topology_app = typer.Typer(
    help="Topologies: which service runs which modules, and the reverse proxy in front of them.",
    no_args_is_help=True,
)

TopologyArgument = Annotated[
    Path | None,
    typer.Argument(
        help="The topology file (default: SPLITSTONE_TOPOLOGY, else topologies/monolith.toml).",
        show_default=False,
        dir_okay=False,
    ),
]


class ProxyChoice(StrEnum):
    AUTO = "auto"
    NGINX = "nginx"
    BUILTIN = "builtin"
    NONE = "none"


# --- splitstone up ----------------------------------------------------------------------------------


def up(
    topology: TopologyArgument = None,
    proxy: Annotated[
        ProxyChoice,
        typer.Option(
            help="The reverse proxy on public_url: nginx, the built-in one, none, or auto (nginx when "
            "installed, else built-in; none when the only service listens on public_url itself).",
            case_sensitive=False,
        ),
    ] = ProxyChoice.AUTO,
    migrate: Annotated[
        bool, typer.Option("--migrate/--no-migrate", help="Migrate each service's modules first.")
    ] = True,
    stop_timeout: Annotated[
        float, typer.Option(min=0.1, help="Seconds a process may take to stop before it is killed.")
    ] = 10.0,
) -> None:
    """Run every service of a topology on this machine, with its worker and a reverse proxy.

    Each process's output is prefixed with its name; a process that crashes is restarted (1 s, 2 s, ...
    30 s apart); Ctrl-C stops them all. Gives up (exit 1) on a process that keeps failing at start.
    """
    path, loaded = load(topology)
    settings = Settings()
    choice = _proxy_choice(loaded, proxy)
    env = _shared_env(loaded, path, settings)
    children = plan(loaded, path, env=env, python=sys.executable)
    proxy_child: Child | None = None
    check: Child | None = None
    if choice is ProxyChoice.NGINX:
        prefix = (settings.data_dir / "proxy").absolute()
        config = _write_nginx(loaded, prefix, settings)
        check = Child("proxy check", nginx_command(config, prefix, test=True))
        proxy_child = Child("proxy", nginx_command(config, prefix))
    elif choice is ProxyChoice.BUILTIN:
        proxy_child = Child(
            "proxy",
            [sys.executable, "-m", "splitstone", "topology", "proxy", str(path)],
            env=env,
        )
    if proxy_child is not None:
        children.append(proxy_child)
    code = asyncio.run(
        _up(loaded, children, env, path, migrate=migrate, check=check, stop_timeout=stop_timeout)
    )
    raise typer.Exit(code=code)


def plan(topology: Topology, path: Path, *, env: dict[str, str], python: str) -> list[Child]:
    """The processes of every service: its API (`serve`) and, when its worker is separate, `worker`."""
    children: list[Child] = []
    for name, service in topology.services.items():
        common = ["--topology", str(path), "--service", name]
        own = {**env, "SPLITSTONE_SERVICE": name, **service.env}
        serve = [
            python,
            "-m",
            "splitstone",
            "serve",
            *common,
            "--host",
            service.host,
            "--port",
            str(service.port),
        ]
        if service.worker == "separate":
            serve.append("--no-worker")
        children.append(Child(name, serve, env=own))
        if service.worker == "separate":
            children.append(Child(f"{name}-worker", [python, "-m", "splitstone", "worker", *common], env=own))
    return children


def migrations(topology: Topology, path: Path, *, env: dict[str, str], python: str) -> list[Child]:
    """`db upgrade` of each service's modules, as that service (its database credentials)."""
    return [
        Child(
            f"{name} migrate",
            [python, "-m", "splitstone", "db", "upgrade", "--topology", str(path), "--service", name],
            env={**env, "SPLITSTONE_SERVICE": name, **service.env},
        )
        for name, service in topology.services.items()
    ]


async def _up(
    topology: Topology,
    children: list[Child],
    env: dict[str, str],
    path: Path,
    *,
    migrate: bool,
    check: Child | None,
    stop_timeout: float,
) -> int:
    supervisor = Supervisor(children, stop_timeout=stop_timeout)
    for step in [*(migrations(topology, path, env=env, python=sys.executable) if migrate else []), check]:
        if step is None:
            continue
        code = await supervisor.run_once(step)
        if code != 0:
            supervisor.say(f"`{' '.join(step.argv[1:])}` failed (exit {code}); not starting")
            return 1
    return await supervisor.run(on_started=lambda: _summary(topology, supervisor))


def _summary(topology: Topology, supervisor: Supervisor) -> None:
    table = Table(title=f"splitstone up: {topology.source}", title_justify="left")
    for header in ("Service", "Modules", "URL", "Processes"):
        table.add_column(header)
    for name, service in topology.services.items():
        pids = [
            f"{label} {state.pid}"
            for label, key in (("api", name), ("worker", f"{name}-worker"))
            if (state := supervisor.states.get(key)) is not None and state.pid is not None
        ]
        table.add_row(name, ", ".join(service.modules), service.url, ", ".join(pids))
    proxy = supervisor.states.get("proxy")
    if proxy is not None:
        table.add_row("proxy", "", topology.public_url, f"pid {proxy.pid}")
    Console(highlight=False, width=None if sys.stdout.isatty() else 200).print(table)
    supervisor.say(f"clients: {topology.public_url} (Ctrl-C stops everything)")


def _proxy_choice(topology: Topology, asked: ProxyChoice) -> ProxyChoice:
    needed = needs_proxy(topology)
    if asked is ProxyChoice.AUTO:
        if not needed:
            return ProxyChoice.NONE
        return ProxyChoice.NGINX if find_nginx() else ProxyChoice.BUILTIN
    if asked is ProxyChoice.NONE:
        if needed:
            typer.echo(
                f"warning: no proxy on {topology.public_url}: clients must call each service at its url",
                err=True,
            )
        return asked
    if not needed:
        _fail(f"the only service listens on public_url ({topology.public_url}) itself: use --proxy none")
    if asked is ProxyChoice.NGINX and find_nginx() is None:
        _fail("nginx is not installed (or not on PATH); use --proxy builtin")
    return asked


def needs_proxy(topology: Topology) -> bool:
    """False only for one service listening on public_url itself (the monolith)."""
    if topology.is_split:
        return True
    (service,) = topology.services.values()
    return _address(service.url) != _address(topology.public_url)


def _shared_env(topology: Topology, path: Path, settings: Settings) -> dict[str, str]:
    env = {
        "SPLITSTONE_TOPOLOGY": str(path),
        "SPLITSTONE_EVENT_TRANSPORT": topology.event_transport,
        "SPLITSTONE_SERVICE_TOKEN": service_token(settings),
        # Links in emails and redirects name the public URL, unless the environment says otherwise
        # (e.g. https://app.example.com in front of the proxy).
        "SPLITSTONE_PUBLIC_BASE_URL": os.environ.get("SPLITSTONE_PUBLIC_BASE_URL") or topology.public_url,
    }
    return env


def service_token(settings: Settings) -> str:
    """SPLITSTONE_SERVICE_TOKEN, or (outside production) one generated once and kept under data_dir."""
    explicit = settings.service_token.get_secret_value() if settings.service_token else None
    store = SecretStore(settings.data_dir / "secrets", production=settings.is_production)
    return store.get(
        SERVICE_TOKEN_SECRET,
        explicit=explicit,
        env_var="SPLITSTONE_SERVICE_TOKEN",
        generate=lambda: secrets.token_urlsafe(32),
    )


# --- splitstone topology ... ------------------------------------------------------------------------


@topology_app.command("check")
def check(topology: TopologyArgument = None) -> None:
    """Check a topology: every module in one service, addresses, routes a proxy can tell apart."""
    path, loaded = load(topology, code=1)
    try:
        table = asyncio.run(collect_routes_of(MODULES))
        table.for_topology(loaded)
    except TopologyError as error:
        _fail(str(error), code=1)
    typer.echo(
        f"{path}: ok: {len(loaded.services)} service(s), {len(loaded.modules())} modules, "
        f"events {loaded.event_transport}, clients at {loaded.public_url}"
    )


@topology_app.command("show")
def show(topology: TopologyArgument = None) -> None:
    """Services, their modules and URLs, and what crosses between them: contract calls and events."""
    path, loaded = load(topology)
    console = Console(highlight=False, width=None if sys.stdout.isatty() else 200)
    table = Table(title=f"{path}: clients at {loaded.public_url}, events {loaded.event_transport}")
    for header in ("Service", "Modules", "URL", "Worker", "Calls (contracts of other services)"):
        table.add_column(header)
    crossing = crossings(loaded, MODULES)
    for name, service in loaded.services.items():
        calls = sorted(
            {f"{c.contract} ({c.provider_service})" for c in crossing.calls if c.consumer_service == name}
        )
        table.add_row(name, ", ".join(service.modules), service.url, service.worker, ", ".join(calls) or "-")
    console.print(table)
    if not loaded.is_split:
        console.print("One service: every contract call and event stays in the process.")
        return
    console.print("Contract calls between services (HTTP, /internal/<module>/<operation>):")
    for call in crossing.calls:
        console.print(
            f"  {call.consumer_service} ({call.consumer}) -> {call.provider_service} ({call.provider}): "
            f"{call.contract}"
        )
    console.print(f"Events between services ({loaded.event_transport}):")
    for event in crossing.events or []:
        console.print(
            f"  {event.name}: {event.publisher_service} ({event.publisher}) -> "
            f"{event.subscriber_service} ({event.subscriber})"
        )
    if not crossing.events:
        console.print("  none")


@topology_app.command("nginx")
def nginx(
    topology: TopologyArgument = None,
    output: Annotated[
        Path | None,
        typer.Option("--output", "-o", help="Write the config here (default: print it).", dir_okay=False),
    ] = None,
    prefix: Annotated[
        Path | None,
        typer.Option(
            help="nginx's prefix (-p): pid, logs and temp files. Default: the output's folder, or "
            "SPLITSTONE_DATA_DIR/proxy.",
            file_okay=False,
        ),
    ] = None,
    listen: Annotated[
        str | None, typer.Option(help="http://host:port to listen on (default: the topology's public_url).")
    ] = None,
) -> None:
    """Generate the nginx config for a topology (run: nginx -p PREFIX -c FILE -g 'daemon off;').

    With -o, also writes what the config needs next to it: the API docs (openapi.json, docs.html) and
    the prefix's logs/ and temp/ folders.
    """
    _, loaded = load(topology)
    settings = Settings()
    if listen is not None:
        loaded = loaded.model_copy(update={"public_url": _url(listen)})
    if output is None:
        table = _routes()
        where = (prefix or settings.data_dir / "proxy").absolute()
        text = _config(loaded, table, where, settings, docs_dir=None)
        typer.echo(text, nl=False)
        return
    where = (prefix or output.parent).absolute()
    path = _write_nginx(loaded, where, settings, config=output)
    run = " ".join(nginx_command(path, where, nginx="nginx"))
    typer.echo(f"{path}: nginx config, listening on {loaded.public_url}; run: {run}")


@topology_app.command("proxy")
def proxy_command(
    topology: TopologyArgument = None,
    listen: Annotated[
        str | None, typer.Option(help="http://host:port to listen on (default: the topology's public_url).")
    ] = None,
) -> None:
    """Serve the built-in reverse proxy (for machines without nginx) until SIGINT or SIGTERM."""
    from splitstone.kernel.logging import configure_logging
    from splitstone.kernel.proxy.builtin import serve

    _, loaded = load(topology)
    settings = Settings()
    configure_logging(level=settings.log_level, json=settings.json_logs())
    url = urlsplit(_url(listen) if listen else loaded.public_url)
    assert url.hostname is not None  # checked by the topology and _url
    assert url.port is not None
    serve(
        loaded,
        _routes(),
        host=url.hostname,
        port=url.port,
        max_body_bytes=settings.max_request_body_bytes,
        connect_timeout=settings.remote_connect_timeout_seconds,
    )


# --- helpers ----------------------------------------------------------------------------------------


def load(path: Path | None, *, code: int = 2) -> tuple[Path, Topology]:
    """The topology file (default: SPLITSTONE_TOPOLOGY, else topologies/monolith.toml), checked against
    the product's modules; exits with `code` and the reason if it cannot be run."""
    chosen = path or Settings().topology or DEFAULT_TOPOLOGY
    try:
        loaded = Topology.load(chosen)
        loaded.check_modules(m.name for m in MODULES)
        if loaded.is_split:
            taken = {_address(s.url): s.name for s in loaded.services.values()}
            if _address(loaded.public_url) in taken:
                raise TopologyError(
                    f"{chosen}: public_url {loaded.public_url} is where the proxy listens; service "
                    f"'{taken[_address(loaded.public_url)]}' cannot listen there too"
                )
    except TopologyError as error:
        _fail(str(error), code=code)
    return chosen.absolute(), loaded


def _routes() -> RouteTable:
    try:
        return asyncio.run(collect_routes_of(MODULES))
    except TopologyError as error:
        _fail(str(error))


def _config(
    topology: Topology,
    table: RouteTable,
    prefix: Path,
    settings: Settings,
    *,
    docs_dir: Path | None,
) -> str:
    return nginx_config(
        topology,
        table,
        prefix=prefix,
        docs_dir=docs_dir,
        max_body_bytes=settings.max_request_body_bytes,
        user=worker_user(),
        connect_timeout=settings.remote_connect_timeout_seconds,
    )


def _write_nginx(
    topology: Topology,
    prefix: Path,
    settings: Settings,
    *,
    config: Path | None = None,
) -> Path:
    """nginx.conf (default: PREFIX/nginx.conf), the docs, and PREFIX's folders, ready to run."""
    table = _routes()
    prepare_prefix(prefix)
    docs = prefix / "docs"
    write_docs(docs, table)
    target = config or prefix / "nginx.conf"
    target.parent.mkdir(parents=True, exist_ok=True)
    target.write_text(_config(topology, table, prefix, settings, docs_dir=docs))
    return target.absolute()


def _url(listen: str) -> str:
    """`--listen`: http://host:port (or host:port)."""
    url = listen if "://" in listen else f"http://{listen}"
    parts = urlsplit(url)
    if parts.scheme != "http" or parts.hostname is None or parts.port is None:
        _fail(f"--listen must be http://host:port, not {listen!r}")
    return f"http://{parts.netloc}"


def _address(url: str) -> tuple[str, int | None]:
    parts = urlsplit(url)
    return (parts.hostname or "", parts.port)


def _fail(message: str, *, code: int = 2) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)
