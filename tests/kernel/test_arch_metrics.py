"""`splitstone arch report`: the static reading of the real tree agrees with the live declarations and
with grimp's import graph; the renderers are deterministic; the committed docs/modules.md is current."""

from __future__ import annotations

import inspect
import json
import re
import textwrap
from collections import defaultdict
from pathlib import Path

import grimp
import pytest
from typer.testing import CliRunner

from splitstone.bootstrap import MODULES
from splitstone.cli import app
from splitstone.kernel.arch.metrics import measure
from splitstone.kernel.arch.metrics_model import ProjectMetrics
from splitstone.kernel.arch.report_render import MARKDOWN_COMMAND, render_markdown, update_markdown

ROOT = Path(__file__).parents[2]
PACKAGE = ROOT / "src" / "splitstone"
TESTS = ROOT / "tests"
MODULES_DOC = ROOT / "docs" / "modules.md"
LIVE = {module.name: module for module in MODULES}


@pytest.fixture(scope="module")
def real() -> ProjectMetrics:
    return measure(PACKAGE, tests_dir=TESTS)


def publisher_of(event: type) -> str:
    return next(m.name for m in MODULES if event in m.publishes)


def provider_of(contract: type) -> str:
    return next(m.name for m in MODULES if m.contract is contract)


# -- against the live declarations -------------------------------------------------------------------------


def test_the_modules_are_the_declared_ones(real: ProjectMetrics) -> None:
    assert real.package == "splitstone"
    assert real.names == sorted(LIVE)


@pytest.mark.parametrize("name", sorted(LIVE))
def test_depends_on_is_the_declared_contracts_and_event_publishers(real: ProjectMetrics, name: str) -> None:
    live = LIVE[name]
    declared = {provider_of(c) for c in live.depends_on} | {publisher_of(e) for e in live.subscriptions}
    module = real.module(name)
    assert set(module.depends_on) == declared - {name}
    assert module.ce == len(module.depends_on)


def test_used_by_is_the_reverse_of_depends_on(real: ProjectMetrics) -> None:
    for module in real.modules:
        assert list(module.used_by) == sorted(m.name for m in real.modules if module.name in m.depends_on)
        total = module.ca + module.ce
        assert module.instability == (round(module.ce / total, 2) if total else 0.0)


@pytest.mark.parametrize("name", sorted(LIVE))
def test_the_contract_and_its_methods_are_the_protocols(real: ProjectMetrics, name: str) -> None:
    live, module = LIVE[name], real.module(name)
    assert module.contract == live.contract.__name__
    public = sorted(
        attr
        for attr, value in vars(live.contract).items()
        if inspect.isfunction(value) and not attr.startswith("_")
    )
    assert [m.name for m in module.methods] == public
    assert module.description == live.description
    for method in module.methods:
        assert method.summary == inspect.cleandoc(getattr(live.contract, method.name).__doc__).splitlines()[0]
        assert set(method.used_by) <= set(module.used_by)


@pytest.mark.parametrize("name", sorted(LIVE))
def test_events_published_and_consumed_are_the_declared_ones(real: ProjectMetrics, name: str) -> None:
    live, module = LIVE[name], real.module(name)
    assert [(e.name, e.class_name) for e in module.events_published] == sorted(
        (e.name, e.__name__) for e in live.publishes
    )
    assert [(e.name, e.publisher) for e in module.events_consumed] == sorted(
        (e.name, publisher_of(e)) for e in live.subscriptions
    )
    for event in module.events_published:
        assert list(event.consumed_by) == sorted(
            m.name for m in MODULES if any(e.name == event.name for e in m.subscriptions)
        )


@pytest.mark.parametrize("name", sorted(LIVE))
def test_tables_settings_and_jobs_are_the_declared_ones(real: ProjectMetrics, name: str) -> None:
    live, module = LIVE[name], real.module(name)
    tables = live.metadata.tables.values() if live.metadata is not None else []
    assert list(module.tables) == sorted(f"{t.schema}.{t.name}" for t in tables)
    assert set(module.jobs) == set(live.jobs) | set(live.external_jobs)
    if live.settings is None:
        assert module.settings == ()
        return
    prefix = live.settings.model_config.get("env_prefix", "")
    assert [(s.name, s.env) for s in module.settings] == sorted(
        (field, (prefix + field).upper()) for field in live.settings.model_fields
    )
    for setting in module.settings:
        field = live.settings.model_fields[setting.name]
        if (
            setting.default is not None
            and field.default_factory is None
            and isinstance(field.default, int | str)
        ):
            assert eval(setting.default) == field.default  # noqa: S307 (our own settings' source text)


def test_tests_count_the_test_functions_pytest_would_collect(real: ProjectMetrics) -> None:
    for module in real.modules:
        pattern = re.compile(r"^(?:    )?(?:async )?def test_", re.MULTILINE)
        counted = sum(
            len(pattern.findall(path.read_text()))
            for path in (TESTS / "modules" / module.name).rglob("test_*.py")
        )
        assert module.tests == counted > 0


def test_lines_and_files_count_the_module_sources(real: ProjectMetrics) -> None:
    for module in real.modules:
        files = list((PACKAGE / "modules" / module.name).rglob("*.py"))
        assert module.files == len(files)
        lines = [line.strip() for path in files for line in path.read_text().splitlines()]
        assert module.loc == sum(1 for line in lines if line and not line.startswith("#"))


# -- against grimp ---------------------------------------------------------------------------------------


def test_cross_boundary_imports_agree_with_grimp(real: ProjectMetrics) -> None:
    graph = grimp.build_graph("splitstone", cache_dir=None)
    prefix = "splitstone.modules."

    def owner(dotted: str) -> str | None:
        return dotted[len(prefix) :].split(".")[0] if dotted.startswith(prefix) else None

    expected = set()
    for importer in graph.modules:
        for imported in graph.find_modules_directly_imported_by(importer):
            if owner(importer) and owner(imported) and owner(importer) != owner(imported):
                for detail in graph.get_import_details(importer=importer, imported=imported):
                    expected.add((importer, imported, detail["line_number"]))
    assert expected, "the real tree has imports between modules"
    assert {(e.importer, e.imported, e.line) for e in real.cross_imports} == expected
    statements_out: dict[str, set[tuple[str, int, str | None]]] = defaultdict(set)
    for importer, imported, line in expected:
        statements_out[owner(importer) or ""].add((importer, line, owner(imported)))
    for module in real.modules:
        assert module.imports_out == len(statements_out[module.name])
    assert sum(m.imports_in for m in real.modules) == sum(m.imports_out for m in real.modules)


def test_the_real_tree_imports_other_modules_only_through_their_contracts(real: ProjectMetrics) -> None:
    assert [e for m in real.modules for e in m.non_contract_imports] == []


# -- rules on a small package written here --------------------------------------------------------------


def write(root: Path, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = root / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))


def test_non_contract_relative_and_hidden_imports_are_all_read(tmp_path: Path) -> None:
    package = tmp_path / "tinypkg"
    write(
        package,
        {
            "__init__.py": "",
            "modules/__init__.py": "",
            "modules/a/__init__.py": "",
            "modules/a/api.py": '''
                from typing import ClassVar, Protocol
                from tinypkg.kernel.events import Event

                class AApi(Protocol):
                    """Things a does."""
                    async def ping(self) -> None:
                        """Answer."""
                    async def _hidden(self) -> None: ...

                class Base(Event):
                    """No name: abstract."""

                class Happened(Base):
                    name: ClassVar[str] = "a.Happened"
            ''',
            "modules/a/storage.py": "",
            "modules/b/__init__.py": "",
            "modules/b/api.py": "class BApi: ...\n",
            "modules/b/service.py": """
                from typing import TYPE_CHECKING
                from ..a import api, storage  # one statement, two targets
                if TYPE_CHECKING:
                    from tinypkg.modules.a.api import AApi
                def go(a):
                    from tinypkg.modules.a.api import Happened
                    a.ping()
                    return {Happened: go}
            """,
        },
    )
    metrics = measure(package)
    a, b = metrics.module("a"), metrics.module("b")
    assert [m.name for m in a.methods] == ["ping"]
    assert a.methods[0].used_by == ("b",)
    assert [e.name for e in a.events_published] == ["a.Happened"]
    assert a.events_published[0].consumed_by == ("b",)
    assert (b.depends_on, a.used_by, b.imports_out, a.imports_in) == (("a",), ("b",), 3, 3)
    assert [(e.imported, e.line) for e in b.non_contract_imports] == [("tinypkg.modules.a.storage", 3)]
    assert b.contract is None
    assert (a.instability, b.instability) == (0.0, 1.0)


# -- renderers and the committed document ----------------------------------------------------------------


def test_json_round_trips_and_is_what_the_cli_prints(real: ProjectMetrics) -> None:
    data = real.to_json()
    assert json.loads(json.dumps(data)) == data
    result = CliRunner().invoke(
        app, ["arch", "report", "--json", "--package", str(PACKAGE), "--tests", str(TESTS)]
    )
    assert result.exit_code == 0, result.output
    assert json.loads(result.stdout) == data
    assert set(data["modules"][0]) >= {"ca", "ce", "instability", "non_contract_imports", "loc", "tests"}


def test_the_terminal_report_has_a_row_and_a_canvas_per_module() -> None:
    result = CliRunner().invoke(
        app, ["arch", "report", "--package", str(PACKAGE), "--tests", str(TESTS)], env={"COLUMNS": "160"}
    )
    assert result.exit_code == 0, result.output
    for name in LIVE:
        assert f"│ {name}" in result.output  # its row
        assert f"╭─ {name} " in result.output  # its canvas
    assert "SPLITSTONE_BILLING_PROVIDER" in result.output
    assert "auth.OrganizationCreated → billing" in result.output


def test_markdown_is_deterministic_and_dateless(real: ProjectMetrics) -> None:
    text = render_markdown(real)
    assert text == render_markdown(measure(PACKAGE, tests_dir=TESTS))
    assert f"`{MARKDOWN_COMMAND}`" in text.splitlines()[2]
    assert not re.search(r"\d{4}-\d{2}-\d{2}", text)
    for module in real.modules:
        assert f"\n## {module.name}\n" in text


def test_the_committed_modules_doc_is_up_to_date(real: ProjectMetrics) -> None:
    update = update_markdown(MODULES_DOC, real, check=True)
    assert not update.changed, (
        f"docs/modules.md is stale; run `{MARKDOWN_COMMAND}` and commit it:\n{update.diff}"
    )


def test_cli_check_fails_on_a_stale_copy_and_passes_once_written(tmp_path: Path) -> None:
    doc = tmp_path / "modules.md"
    doc.write_text(MODULES_DOC.read_text().replace("| 0 |", "| 7 |", 1))
    args = [
        "arch",
        "report",
        "--markdown",
        "--file",
        str(doc),
        "--package",
        str(PACKAGE),
        "--tests",
        str(TESTS),
    ]
    runner = CliRunner()
    stale = runner.invoke(app, [*args, "--check"])
    assert stale.exit_code == 1
    assert "module report is stale; run `splitstone arch report --markdown`" in stale.output
    assert "-| [`auth`](#auth)" in stale.output  # the diff
    assert runner.invoke(app, args).exit_code == 0
    fresh = runner.invoke(app, [*args, "--check"])
    assert fresh.exit_code == 0
    assert "up to date" in fresh.output


def test_the_cli_refuses_to_run_outside_a_repository(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["arch", "report"])
    assert result.exit_code == 2
    assert "run from the repository root" in result.output
