"""`splitstone arch report --history N`: a small git repository whose coupling grows over 3 commits."""

from __future__ import annotations

import json
import subprocess
import textwrap
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from typer.testing import CliRunner

from splitstone.cli import app
from splitstone.kernel.arch.history import History, measure_history
from splitstone.kernel.arch.history_render import render_svg

SVG = "{http://www.w3.org/2000/svg}"
PACKAGE = Path("src/fakepkg")


def git(repo: Path, *args: str) -> None:
    subprocess.run(  # noqa: S603 (git on the test's own repository)
        ["git", "-C", str(repo), *args],  # noqa: S607 (git from PATH, as the command uses it)
        check=True,
        capture_output=True,
    )


def commit(repo: Path, message: str, files: dict[str, str]) -> None:
    for relative, text in files.items():
        path = repo / relative
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(text))
    git(repo, "add", "-A")
    git(repo, "-c", "user.name=t", "-c", "user.email=t@t", "commit", "-q", "-m", message)


def module(name: str) -> dict[str, str]:
    base = f"src/fakepkg/modules/{name}"
    return {
        f"{base}/__init__.py": "",
        f"{base}/api.py": f"class {name.title()}Api:\n    pass\n",
        f"tests/modules/{name}/test_{name}.py": "def test_one():\n    pass\n",
    }


@pytest.fixture
def repo(tmp_path: Path) -> Path:
    """No modules yet; then a and b apart; b uses a's contract; b reaches into a's storage and c uses a."""
    git(tmp_path, "init", "-q", "-b", "main")
    commit(tmp_path, "readme", {"README.md": "fake\n"})
    commit(tmp_path, "two modules", {"src/fakepkg/__init__.py": "", **module("a"), **module("b")})
    commit(
        tmp_path,
        "b uses a",
        {"src/fakepkg/modules/b/service.py": "from fakepkg.modules.a.api import AApi\n"},
    )
    commit(
        tmp_path,
        "b reaches in, c arrives",
        {
            "src/fakepkg/modules/a/storage.py": "TABLES = []\n",
            "src/fakepkg/modules/b/storage.py": "from fakepkg.modules.a.storage import TABLES\n",
            **module("c"),
            "src/fakepkg/modules/c/service.py": "from fakepkg.modules.a import api\n",
            "tests/modules/c/test_more.py": "def test_two():\n    pass\n",
        },
    )
    return tmp_path


def test_the_series_follows_the_commits_oldest_first(repo: Path) -> None:
    history = measure_history(repo, 10, package=PACKAGE)
    assert [p.commit.subject for p in history.points] == [
        "two modules",
        "b uses a",
        "b reaches in, c arrives",
    ]
    assert [(s.commit.subject, s.reason) for s in history.skipped] == [
        ("readme", "no modules under src/fakepkg/modules")
    ]
    assert [p.cross_boundary_imports for p in history.points] == [0, 1, 3]
    assert [p.non_contract_imports for p in history.points] == [0, 0, 1]
    a = [p.metrics.module("a") for p in history.points]
    b = [p.metrics.module("b") for p in history.points]
    assert [(m.ca, m.ce, m.instability) for m in a] == [(0, 0, 0.0), (1, 0, 0.0), (2, 0, 0.0)]
    assert [(m.ca, m.ce, m.instability) for m in b] == [(0, 0, 0.0), (0, 1, 1.0), (0, 1, 1.0)]
    assert [p.metrics.names for p in history.points][-1] == ["a", "b", "c"]
    assert history.points[-1].metrics.module("c").tests == 2


def test_fewer_commits_than_asked_and_fewer_asked_than_there_are(repo: Path) -> None:
    assert len(measure_history(repo, 2, package=PACKAGE).points) == 2
    assert len(measure_history(repo, 50, package=PACKAGE).points) == 3


def test_the_chart_is_well_formed_svg_with_one_point_per_commit(repo: Path) -> None:
    history = measure_history(repo, 10, package=PACKAGE)
    svg = render_svg(history)
    assert svg == render_svg(measure_history(repo, 10, package=PACKAGE))  # deterministic
    root = ET.fromstring(svg)  # noqa: S314 (our own output)
    assert root.tag == f"{SVG}svg"
    shorts = [p.commit.short for p in history.points]
    labels = [t.text for t in root.iter(f"{SVG}text") if t.get("class") == "commit"]
    assert labels == shorts
    lines = list(root.iter(f"{SVG}polyline"))
    per_module = {line.get("data-module"): len((line.get("points") or "").split()) for line in lines}
    assert per_module == {"a": 3, "b": 3, "c": 1}
    assert len(lines) == 2 * 3  # two panels, a line per module in each
    texts = {t.text for t in root.iter(f"{SVG}text")}
    assert {"a", "b", "c", "Instability I = Ce / (Ca + Ce)"} <= texts


def test_cli_prints_the_tables_writes_the_chart_and_json(repo: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(repo)
    (repo / "docs").mkdir()
    runner = CliRunner()
    args = ["arch", "report", "--history", "10", "--package", str(PACKAGE)]
    shown = runner.invoke(app, args, env={"COLUMNS": "160"})
    assert shown.exit_code == 0, shown.output
    assert "module b" in shown.output
    assert "skipped" in shown.output
    assert "no modules under src/fakepkg/modules" in shown.output
    ET.parse(repo / "docs" / "coupling-history.svg")  # noqa: S314 (our own output)
    as_json = runner.invoke(app, [*args, "--json", "--chart", str(repo / "chart.svg")])
    assert as_json.exit_code == 0, as_json.output
    data = json.loads(as_json.stdout)
    assert [c["totals"]["cross_boundary_imports"] for c in data["commits"]] == [0, 1, 3]
    assert data["commits"][-1]["modules"]["b"] == {
        "ca": 0,
        "ce": 1,
        "instability": 1.0,
        "imports_in": 0,
        "imports_out": 2,
        "non_contract_imports": 1,
        "loc": 4,
        "tests": 1,
    }
    assert (repo / "chart.svg").is_file()


def test_an_empty_history_writes_no_chart(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    git(tmp_path, "init", "-q", "-b", "main")
    commit(tmp_path, "readme", {"README.md": "fake\n"})
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["arch", "report", "--history", "3", "--chart", "chart.svg"])
    assert result.exit_code == 1
    assert "no commit had modules" in result.output
    assert not (tmp_path / "chart.svg").exists()
    assert isinstance(measure_history(tmp_path, 3), History)


def test_outside_a_repository_git_fails_clearly(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    result = CliRunner().invoke(app, ["arch", "report", "--history", "3"])
    assert result.exit_code == 2
    assert "git log failed" in result.output
