"""`splitstone arch report --history N`: the key coupling numbers over the last N commits.

Each commit's modules and module tests are read from git's object store (`git ls-tree`, then one
`git cat-file --batch` for every commit) and measured by the same static reader as the current tree
(`metrics.measure_sources`): an old commit is neither checked out, installed nor imported. A file that
did not change between commits is read and parsed once.
"""

from __future__ import annotations

import subprocess
from dataclasses import dataclass
from pathlib import Path, PurePosixPath
from typing import Any

from splitstone.kernel.arch.metrics import measure_sources
from splitstone.kernel.arch.metrics_model import ModuleMetrics, ProjectMetrics
from splitstone.kernel.arch.spec import MODULES_PACKAGE


class HistoryError(RuntimeError):
    """git could not list or extract the commits (not a repository, say)."""


@dataclass(frozen=True)
class Commit:
    sha: str
    date: str
    subject: str

    @property
    def short(self) -> str:
        return self.sha[:7]


@dataclass(frozen=True)
class CommitMetrics:
    """One commit's measurement, and the totals the history table and chart show."""

    commit: Commit
    metrics: ProjectMetrics

    @property
    def cross_boundary_imports(self) -> int:
        return sum(m.imports_out for m in self.metrics.modules)

    @property
    def non_contract_imports(self) -> int:
        return sum(len(m.non_contract_imports) for m in self.metrics.modules)

    @property
    def contract_methods(self) -> int:
        return sum(len(m.methods) for m in self.metrics.modules)

    @property
    def events(self) -> int:
        return sum(len(m.events_published) for m in self.metrics.modules)

    def to_json(self) -> dict[str, Any]:
        return {
            "sha": self.commit.sha,
            "short": self.commit.short,
            "date": self.commit.date,
            "subject": self.commit.subject,
            "totals": {
                "cross_boundary_imports": self.cross_boundary_imports,
                "non_contract_imports": self.non_contract_imports,
                "contract_methods": self.contract_methods,
                "events": self.events,
            },
            "modules": {m.name: key_numbers(m) for m in self.metrics.modules},
        }


def key_numbers(module: ModuleMetrics) -> dict[str, Any]:
    """The numbers of one module that the history follows."""
    return {
        "ca": module.ca,
        "ce": module.ce,
        "instability": module.instability,
        "imports_in": module.imports_in,
        "imports_out": module.imports_out,
        "non_contract_imports": len(module.non_contract_imports),
        "loc": module.loc,
        "tests": module.tests,
    }


@dataclass(frozen=True)
class SkippedCommit:
    commit: Commit
    reason: str

    def to_json(self) -> dict[str, Any]:
        return {"sha": self.commit.sha, "short": self.commit.short, "reason": self.reason}


@dataclass(frozen=True)
class History:
    package: str
    points: tuple[CommitMetrics, ...]
    skipped: tuple[SkippedCommit, ...]

    @property
    def module_names(self) -> list[str]:
        """Every module seen in any measured commit, sorted."""
        return sorted({m.name for point in self.points for m in point.metrics.modules})

    def to_json(self) -> dict[str, Any]:
        return {
            "package": self.package,
            "commits": [p.to_json() for p in self.points],
            "skipped": [s.to_json() for s in self.skipped],
        }


def measure_history(
    repo: Path, count: int, *, package: Path = Path("src/splitstone"), tests: Path = Path("tests")
) -> History:
    """Measure the last `count` first-parent commits of HEAD in `repo`, oldest first.

    `package` and `tests` are paths inside the repository (the package folder, the tests folder).
    """
    points: list[CommitMetrics] = []
    skipped: list[SkippedCommit] = []
    with BlobReader(repo) as blobs:
        for commit in commits(repo, count):
            sources = blobs.files(commit.sha, package)
            try:
                metrics = measure_sources(package.name, sources, blobs.files(commit.sha, tests))
            except SyntaxError as error:
                skipped.append(SkippedCommit(commit, f"cannot be parsed: {error.msg} (line {error.lineno})"))
                continue
            if not metrics.modules:
                skipped.append(
                    SkippedCommit(commit, f"no modules under {(package / MODULES_PACKAGE).as_posix()}")
                )
                continue
            points.append(CommitMetrics(commit, metrics))
    return History(package.name, tuple(points), tuple(skipped))


def commits(repo: Path, count: int) -> list[Commit]:
    """The last `count` commits of HEAD's first-parent line, oldest first."""
    output = _git(repo, "log", "--first-parent", f"-n{count}", "--format=%H%x1f%cs%x1f%s").decode()
    found = [Commit(*line.split("\x1f", 2)) for line in output.splitlines() if line]
    return found[::-1]


class BlobReader:
    """The .py files of a folder at a commit, read from git's object store without a checkout.

    One `git cat-file --batch` process serves every commit, and each blob is read once: commits share
    most of their files (this is what makes thirty commits take seconds).
    """

    def __init__(self, repo: Path) -> None:
        self.repo = repo
        self._texts: dict[str, str] = {}
        self._process: subprocess.Popen[bytes] | None = None

    def __enter__(self) -> BlobReader:
        self._process = subprocess.Popen(  # noqa: S603 (fixed git arguments)
            ["git", "-C", str(self.repo), "cat-file", "--batch"],  # noqa: S607 (git from PATH)
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
        )
        return self

    def __exit__(self, *_exc: object) -> None:
        if self._process is not None and self._process.stdin is not None:
            self._process.stdin.close()
            self._process.wait()

    def files(self, sha: str, folder: Path) -> dict[PurePosixPath, str]:
        """`folder/modules/**/*.py` at commit `sha`, keyed by path relative to `folder`."""
        under = (folder / MODULES_PACKAGE).as_posix()
        listing = _git(self.repo, "ls-tree", "-r", "-z", sha, "--", under).decode()
        found: dict[PurePosixPath, str] = {}
        for entry in filter(None, listing.split("\0")):
            meta, _, path = entry.partition("\t")
            _mode, kind, blob = meta.split()
            if kind == "blob" and path.endswith(".py"):
                found[PurePosixPath(path).relative_to(folder.as_posix())] = self._text(blob)
        return found

    def _text(self, blob: str) -> str:
        if blob not in self._texts:
            if self._process is None or self._process.stdin is None or self._process.stdout is None:
                raise HistoryError("BlobReader is used outside its `with` block")
            self._process.stdin.write(f"{blob}\n".encode())
            self._process.stdin.flush()
            size = int(self._process.stdout.readline().split()[2])
            data = self._process.stdout.read(size + 1)[:-1]  # the content, then a newline
            self._texts[blob] = data.decode("utf-8")
        return self._texts[blob]


def _git(repo: Path, *args: str) -> bytes:
    try:
        done = subprocess.run(  # noqa: S603 (fixed git arguments; shas come from git itself)
            ["git", "-C", str(repo), *args],  # noqa: S607 (git from PATH, as a developer runs it)
            check=True,
            capture_output=True,
        )
    except FileNotFoundError as error:
        raise HistoryError("git is not installed") from error
    except subprocess.CalledProcessError as error:
        message = error.stderr.decode(errors="replace").strip()
        raise HistoryError(f"git {args[0]} failed: {message}") from error
    return done.stdout
