"""What one source file says, read with `ast`: its imports, the names it binds, keys, calls and routes.

The metrics are built from these facts alone, so nothing of the analysed code is ever imported: the same
reading works on the current tree, on a fixture project and on an old commit extracted from git.
"""

from __future__ import annotations

import ast
import functools
from dataclasses import dataclass, field
from pathlib import Path, PurePosixPath

ROUTE_METHODS = frozenset({"get", "post", "put", "patch", "delete"})


@dataclass(frozen=True)
class ImportStatement:
    """One `import`/`from ... import` statement: its line and the dotted modules it resolves to."""

    line: int
    targets: frozenset[str]


@dataclass
class SourceFile:
    """One parsed .py file of the analysed package, with the facts the metrics need."""

    dotted: str
    is_package: bool
    tree: ast.Module
    text: str
    imports: list[ImportStatement] = field(default_factory=list)
    # local name -> (dotted module it was imported from, the imported name) for `from m import N as local`
    imported_names: dict[str, tuple[str, str]] = field(default_factory=dict)
    # local name -> dotted module, for `import a.b.c as local` and `from a.b import c` (c a module)
    imported_modules: dict[str, str] = field(default_factory=dict)
    dict_keys: list[ast.expr] = field(default_factory=list)
    # attribute names called anywhere: `method` for every `<anything>.method(...)`
    called: set[str] = field(default_factory=set)
    # decorators of the form `@<router>.get/post/put/patch/delete(...)`
    routes: int = 0

    @property
    def package(self) -> str:
        """The package relative imports start from."""
        return self.dotted if self.is_package else self.dotted.rpartition(".")[0]


def dotted_name(package: str, path: PurePosixPath) -> tuple[str, bool]:
    """(`pkg.a.b`, is a package) for `path`, relative to the folder of package `package`."""
    parts = [package, *path.with_suffix("").parts]
    if parts[-1] == "__init__":
        return ".".join(parts[:-1]), True
    return ".".join(parts), False


def read_python_files(directory: Path, under: str) -> dict[PurePosixPath, str]:
    """The text of every .py file below `directory / under`, keyed by its path relative to `directory`."""
    if not (directory / under).is_dir():
        return {}
    return {
        PurePosixPath(path.relative_to(directory).as_posix()): path.read_text(encoding="utf-8")
        for path in sorted((directory / under).rglob("*.py"))
        if "__pycache__" not in path.parts
    }


def parse(package: str, path: PurePosixPath, text: str, known_modules: frozenset[str]) -> SourceFile:
    """Parse one file and resolve its imports against the dotted modules that exist in the tree."""
    dotted, is_package = dotted_name(package, path)
    return _parse(dotted, is_package, text, known_modules)


# Measuring the commits of a history reads mostly the same files again: each is parsed once.
@functools.lru_cache(maxsize=8192)
def _parse(dotted: str, is_package: bool, text: str, known_modules: frozenset[str]) -> SourceFile:
    source = SourceFile(dotted, is_package, ast.parse(text), text)
    for node in ast.walk(source.tree):  # one walk gathers every fact (the walk is most of the time)
        if isinstance(node, ast.Import):
            _read_import(source, node)
        elif isinstance(node, ast.ImportFrom):
            _read_import_from(source, node, known_modules)
        elif isinstance(node, ast.Dict):
            source.dict_keys += [key for key in node.keys if key is not None]
        elif isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute):
            source.called.add(node.func.attr)
        elif isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef):
            source.routes += sum(1 for decorator in node.decorator_list if _is_route(decorator))
    source.imports.sort(key=lambda statement: statement.line)
    return source


def _read_import(source: SourceFile, node: ast.Import) -> None:
    targets = frozenset(alias.name for alias in node.names)
    source.imports.append(ImportStatement(node.lineno, targets))
    for alias in node.names:
        if alias.asname:
            source.imported_modules[alias.asname] = alias.name


def _read_import_from(source: SourceFile, node: ast.ImportFrom, known_modules: frozenset[str]) -> None:
    module = _absolute(source, node)
    targets: set[str] = set()
    for alias in node.names:
        candidate = f"{module}.{alias.name}"
        local = alias.asname or alias.name
        if candidate in known_modules:
            targets.add(candidate)
            source.imported_modules[local] = candidate
        else:
            targets.add(module)
            source.imported_names[local] = (module, alias.name)
    source.imports.append(ImportStatement(node.lineno, frozenset(targets)))


def _absolute(source: SourceFile, node: ast.ImportFrom) -> str:
    if not node.level:
        return node.module or ""
    base = source.package.split(".")
    base = base[: len(base) - (node.level - 1)]
    return ".".join([*base, node.module] if node.module else base)


def _is_route(decorator: ast.expr) -> bool:
    return (
        isinstance(decorator, ast.Call)
        and isinstance(decorator.func, ast.Attribute)
        and decorator.func.attr in ROUTE_METHODS
    )


def string_constants(tree: ast.Module | ast.ClassDef) -> dict[str, str]:
    """`NAME = "text"` (or `NAME: str = "text"`) assignments at the top of a file or a class body."""
    constants: dict[str, str] = {}
    for node in tree.body:
        target, value = assignment(node)
        if isinstance(target, ast.Name) and isinstance(value, ast.Constant) and isinstance(value.value, str):
            constants[target.id] = value.value
    return constants


def assignment(node: ast.stmt) -> tuple[ast.expr | None, ast.expr | None]:
    """The target and value of `x = v` or `x: T = v` (None, None for anything else)."""
    if isinstance(node, ast.Assign) and len(node.targets) == 1:
        return node.targets[0], node.value
    if isinstance(node, ast.AnnAssign):
        return node.target, node.value
    return None, None


def first_paragraph(doc: str | None) -> str:
    """The first paragraph of a docstring, on one line ("" when there is none)."""
    if not doc:
        return ""
    return " ".join(doc.strip().split("\n\n", 1)[0].split())


def first_line(doc: str | None) -> str:
    return doc.strip().splitlines()[0].strip() if doc and doc.strip() else ""


def code_lines(text: str) -> int:
    """Lines that are neither blank nor only a comment."""
    return sum(1 for line in text.splitlines() if line.strip() and not line.strip().startswith("#"))


@functools.lru_cache(maxsize=8192)
def test_count(text: str) -> int:
    """`def`/`async def test_*` at the top level, and in the top-level `Test*` classes."""
    tree = ast.parse(text)
    count = 0
    for node in tree.body:
        if _is_test(node):
            count += 1
        elif isinstance(node, ast.ClassDef) and node.name.startswith("Test"):
            count += sum(1 for member in node.body if _is_test(member))
    return count


def _is_test(node: ast.stmt) -> bool:
    return isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and node.name.startswith("test_")
