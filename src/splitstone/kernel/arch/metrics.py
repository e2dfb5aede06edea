"""`splitstone arch report`: each module's coupling numbers and canvas, read statically from source.

`measure` parses the files of a package with `ast` and never imports them, so it measures the current
tree, a fixture project or an old commit extracted from git alike. The definitions of every number are
in docs/architecture.md ("Growth tooling"); tests cross-check them against the live declarations
(`splitstone.bootstrap.MODULES`) and against grimp's import graph.
"""

from __future__ import annotations

import ast
from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path, PurePosixPath

from splitstone.kernel.arch.metrics_model import (
    ConsumedEvent,
    ContractMethod,
    ImportEdge,
    MetricsError,
    ModuleMetrics,
    ProjectMetrics,
    PublishedEvent,
    Setting,
)
from splitstone.kernel.arch.metrics_source import (
    SourceFile,
    assignment,
    code_lines,
    dotted_name,
    first_line,
    first_paragraph,
    parse,
    read_python_files,
    string_constants,
    test_count,
)
from splitstone.kernel.arch.spec import CONTRACT_MODULE, DECLARATION_MODULE, MODULES_PACKAGE

SETTINGS_BASE = "ModuleSettings"
EVENT_BASE = "Event"
API_FILE = f"{CONTRACT_MODULE}.py"


# -- reading -----------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class _Event:
    owner: str
    class_name: str
    name: str


@dataclass
class _Project:
    """The parsed package: each module's files, and the helpers to place a dotted name in a module."""

    package: str
    modules: dict[str, list[SourceFile]]

    def owner(self, dotted: str) -> str | None:
        prefix = f"{self.package}.{MODULES_PACKAGE}."
        if not dotted.startswith(prefix):
            return None
        name = dotted[len(prefix) :].split(".", 1)[0]
        return name if name in self.modules else None

    def api(self, name: str) -> str:
        return f"{self.package}.{MODULES_PACKAGE}.{name}.{CONTRACT_MODULE}"

    def file(self, name: str, relative: str) -> SourceFile | None:
        dotted = f"{self.package}.{MODULES_PACKAGE}.{name}.{relative}"
        return next((f for f in self.modules[name] if f.dotted == dotted), None)

    def files_matching(self, name: str, prefix: str) -> list[SourceFile]:
        """The module's top-level files whose name starts with `prefix` (`storage` -> storage*.py)."""
        base = f"{self.package}.{MODULES_PACKAGE}.{name}."
        return [
            f
            for f in self.modules[name]
            if f.dotted.startswith(base + prefix) and "." not in f.dotted[len(base) :]
        ]


def measure(package_dir: Path, *, tests_dir: Path | None = None) -> ProjectMetrics:
    """The metrics of every module of the package at `package_dir` (its tests under `tests_dir`)."""
    if not (package_dir / MODULES_PACKAGE).is_dir():
        raise MetricsError(f"{package_dir / MODULES_PACKAGE} not found: is {package_dir} a package?")
    return measure_sources(
        package_dir.name,
        read_python_files(package_dir, MODULES_PACKAGE),
        read_python_files(tests_dir, MODULES_PACKAGE) if tests_dir else {},
    )


def measure_sources(
    package: str, sources: Mapping[PurePosixPath, str], tests: Mapping[PurePosixPath, str]
) -> ProjectMetrics:
    """The metrics from file texts: `sources` keyed by path in the package folder (`modules/a/api.py`),
    `tests` by path in the tests folder (`modules/a/test_x.py`). History measures commits this way."""
    project = _read(package, sources)
    cross = _cross_imports(project)
    depends: dict[str, set[str]] = defaultdict(set)
    for edge in cross:
        depends[_owner(project, edge.importer)].add(_owner(project, edge.imported))
    events = {name: _events(project, name) for name in project.modules}
    consumers = _consumers(project, events)
    modules = tuple(
        _module_metrics(project, name, cross, depends, events, consumers, tests)
        for name in sorted(project.modules)
    )
    return ProjectMetrics(project.package, modules, tuple(sorted(cross)))


def _owner(project: _Project, dotted: str) -> str:
    owner = project.owner(dotted)
    assert owner is not None
    return owner


def _read(package: str, sources: Mapping[PurePosixPath, str]) -> _Project:
    """Modules are the folders `modules/<name>/` that hold an `api.py`; each file is parsed once."""
    names = sorted(
        p.parts[1]
        for p in sources
        if len(p.parts) == 3 and p.parts[0] == MODULES_PACKAGE and p.name == API_FILE
    )
    files = {name: sorted(p for p in sources if p.parts[:2] == (MODULES_PACKAGE, name)) for name in names}
    known = frozenset(
        dotted for paths in files.values() for path in paths for dotted in _dotted_and_parents(package, path)
    )
    return _Project(
        package,
        {
            name: [parse(package, path, sources[path], known) for path in paths]
            for name, paths in files.items()
        },
    )


def _dotted_and_parents(package: str, path: PurePosixPath) -> list[str]:
    dotted = dotted_name(package, path)[0].split(".")
    return [".".join(dotted[:i]) for i in range(1, len(dotted) + 1)]


def _cross_imports(project: _Project) -> list[ImportEdge]:
    edges: set[ImportEdge] = set()
    for name, files in project.modules.items():
        for source in files:
            for statement in source.imports:
                for target in statement.targets:
                    owner = project.owner(target)
                    if owner is not None and owner != name:
                        edges.add(ImportEdge(source.dotted, target, statement.line))
    return sorted(edges)


def _statement_counts(project: _Project, cross: Iterable[ImportEdge]) -> tuple[Mapping[str, int], ...]:
    """(statements out of each module, statements into each module), one per statement and target module."""
    statements = {
        (e.importer, e.line, _owner(project, e.importer), _owner(project, e.imported)) for e in cross
    }
    out: dict[str, int] = defaultdict(int)
    into: dict[str, int] = defaultdict(int)
    for _, _, source, target in statements:
        out[source] += 1
        into[target] += 1
    return out, into


def _module_metrics(
    project: _Project,
    name: str,
    cross: list[ImportEdge],
    depends: Mapping[str, set[str]],
    events: Mapping[str, list[_Event]],
    consumers: Mapping[tuple[str, str], set[str]],
    tests: Mapping[PurePosixPath, str],
) -> ModuleMetrics:
    files = project.modules[name]
    out, into = _statement_counts(project, cross)
    contract = _contract(project, name)
    used_by = tuple(sorted(other for other, targets in depends.items() if name in targets))
    return ModuleMetrics(
        name=name,
        description=_description(project, name, contract),
        contract=contract.name if contract else None,
        methods=_methods(project, name, contract, used_by),
        depends_on=tuple(sorted(depends.get(name, ()))),
        used_by=used_by,
        events_published=tuple(
            PublishedEvent(e.name, e.class_name, tuple(sorted(consumers.get((e.owner, e.class_name), ()))))
            for e in sorted(events[name], key=lambda e: e.name)
        ),
        events_consumed=_consumed(name, events, consumers),
        imports_in=into.get(name, 0),
        imports_out=out.get(name, 0),
        non_contract_imports=tuple(
            e for e in cross if _owner(project, e.importer) == name and not _is_contract(project, e.imported)
        ),
        loc=sum(code_lines(f.text) for f in files),
        files=len(files),
        tests=_tests(tests, name),
        settings=_settings(project, name),
        tables=_tables(project, name),
        jobs=_jobs(files, name),
        routes=sum(f.routes for f in files),
    )


def _is_contract(project: _Project, dotted: str) -> bool:
    api = project.api(_owner(project, dotted))
    return dotted == api or dotted.startswith(api + ".")


# -- contract and events -------------------------------------------------------------------------------------


def _api_classes(project: _Project, name: str) -> list[ast.ClassDef]:
    api = project.file(name, CONTRACT_MODULE)
    return [node for node in api.tree.body if isinstance(node, ast.ClassDef)] if api else []


def _base_names(node: ast.ClassDef) -> list[str]:
    names = []
    for base in node.bases:
        if isinstance(base, ast.Name):
            names.append(base.id)
        elif isinstance(base, ast.Attribute):
            names.append(base.attr)
    return names


def _contract(project: _Project, name: str) -> ast.ClassDef | None:
    """The first class of api.py with `Protocol` among its bases."""
    return next((c for c in _api_classes(project, name) if "Protocol" in _base_names(c)), None)


def _description(project: _Project, name: str, contract: ast.ClassDef | None) -> str:
    """The declaration's `description=`, else the contract's docstring, else the api module's."""
    text = _declared_description(project, name)
    text = text or (first_paragraph(ast.get_docstring(contract)) if contract else "")
    return text or _api_overview(project, name)


def _declared_description(project: _Project, name: str) -> str:
    """`Module(description="...")` in the module's declaration."""
    declaration = project.file(name, DECLARATION_MODULE)
    if declaration is None:
        return ""
    for node in ast.walk(declaration.tree):
        if isinstance(node, ast.Call):
            for keyword in node.keywords:
                if keyword.arg == "description" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
    return ""


def _api_overview(project: _Project, name: str) -> str:
    api = project.file(name, CONTRACT_MODULE)
    return first_paragraph(ast.get_docstring(api.tree)) if api else ""


def _methods(
    project: _Project, name: str, contract: ast.ClassDef | None, dependants: tuple[str, ...]
) -> tuple[ContractMethod, ...]:
    if contract is None:
        return ()
    calls = {other: set().union(*(f.called for f in project.modules[other])) for other in dependants}
    methods = [
        node
        for node in contract.body
        if isinstance(node, ast.FunctionDef | ast.AsyncFunctionDef) and not node.name.startswith("_")
    ]
    return tuple(
        ContractMethod(
            node.name,
            first_line(ast.get_docstring(node)),
            tuple(other for other in dependants if node.name in calls[other]),
        )
        for node in sorted(methods, key=lambda n: n.name)
    )


def _events(project: _Project, name: str) -> list[_Event]:
    """The api's Event subclasses (directly, or through another class of the api) that have a `name`."""
    classes = _api_classes(project, name)
    event_classes: set[str] = set()
    changed = True
    while changed:
        changed = False
        for node in classes:
            if node.name not in event_classes and any(
                base == EVENT_BASE or base in event_classes for base in _base_names(node)
            ):
                event_classes.add(node.name)
                changed = True
    events = []
    for node in classes:
        wire_name = _class_string(node, "name")
        if node.name in event_classes and wire_name is not None:
            events.append(_Event(name, node.name, wire_name))
    return events


def _class_string(node: ast.ClassDef, attribute: str) -> str | None:
    return string_constants(node).get(attribute)


def _consumers(project: _Project, events: Mapping[str, list[_Event]]) -> dict[tuple[str, str], set[str]]:
    """(publisher, event class) -> the modules that import the class from the publisher's api and use it
    as a dict key (a subscriptions mapping)."""
    known = {(e.owner, e.class_name) for found in events.values() for e in found}
    consumers: dict[tuple[str, str], set[str]] = defaultdict(set)
    for name, files in project.modules.items():
        for source in files:
            for key in source.dict_keys:
                event = _imported_event(project, source, key)
                if event in known:
                    consumers[event].add(name)
    return consumers


def _imported_event(project: _Project, source: SourceFile, key: ast.expr) -> tuple[str, str] | None:
    """(publisher, class) when `key` names a class imported from a module's api, by name or attribute."""
    if isinstance(key, ast.Name) and key.id in source.imported_names:
        module, class_name = source.imported_names[key.id]
    elif (
        isinstance(key, ast.Attribute)
        and isinstance(key.value, ast.Name)
        and key.value.id in source.imported_modules
    ):
        module, class_name = source.imported_modules[key.value.id], key.attr
    else:
        return None
    publisher = project.owner(module)
    if publisher is None or module != project.api(publisher):
        return None
    return publisher, class_name


def _consumed(
    name: str, events: Mapping[str, list[_Event]], consumers: Mapping[tuple[str, str], set[str]]
) -> tuple[ConsumedEvent, ...]:
    consumed = [
        ConsumedEvent(e.name, e.class_name, e.owner)
        for found in events.values()
        for e in found
        if name in consumers.get((e.owner, e.class_name), ())
    ]
    return tuple(sorted(consumed, key=lambda e: e.name))


# -- settings, tables, jobs, tests ---------------------------------------------------------------------------


def _settings(project: _Project, name: str) -> tuple[Setting, ...]:
    source = project.file(name, "settings")
    if source is None:
        return ()
    for node in source.tree.body:
        if isinstance(node, ast.ClassDef) and SETTINGS_BASE in _base_names(node):
            prefix = _env_prefix(node) or f"SPLITSTONE_{name.upper()}_"
            return tuple(sorted(_fields(node, prefix, source.text), key=lambda s: s.name))
    return ()


def _env_prefix(node: ast.ClassDef) -> str | None:
    for statement in node.body:
        target, value = assignment(statement)
        if isinstance(target, ast.Name) and target.id == "model_config" and isinstance(value, ast.Call):
            for keyword in value.keywords:
                if keyword.arg == "env_prefix" and isinstance(keyword.value, ast.Constant):
                    return str(keyword.value.value)
    return None


def _fields(node: ast.ClassDef, prefix: str, text: str) -> list[Setting]:
    fields = []
    for statement in node.body:
        if not isinstance(statement, ast.AnnAssign) or not isinstance(statement.target, ast.Name):
            continue
        annotation = _source(text, statement.annotation)
        if annotation.startswith(("ClassVar", "typing.ClassVar")):
            continue
        field_name = statement.target.id
        default = _default(statement.value)
        fields.append(
            Setting(
                field_name,
                annotation,
                _source(text, default) if default is not None else None,
                (prefix + field_name).upper(),
            )
        )
    return fields


def _default(value: ast.expr | None) -> ast.expr | None:
    """The default: `Field(default=x)`, `Field(default_factory=x)` or `Field(x)` give `x`; none: None."""
    if value is None:
        return None
    if isinstance(value, ast.Call) and _call_name(value) == "Field":
        for keyword in value.keywords:
            if keyword.arg in ("default", "default_factory"):
                return keyword.value
        return value.args[0] if value.args else None
    return value


def _source(text: str, node: ast.expr) -> str:
    """The source text of `node` as written, on one line."""
    segment = ast.get_source_segment(text, node) or ast.unparse(node)
    return " ".join(segment.split())


def _call_name(call: ast.Call) -> str:
    if isinstance(call.func, ast.Name):
        return call.func.id
    return call.func.attr if isinstance(call.func, ast.Attribute) else ""


def _tables(project: _Project, name: str) -> tuple[str, ...]:
    """`schema.table` for each `Table("table", metadata, ...)` in storage*.py."""
    tables = set()
    for source in project.files_matching(name, "storage"):
        constants = string_constants(source.tree)
        schemas = _metadata_schemas(source.tree, constants)
        for node in ast.walk(source.tree):
            if isinstance(node, ast.Call) and _call_name(node) == "Table" and len(node.args) >= 2:
                table, metadata = node.args[0], node.args[1]
                if not (isinstance(table, ast.Constant) and isinstance(table.value, str)):
                    continue
                schema = _keyword_string(node, "schema", constants)
                if schema is None and isinstance(metadata, ast.Name):
                    schema = schemas.get(metadata.id)
                tables.add(f"{schema or name}.{table.value}")
    return tuple(sorted(tables))


def _metadata_schemas(tree: ast.Module, constants: Mapping[str, str]) -> dict[str, str]:
    """Metadata variables -> their schema: `m = MetaData(schema=S)` or `m = module_metadata(S)`."""
    schemas = {}
    for node in tree.body:
        target, value = assignment(node)
        if isinstance(target, ast.Name) and isinstance(value, ast.Call):
            schema = _keyword_string(value, "schema", constants)
            if schema is None and value.args:
                schema = _string(value.args[0], constants)
            if schema is not None:
                schemas[target.id] = schema
    return schemas


def _keyword_string(call: ast.Call, keyword_name: str, constants: Mapping[str, str]) -> str | None:
    for keyword in call.keywords:
        if keyword.arg == keyword_name:
            return _string(keyword.value, constants)
    return None


def _string(node: ast.expr, constants: Mapping[str, str]) -> str | None:
    if isinstance(node, ast.Constant) and isinstance(node.value, str):
        return node.value
    if isinstance(node, ast.Name):
        return constants.get(node.id)
    return None


def _jobs(files: list[SourceFile], name: str) -> tuple[str, ...]:
    """Job kinds: top-level string constants of the module's files that start with `<name>.`."""
    kinds = {
        value for f in files for value in string_constants(f.tree).values() if value.startswith(name + ".")
    }
    return tuple(sorted(kinds))


def _tests(tests: Mapping[PurePosixPath, str], name: str) -> int:
    """Test functions in `modules/<name>/**/test_*.py` of the tests folder."""
    return sum(
        test_count(text)
        for path, text in tests.items()
        if path.parts[:2] == (MODULES_PACKAGE, name) and path.name.startswith("test_")
    )
