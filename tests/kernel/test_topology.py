"""Topology files (parsing, validation, `${VAR}`), the shipped ones, and `splitstone up` / `topology ...`."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import textwrap
import time
from pathlib import Path

import httpx
import pytest
import typer
from typer.testing import CliRunner, Result

from splitstone.bootstrap import MODULES
from splitstone.kernel.proxy.nginx import find_nginx
from splitstone.kernel.secrets import MissingSecretError
from splitstone.kernel.settings import Environment, Settings
from splitstone.kernel.topology import Topology, TopologyError
from tests.conftest import require_service
from tests.support.mailbox import free_port

ROOT = Path(__file__).parents[2]
SPLIT = ROOT / "topologies" / "split.toml"
MONOLITH = ROOT / "topologies" / "monolith.toml"
PRODUCT_MODULES = sorted(m.name for m in MODULES)
runner = CliRunner()


def write(tmp_path: Path, text: str) -> Path:
    path = tmp_path / "topology.toml"
    path.write_text(textwrap.dedent(text))
    return path


# Auth alone, and every other module of the product together (a module added later joins "two").
TWO_SERVICES = f"""
    version = 1
    public_url = "http://127.0.0.1:8000"
    events = "nats"

    [services.one]
    modules = ["auth"]
    url = "http://127.0.0.1:8101"

    [services.two]
    modules = [{", ".join(f'"{name}"' for name in PRODUCT_MODULES if name != "auth")}]
    url = "http://127.0.0.1:8102"
"""


# --- the files -----------------------------------------------------------------------------------------


def test_the_shipped_split_topology() -> None:
    topology = Topology.load(SPLIT, environ={})
    topology.check_modules(PRODUCT_MODULES)
    placement = {"auth": "identity", "projects": "core", "billing": "core", "notifications": "notify"}
    assert {module: topology.service_of(module).name for module in placement} == placement
    assert list(topology.services) == ["identity", "core", "notify"]
    assert [s.port for s in topology.services.values()] == [8101, 8102, 8103]
    assert topology.public_url == "http://127.0.0.1:8000"
    assert topology.is_split
    assert topology.event_transport == "nats"
    assert topology.service_of("billing").name == "core"
    assert topology.services["core"].database_urls["billing"] == (
        "postgresql+asyncpg://splitstone_billing@127.0.0.1:5432/splitstone"
    )
    assert all(s.worker == "separate" for s in topology.services.values())


def test_the_shipped_split_topology_reads_database_urls_from_the_environment() -> None:
    url = "postgresql+asyncpg://billing:secret@db.internal/prod"
    topology = Topology.load(SPLIT, environ={"SPLITSTONE_BILLING_DATABASE_URL": url})
    assert topology.services["core"].database_urls["billing"] == url
    assert (
        topology.services["core"]
        .database_urls["projects"]
        .startswith("postgresql+asyncpg://splitstone_projects@")
    )


def test_the_shipped_monolith_topology() -> None:
    topology = Topology.load(MONOLITH, environ={})
    topology.check_modules(PRODUCT_MODULES)
    [app] = topology.services.values()
    assert sorted(app.modules) == PRODUCT_MODULES
    assert app.url == topology.public_url
    assert app.worker == "inline"
    assert not topology.is_split
    assert topology.event_transport == "inprocess"
    assert app.database_urls == {}  # the settings decide, as without a topology
    default = Topology.monolith(PRODUCT_MODULES)
    assert (default.public_url, default.event_transport) == (topology.public_url, topology.event_transport)


@pytest.mark.parametrize(
    ("change", "message"),
    [
        (('modules = ["auth"]', 'modules = ["auth", "billing"]'), "module 'billing' is in two services"),
        (('"http://127.0.0.1:8102"', '"http://127.0.0.1:8101"'), "both listen on http://127.0.0.1:8101"),
        (('"http://127.0.0.1:8101"', '"https://127.0.0.1:8101"'), "must be http://host:port"),
        (('"http://127.0.0.1:8101"', '"http://127.0.0.1"'), "must be http://host:port"),
        (('"http://127.0.0.1:8101"', '"http://127.0.0.1:8101/auth"'), "bare http://host:port"),
        (('"http://127.0.0.1:8000"', '"https://app.example.com"'), "public_url: Value error, must be http"),
        (
            ('"http://127.0.0.1:8000"', '"http://127.0.0.1:8000/app"'),
            "public_url: Value error, must be a bare",
        ),
        (('events = "nats"', 'events = "inprocess"'), "cannot carry events between services"),
        (('events = "nats"', 'events = "kafka"'), "events"),
        (("[services.one]", "[services.One]"), "lowercase letters"),
        (('modules = ["auth"]', "modules = []"), "modules"),
        (("version = 1", "version = 2"), "version"),
        (("version = 1", 'version = 1\nflavour = "x"'), "flavour"),
        (
            ('modules = ["auth"]', 'modules = ["auth"]\ndatabase_urls = { billing = "sqlite://" }'),
            "database URLs for modules it does not run: ['billing']",
        ),
    ],
)
def test_a_topology_that_cannot_run_is_refused_with_the_reason(
    tmp_path: Path, change: tuple[str, str], message: str
) -> None:
    path = write(tmp_path, TWO_SERVICES.replace(*change))
    with pytest.raises(TopologyError) as error:
        Topology.load(path)
    assert message in str(error.value)
    assert str(path) in str(error.value)


def test_modules_are_checked_against_the_products(tmp_path: Path) -> None:
    topology = Topology.load(write(tmp_path, TWO_SERVICES.replace('"auth"', '"auth", "payroll"')))
    with pytest.raises(TopologyError, match="modules that do not exist: payroll"):
        topology.check_modules(PRODUCT_MODULES)
    topology = Topology.load(write(tmp_path, TWO_SERVICES.replace('"billing", ', "")))
    with pytest.raises(TopologyError, match="no service for modules: billing"):
        topology.check_modules(PRODUCT_MODULES)


def test_variables_are_expanded_from_the_environment(tmp_path: Path) -> None:
    path = write(
        tmp_path,
        TWO_SERVICES
        + """
    [services.two.database_urls]
    billing = "${BILLING_URL:-sqlite+aiosqlite:///default.db}"
    projects = "postgresql+asyncpg://${PG_USER}@${PG_HOST:-localhost}/db"
    """,
    )
    topology = Topology.load(path, environ={"PG_USER": "projects", "BILLING_URL": ""})
    urls = topology.services["two"].database_urls
    assert urls["billing"] == "sqlite+aiosqlite:///default.db"  # empty counts as unset
    assert urls["projects"] == "postgresql+asyncpg://projects@localhost/db"
    topology = Topology.load(path, environ={"PG_USER": "p", "PG_HOST": "db", "BILLING_URL": "x://y"})
    assert topology.services["two"].database_urls == {
        "billing": "x://y",
        "projects": "postgresql+asyncpg://p@db/db",
    }
    with pytest.raises(TopologyError, match=r"\$\{PG_USER\} is not set"):
        Topology.load(path, environ={})


def test_a_file_that_is_not_a_topology(tmp_path: Path) -> None:
    with pytest.raises(TopologyError, match="no topology file at"):
        Topology.load(tmp_path / "missing.toml")
    with pytest.raises(TopologyError, match="not valid TOML"):
        Topology.load(write(tmp_path, "services = ["))


# --- splitstone topology ... -----------------------------------------------------------------------------


def topology_cli(*args: str) -> Result:
    from splitstone.cli_topology import topology_app

    return runner.invoke(topology_app, list(args))


def test_check_accepts_the_shipped_topologies() -> None:
    for path in (SPLIT, MONOLITH):
        result = topology_cli("check", str(path))
        assert result.exit_code == 0, result.output
        assert "ok" in result.output


def test_check_fails_with_the_message(tmp_path: Path) -> None:
    result = topology_cli("check", str(write(tmp_path, TWO_SERVICES.replace('"billing", ', ""))))
    assert result.exit_code == 1
    assert "no service for modules: billing" in result.output
    clash = TWO_SERVICES.replace(
        'public_url = "http://127.0.0.1:8000"', 'public_url = "http://127.0.0.1:8102"'
    )
    result = topology_cli("check", str(write(tmp_path, clash)))
    assert result.exit_code == 1
    assert "public_url http://127.0.0.1:8102 is where the proxy listens; service 'two'" in result.output


def test_check_defaults_to_splitstone_topology(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SPLITSTONE_TOPOLOGY", str(write(tmp_path, TWO_SERVICES)))
    result = topology_cli("check")
    assert result.exit_code == 0, result.output
    assert "2 service(s)" in result.output


def test_show_tells_what_crosses_between_services() -> None:
    result = topology_cli("show", str(SPLIT))
    assert result.exit_code == 0, result.output
    lines = [line.strip() for line in result.output.splitlines()]
    assert "core (projects) -> identity (auth): AuthApi" in lines
    assert "notify (notifications) -> identity (auth): AuthApi" in lines
    assert "auth.UserRegistered: identity (auth) -> notify (notifications)" in lines
    assert "projects.TaskCreated: core (projects) -> notify (notifications)" in lines
    # projects calls billing, but they run together: not a crossing
    assert not any("BillingApi" in line for line in lines)
    monolith = topology_cli("show", str(MONOLITH))
    assert "every contract call and event stays in the process" in monolith.output


def test_nginx_prints_the_config_or_writes_it_ready_to_run(tmp_path: Path) -> None:
    printed = topology_cli("nginx", str(SPLIT))
    assert printed.exit_code == 0, printed.output
    assert "upstream splitstone_core {" in printed.output
    assert "server 127.0.0.1:8102 max_fails=0;" in printed.output
    assert "listen 127.0.0.1:8000;" in printed.output
    billing_usage = printed.output.index('location ~ "^/api/v1/orgs/[^/]+/billing/usage/?$" {')
    assert "proxy_pass http://splitstone_core;" in printed.output[billing_usage : billing_usage + 200]

    prefix = tmp_path / "proxy"
    config = prefix / "nginx.conf"
    written = topology_cli(
        "nginx", str(SPLIT), "-o", str(config), "--prefix", str(prefix), "--listen", "127.0.0.1:9"
    )
    assert written.exit_code == 0, written.output
    assert "listen 127.0.0.1:9;" in config.read_text()
    assert (prefix / "docs" / "openapi.json").is_file()
    assert (prefix / "logs").is_dir()
    nginx = find_nginx()
    require_service(nginx is not None, "nginx")
    checked = subprocess.run(  # noqa: S603 (nginx -t on the written config)
        [str(nginx), "-p", str(prefix), "-c", str(config), "-e", "stderr", "-t"],
        capture_output=True,
        text=True,
        check=False,
    )
    assert checked.returncode == 0, checked.stderr


# --- splitstone up: the plan ------------------------------------------------------------------------------


def test_up_runs_each_service_and_its_worker(tmp_path: Path) -> None:
    from splitstone.cli_topology import plan

    path = write(
        tmp_path,
        TWO_SERVICES.replace(
            'url = "http://127.0.0.1:8102"',
            'url = "http://127.0.0.1:8102"\nworker = "inline"\nenv = { SPLITSTONE_LOG_LEVEL = "debug" }',
        ),
    )
    topology = Topology.load(path)
    children = plan(topology, path, env={"SPLITSTONE_SERVICE_TOKEN": "t"}, python="py")
    assert [c.name for c in children] == ["one", "one-worker", "two"]
    one, one_worker, two = children
    common = ["--topology", str(path)]
    assert one.argv == [
        "py", "-m", "splitstone", "serve", *common, "--service", "one",
        "--host", "127.0.0.1", "--port", "8101", "--no-worker",
    ]  # fmt: skip
    assert one_worker.argv == ["py", "-m", "splitstone", "worker", *common, "--service", "one"]
    assert two.argv[-1] == "8102"  # worker inline: no --no-worker, no worker process
    assert one.env == {"SPLITSTONE_SERVICE_TOKEN": "t", "SPLITSTONE_SERVICE": "one"}
    assert two.env["SPLITSTONE_LOG_LEVEL"] == "debug"


def test_up_passes_the_topologys_settings_to_every_process(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    from splitstone.cli_topology import _shared_env, needs_proxy

    monkeypatch.delenv("SPLITSTONE_PUBLIC_BASE_URL", raising=False)
    settings = Settings(env=Environment.TEST, data_dir=tmp_path / "data")
    topology = Topology.load(SPLIT, environ={})
    env = _shared_env(topology, SPLIT, settings)
    assert env["SPLITSTONE_TOPOLOGY"] == str(SPLIT)
    assert env["SPLITSTONE_EVENT_TRANSPORT"] == "nats"
    assert env["SPLITSTONE_PUBLIC_BASE_URL"] == "http://127.0.0.1:8000"
    assert len(env["SPLITSTONE_SERVICE_TOKEN"]) >= 32
    assert (
        _shared_env(topology, SPLIT, settings)["SPLITSTONE_SERVICE_TOKEN"] == env["SPLITSTONE_SERVICE_TOKEN"]
    )
    monkeypatch.setenv("SPLITSTONE_PUBLIC_BASE_URL", "https://app.example.com")
    assert _shared_env(topology, SPLIT, settings)["SPLITSTONE_PUBLIC_BASE_URL"] == "https://app.example.com"

    assert needs_proxy(topology)
    assert not needs_proxy(Topology.load(MONOLITH))
    assert needs_proxy(Topology.monolith(PRODUCT_MODULES, "http://127.0.0.1:8001").model_copy(
        update={"public_url": "http://127.0.0.1:8000"}
    ))  # fmt: skip


def test_the_service_token_is_explicit_or_generated_once(tmp_path: Path) -> None:
    from splitstone.cli_topology import service_token

    settings = Settings(env=Environment.TEST, data_dir=tmp_path)
    generated = service_token(settings)
    assert service_token(settings) == generated
    assert (tmp_path / "secrets" / "service-token").read_text() == generated
    explicit = Settings(env=Environment.TEST, data_dir=tmp_path, service_token="given-token-value")
    assert service_token(explicit) == "given-token-value"
    with pytest.raises(MissingSecretError, match="SPLITSTONE_SERVICE_TOKEN"):
        service_token(Settings(env=Environment.PRODUCTION, data_dir=tmp_path / "prod"))


def up_cli(*args: str) -> Result:
    from splitstone.cli_topology import up

    app = typer.Typer()
    app.command()(up)
    return runner.invoke(app, list(args))


def test_up_refuses_a_proxy_that_cannot_run(tmp_path: Path) -> None:
    result = up_cli(str(MONOLITH), "--proxy", "nginx")
    assert result.exit_code == 2
    assert "listens on public_url" in result.output
    result = up_cli(str(write(tmp_path, TWO_SERVICES.replace('"billing", ', ""))))
    assert result.exit_code == 2
    assert "no service for modules: billing" in result.output


# --- splitstone up: for real ------------------------------------------------------------------------------


def test_up_runs_the_monolith_and_stops_it_cleanly(tmp_path: Path) -> None:
    """Migrates, serves until ready, then SIGINT: exit 0, no process left behind."""
    port = free_port()
    path = write(
        tmp_path,
        f"""
        version = 1
        public_url = "http://127.0.0.1:{port}"
        [services.app]
        modules = {PRODUCT_MODULES!r}
        url = "http://127.0.0.1:{port}"
        worker = "inline"
        """.replace("'", '"'),
    )
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITSTONE_")}
    env.update(SPLITSTONE_ENV="test", SPLITSTONE_DATA_DIR=str(tmp_path / "data"), NO_COLOR="1")
    launcher = "import typer; from splitstone.cli_topology import up; typer.run(up)"
    process = subprocess.Popen(  # noqa: S603 (our own command)
        [sys.executable, "-c", launcher, str(path)],
        env=env,
        cwd=tmp_path,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
        start_new_session=True,
    )
    try:
        deadline = time.monotonic() + 90
        while True:
            try:
                if httpx.get(f"http://127.0.0.1:{port}/readyz", timeout=2).status_code == 200:
                    break
            except httpx.HTTPError:
                pass
            assert process.poll() is None, process.communicate()[0]
            assert time.monotonic() < deadline, "not ready in time"
            time.sleep(0.2)
        os.killpg(process.pid, signal.SIGINT)  # what a terminal's Ctrl-C does: the whole foreground group
        output, _ = process.communicate(timeout=30)
    finally:
        if process.poll() is None:
            os.killpg(process.pid, signal.SIGKILL)
            process.wait()
    assert process.returncode == 0, output
    assert "app migrate | auth: at" in output
    assert "| app started (pid" in output
    assert output.rstrip().endswith("| stopped")
    pid = int(output.split("app started (pid ", 1)[1].split(")", 1)[0])
    assert not Path(f"/proc/{pid}").exists() or "zombie" in Path(f"/proc/{pid}/status").read_text()
    with pytest.raises(httpx.ConnectError):
        httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)


def test_the_builtin_proxy_command_serves_the_topology(tmp_path: Path) -> None:
    """`splitstone topology proxy` (what `up --proxy builtin` runs): /healthz, and 503 for a service down."""
    port = free_port()
    path = write(tmp_path, TWO_SERVICES.replace("8000", str(port)).replace("8102", str(free_port())))
    env = {k: v for k, v in os.environ.items() if not k.startswith("SPLITSTONE_")}
    env.update(SPLITSTONE_ENV="test", SPLITSTONE_DATA_DIR=str(tmp_path / "data"))
    launcher = "from splitstone.cli_topology import topology_app; topology_app()"
    process = subprocess.Popen(  # noqa: S603 (our own command)
        [sys.executable, "-c", launcher, "proxy", str(path)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/healthz", timeout=2)
                break
            except httpx.HTTPError:
                assert process.poll() is None, process.communicate()[0]
                assert time.monotonic() < deadline, "the proxy did not answer in time"
                time.sleep(0.1)
        assert health.json() == {"status": "ok"}
        down = httpx.get(f"http://127.0.0.1:{port}/api/v1/billing/plans", timeout=5)
        assert down.status_code == 503
        assert down.json()["code"] == "service-unavailable"
        assert "two" in down.json()["detail"]
        process.send_signal(signal.SIGTERM)
        output, _ = process.communicate(timeout=15)
    finally:
        if process.poll() is None:
            process.kill()
            process.wait()
    # uvicorn shuts down cleanly, then re-raises the signal it caught, so the exit says SIGTERM
    assert process.returncode in (0, -signal.SIGTERM), output
    assert "Application shutdown complete" in output
