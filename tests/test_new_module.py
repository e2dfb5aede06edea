"""`splitstone new-module`: a generated module works at once, and bad requests are refused untouched.

One copy of the project (src, tests, docs, topologies, pyproject.toml, Makefile, README.md) gets
`invoicing_exports --depends-on billing` from the generator, run as a new process with the copy's
`src` first on PYTHONPATH (so the copy's package, with its new module, is the one imported). Then, in
the copy: the module's tests and its e2e journey, the architecture rules, the generated docs, both
topologies, ruff and mypy. Refusals run in-process against this checkout and must write nothing.
"""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import time
import tomllib
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest
from typer.testing import CliRunner

from splitstone.cli import app
from splitstone.scaffold import edits
from splitstone.scaffold.generate import plan_module
from splitstone.scaffold.names import MAX_NAME_LENGTH, ScaffoldError, check_name
from splitstone.scaffold.project import Project

ROOT = Path(__file__).parents[1]
COPIED = ("src", "tests", "docs", "topologies", "pyproject.toml", "Makefile", "README.md")
# In a checkout that already has it (a copy where it was generated), the test generates it once more
# under another name.
NAME = next(
    n
    for n in ("invoicing_exports", "invoicing_exports_again")
    if not (ROOT / "src/splitstone/modules" / n).exists()
)
runner = CliRunner()


@dataclass(frozen=True)
class Generated:
    root: Path
    output: str
    seconds: float

    def run(self, *command: str, timeout: float = 600) -> subprocess.CompletedProcess[str]:
        """`command` in the copy, importing the copy's package."""
        environ = {**os.environ, "PYTHONPATH": str(self.root / "src")}
        return subprocess.run(  # noqa: S603 (this interpreter and its tools, fixed arguments)
            [sys.executable, "-m", *command],
            cwd=self.root,
            env=environ,
            capture_output=True,
            text=True,
            timeout=timeout,
            check=False,
        )


def copy_project(target: Path) -> Path:
    ignore = shutil.ignore_patterns(
        "__pycache__", ".mypy_cache", ".pytest_cache", ".ruff_cache", "*.egg-info"
    )
    for name in COPIED:
        source = ROOT / name
        if source.is_dir():
            shutil.copytree(source, target / name, ignore=ignore)
        elif source.is_file():
            shutil.copy2(source, target / name)
    return target


@pytest.fixture(scope="module")
def generated(tmp_path_factory: pytest.TempPathFactory) -> Generated:
    root = copy_project(tmp_path_factory.mktemp("new-module"))
    started = time.monotonic()
    copy = Generated(root, "", 0.0)
    done = copy.run("splitstone", "new-module", NAME, "--depends-on", "billing")
    seconds = time.monotonic() - started
    assert done.returncode == 0, done.stdout + done.stderr
    return Generated(root, done.stdout, seconds)


def ok(done: subprocess.CompletedProcess[str]) -> str:
    assert done.returncode == 0, f"{done.args}:\n{done.stdout}{done.stderr}"
    return done.stdout


# --- the generated module works at once ------------------------------------------------------------


def test_the_generator_says_what_it_did(generated: Generated) -> None:
    # How long it took is printed, not asserted (speed is for benchmarks, not timed tests): about 10 s.
    print(f"\nnew-module took {generated.seconds:.1f} s")
    for path in (
        f"src/splitstone/modules/{NAME}/api.py",
        f"src/splitstone/modules/{NAME}/migrations/versions/0001_initial.py",
        f"tests/modules/{NAME}/test_routes.py",
        f"tests/e2e/test_{NAME}_journey.py",
        f"docs/{NAME}.md",
    ):
        assert f"  {path}\n" in generated.output
        assert (generated.root / path).is_file()
    for changed in (
        "src/splitstone/bootstrap.py",
        "topologies/split.toml",
        "tests/security/test_role_matrix.py",
    ):
        assert f"  {changed}\n" in generated.output
    assert "AuthApi (always" in generated.output
    assert f"pytest tests/modules/{NAME}" in generated.output
    assert "make test" in generated.output


def test_it_is_registered_in_the_composition_root_and_both_topologies(generated: Generated) -> None:
    bootstrap = (generated.root / "src/splitstone/bootstrap.py").read_text()
    assert f"from splitstone.modules.{NAME}.module import module as {NAME}\n" in bootstrap
    monolith = tomllib.loads((generated.root / "topologies/monolith.toml").read_text())
    assert NAME in monolith["services"]["app"]["modules"]
    split = tomllib.loads((generated.root / "topologies/split.toml").read_text())["services"]
    assert split["core"]["modules"][-1] == NAME  # where billing, its dependency, runs
    assert split["core"]["modules"][:2] == ["projects", "billing"]
    assert split["core"]["database_urls"][NAME] == (
        f"${{SPLITSTONE_{NAME.upper()}_DATABASE_URL:-postgresql+asyncpg://splitstone_{NAME}@127.0.0.1:5432/splitstone}}"
    )
    for service in ("monolith", "split"):
        assert "ok:" in ok(generated.run("splitstone", "topology", "check", f"topologies/{service}.toml"))


def test_the_boundaries_hold_and_the_generated_docs_are_current(generated: Generated) -> None:
    assert "All 6 rules kept" in ok(generated.run("splitstone", "arch", "check"))
    for command in ("diagram", "events", "contracts"):
        ok(generated.run("splitstone", "arch", command, "--check"))
    ok(generated.run("splitstone", "arch", "report", "--markdown", "--check"))
    assert f"[`{NAME}`]" in (generated.root / "docs/modules.md").read_text()
    architecture = (generated.root / "docs/architecture.md").read_text()
    assert f"{NAME} -->|BillingApi| billing" in architecture
    assert f"{NAME}.ItemCreated" in (generated.root / "docs/events.md").read_text()


def test_the_generated_code_is_linted_formatted_and_typed(generated: Generated) -> None:
    files = [
        f"src/splitstone/modules/{NAME}",
        f"tests/modules/{NAME}",
        f"tests/e2e/test_{NAME}_journey.py",
        "src/splitstone/bootstrap.py",
        "tests/security",
    ]
    ok(generated.run("ruff", "check", *files))
    ok(generated.run("ruff", "format", "--check", *files))
    ok(generated.run("mypy", "-p", f"splitstone.modules.{NAME}"))


def test_the_generated_tests_pass(generated: Generated) -> None:
    """The module's tests on both backends, and its journey over HTTP on the monoliths (the split
    deployment's journey runs with the whole suite: it starts three services and nginx)."""
    output = ok(
        generated.run(
            "pytest",
            f"tests/modules/{NAME}",
            f"tests/e2e/test_{NAME}_journey.py",
            "-k",
            "not split",
            "-p",
            "no:cacheprovider",
            "-q",
        )
    )
    assert " passed" in output
    assert "skipped" not in output


# --- refusals write nothing -------------------------------------------------------------------------


EDITED = (
    "src/splitstone/bootstrap.py",
    "topologies/monolith.toml",
    "topologies/split.toml",
    "tests/security/test_role_matrix.py",
    "tests/security/tenancy_support.py",
    "README.md",
)
HOLDERS = ("src/splitstone/modules", "tests/modules", "tests/e2e", "docs")


def _tree(root: Path) -> dict[str, object]:
    """What the generator could change: the files it edits, and the entries of the folders it writes in."""
    found: dict[str, object] = {name: (root / name).stat().st_mtime_ns for name in EDITED}
    found |= {folder: sorted(p.name for p in (root / folder).iterdir()) for folder in HOLDERS}
    return found


@pytest.fixture
def in_checkout(monkeypatch: pytest.MonkeyPatch) -> Iterator[Path]:
    monkeypatch.chdir(ROOT)
    before = _tree(ROOT)
    yield ROOT
    assert _tree(ROOT) == before, "a refused or dry run wrote something"


@pytest.mark.parametrize(
    ("arguments", "message"),
    [
        (["Invoicing"], "lowercase letters and digits"),
        (["invoicing-exports"], "try 'invoicing_exports'"),
        (["_invoicing"], "may not start with an underscore"),
        (["invoicing__exports"], "joined by single underscores"),
        (["9lives"], "starting with a letter"),
        (["class"], "is a Python keyword"),
        (["match"], "is a Python keyword"),
        (["kernel"], "is reserved"),
        (["modules"], "is reserved"),
        (["api"], "is reserved"),
        (["test"], "is reserved"),
        (["public"], "PostgreSQL's default schema"),
        (["pg_exports"], "PostgreSQL reserves"),
        (["order"], "SQL reserved word"),
        (["list"], "Python builtin"),
        (["x" * (MAX_NAME_LENGTH + 1)], f"at most {MAX_NAME_LENGTH}"),
        (["billing"], "already exists"),
        (["tasks"], "already serves"),
        (["members"], "which module 'auth' already serves"),
        (["exports", "--depends-on", "billing,payroll"], "unknown module(s) in --depends-on: payroll"),
        (["exports", "--depends-on", "exports"], "cannot depend on itself"),
        (["exports", "--description", 'say "hi"'], "may not hold quotes"),
    ],
)
def test_a_bad_request_is_refused_with_the_reason_and_exit_2(
    in_checkout: Path, arguments: list[str], message: str
) -> None:
    result = runner.invoke(app, ["new-module", *arguments])
    assert result.exit_code == 2, result.output
    assert message in result.output
    assert result.output.startswith("error: ")


def test_an_unknown_dependency_is_refused_with_the_known_modules(in_checkout: Path) -> None:
    result = runner.invoke(app, ["new-module", "exports", "--depends-on", "payroll"])
    assert result.exit_code == 2
    known = ", ".join(sorted(Project(ROOT).registered_modules()))
    assert f"the modules are: {known}" in result.output


def test_a_dry_run_lists_what_it_would_do_and_writes_nothing(in_checkout: Path) -> None:
    result = runner.invoke(app, ["new-module", NAME, "--depends-on", "auth,billing", "--dry-run"])
    assert result.exit_code == 0, result.output
    assert f"would write:\n  docs/{NAME}.md\n" in result.output
    assert f"  src/splitstone/modules/{NAME}/module.py\n" in result.output
    changes = result.output.split("would change:\n", 1)[1]
    assert "  src/splitstone/bootstrap.py\n" in changes
    assert "  topologies/split.toml\n" in changes


def test_outside_a_checkout_it_says_where_to_run_it(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["new-module", NAME])
    assert result.exit_code == 2
    assert "not inside a splitstone checkout" in result.output
    assert list(tmp_path.iterdir()) == []


def test_a_missing_marker_is_named_and_nothing_is_written(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    """A small copy: the files the generator reads, with one marker taken out."""
    for relative in (
        "pyproject.toml",
        "src/splitstone/bootstrap.py",
        "topologies/monolith.toml",
        "topologies/split.toml",
        "tests/security/test_role_matrix.py",
        "tests/security/tenancy_support.py",
        "src/splitstone/modules/auth/migrations/script.py.mako",
        *(str(p.relative_to(ROOT)) for p in (ROOT / "src/splitstone/modules").glob("*/*.py")),
    ):
        (tmp_path / relative).parent.mkdir(parents=True, exist_ok=True)
        shutil.copy2(ROOT / relative, tmp_path / relative)
    support = tmp_path / "tests/security/tenancy_support.py"
    support.write_text(support.read_text().replace(f"# {edits.marker('BODIES')}\n", ""))
    before = sorted(tmp_path.rglob("*"))
    monkeypatch.chdir(tmp_path)
    result = runner.invoke(app, ["new-module", NAME])
    assert result.exit_code == 2
    assert f"tests/security/tenancy_support.py has no '{edits.marker('BODIES')}' comment" in result.output
    assert sorted(tmp_path.rglob("*")) == before


# --- the edits, on small inputs ----------------------------------------------------------------------


def test_names_derived_from_the_module_name() -> None:
    names = check_name("invoicing_exports")
    assert (names.contract, names.service, names.dashed, names.item_param) == (
        "InvoicingExportsApi",
        "InvoicingExportsService",
        "invoicing-exports",
        "invoicing_exports_item_id",
    )
    with pytest.raises(ScaffoldError):
        check_name("Invoicing")


def test_a_topology_gains_the_module_in_a_one_line_or_multi_line_list() -> None:
    one_line = '[services.core]\nmodules = ["projects"]  # the core\nurl = "http://127.0.0.1:1"\n'
    changed = edits.add_to_service(one_line, "core", "x", database_url="sqlite://", where="t.toml")
    parsed = tomllib.loads(changed)["services"]["core"]
    assert (parsed["modules"], parsed["database_urls"]) == (["projects", "x"], {"x": "sqlite://"})
    assert "# the core" in changed
    multi = '[services.app]\nmodules = [\n  "auth",\n]\nurl = "http://127.0.0.1:1"\n'
    changed = edits.add_to_service(multi, "app", "x", database_url=None, where="t.toml")
    assert tomllib.loads(changed)["services"]["app"]["modules"] == ["auth", "x"]
    with pytest.raises(ScaffoldError, match=r"t\.toml has no \[services\.nope\] section"):
        edits.add_to_service(multi, "nope", "x", database_url=None, where="t.toml")


def test_the_longest_name_still_gives_lines_ruff_accepts(tmp_path: Path) -> None:
    """Names go into docstrings and strings, which ruff cannot wrap: the longest must fit too."""
    name = "quarterly_revenue_csvs_exports"
    assert len(name) == MAX_NAME_LENGTH
    plan = plan_module(Project(ROOT), name, ["billing", "notifications", "projects"])
    for path, text in plan.writes.items():
        if path.suffix == ".py":
            target = tmp_path / path.relative_to(ROOT)
            target.parent.mkdir(parents=True, exist_ok=True)
            target.write_text(text)
    ruff = [sys.executable, "-m", "ruff"]
    settings = ["--no-cache", "--line-length", "110", "--isolated"]
    formatted = subprocess.run([*ruff, "format", *settings, str(tmp_path)], capture_output=True, text=True)  # noqa: S603
    assert formatted.returncode == 0, formatted.stderr
    checked = subprocess.run(  # noqa: S603
        [*ruff, "check", *settings, "--select", "E501", str(tmp_path)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout
