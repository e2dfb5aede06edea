"""`splitstone arch report` and `splitstone arch explain`: coupling numbers, canvases and their history.

Everything is read statically from the source (see kernel/arch/metrics.py), from the repository root:
the current directory, like the other `arch` commands.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Annotated, NoReturn

import typer
from rich.console import Console

from splitstone.kernel.arch.explain import explain
from splitstone.kernel.arch.history import HistoryError, measure_history
from splitstone.kernel.arch.history_render import module_table, render_svg, totals_table
from splitstone.kernel.arch.metrics import measure
from splitstone.kernel.arch.metrics_model import MetricsError, ProjectMetrics
from splitstone.kernel.arch.report_render import print_report, update_markdown

DEFAULT_PACKAGE = Path("src/splitstone")
DEFAULT_TESTS = Path("tests")
DEFAULT_MARKDOWN = Path("docs/modules.md")
DEFAULT_CHART = Path("docs/coupling-history.svg")

PackageOption = Annotated[
    Path, typer.Option("--package", help="The package folder to measure (its modules/ are the modules).")
]
TestsOption = Annotated[Path, typer.Option("--tests", help="The tests folder (tests/modules/<name>/...).")]


def arch_report(
    as_json: Annotated[bool, typer.Option("--json", help="Print the numbers as JSON.")] = False,
    markdown: Annotated[bool, typer.Option("--markdown", help="Write the report to --file.")] = False,
    file: Annotated[Path, typer.Option(help="The Markdown document (with --markdown).")] = DEFAULT_MARKDOWN,
    check: Annotated[
        bool, typer.Option(help="With --markdown: only check that the file is current; exit 1 if not.")
    ] = False,
    history: Annotated[
        int | None, typer.Option("--history", min=1, help="The key numbers over the last N commits (git).")
    ] = None,
    chart: Annotated[
        Path, typer.Option(help="With --history: where to write the SVG chart.")
    ] = DEFAULT_CHART,
    package: PackageOption = DEFAULT_PACKAGE,
    tests: TestsOption = DEFAULT_TESTS,
) -> None:
    """Per module: contract use, events, coupling (Ca, Ce, instability), imports across boundaries,
    size and tests, then each module's canvas."""
    if check and not markdown:
        _fail("--check goes with --markdown", code=2)
    if history is not None:
        _history(history, chart, package, tests, as_json=as_json)
        return
    metrics = _measure(package, tests)
    if markdown:
        _markdown(metrics, file, check=check)
    elif as_json:
        typer.echo(json.dumps(metrics.to_json(), indent=2))
    else:
        print_report(Console(), metrics)


def arch_explain(
    module: Annotated[str, typer.Argument(help="The module to explain.")],
    package: PackageOption = DEFAULT_PACKAGE,
    tests: TestsOption = DEFAULT_TESTS,
) -> None:
    """One screen on a module: what it does, its contract, who depends on it, its events, tables,
    settings, and how to run its tests alone."""
    metrics = _measure(package, tests)
    if module not in metrics.names:
        _fail(f"no module {module!r}; the modules are: {', '.join(metrics.names)}", code=2)
    typer.echo(explain(metrics, module, package_dir=package, repo=Path.cwd()), nl=False)


def _measure(package: Path, tests: Path) -> ProjectMetrics:
    if not package.is_dir():
        _fail(f"{package} not found (run from the repository root, or pass --package)", code=2)
    try:
        return measure(package, tests_dir=tests)
    except MetricsError as error:
        _fail(str(error), code=2)
    except SyntaxError as error:
        _fail(f"cannot parse {error.filename}: {error.msg} (line {error.lineno})", code=2)


def _markdown(metrics: ProjectMetrics, file: Path, *, check: bool) -> None:
    if not file.parent.is_dir():
        _fail(f"{file.parent} not found (run from the repository root, or pass --file)", code=2)
    update = update_markdown(file, metrics, check=check)
    if not update.changed:
        typer.echo(f"{file}: module report up to date")
    elif check:
        typer.echo(update.diff, err=True, nl=False)
        _fail(f"{file}: module report is stale; run `splitstone arch report --markdown`", code=1)
    else:
        typer.echo(f"{file}: module report updated")


def _history(count: int, chart: Path, package: Path, tests: Path, *, as_json: bool) -> None:
    try:
        found = measure_history(Path.cwd(), count, package=package, tests=tests)
    except HistoryError as error:
        _fail(str(error), code=2)
    if as_json:
        typer.echo(json.dumps(found.to_json(), indent=2))
    else:
        console = Console()
        console.print(totals_table(found))
        for name in found.module_names:
            console.print(module_table(found, name))
        for skipped in found.skipped:
            console.print(f"skipped {skipped.commit.short}: {skipped.reason}", style="yellow")
    if not found.points:
        _fail("no commit had modules to measure; no chart written", code=1)
    if not chart.parent.is_dir():
        _fail(f"{chart.parent} not found (run from the repository root, or pass --chart)", code=2)
    chart.write_text(render_svg(found), encoding="utf-8")
    typer.echo(f"{chart}: chart of {len(found.points)} commits written", err=as_json)


def _fail(message: str, *, code: int) -> NoReturn:
    typer.echo(f"error: {message}", err=True)
    raise typer.Exit(code=code)
