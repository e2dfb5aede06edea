"""`splitstone arch check`: the architecture's import rules, checked against the source code.

The import-linter contracts are built here from the module declarations, so there is no hand-kept
`.importlinter` file to drift from the code. One grimp graph of the root package serves every contract,
then the same graph is used to compare what each module imports of the others with what it declares.
The checker reads source; it imports no module (the caller passes the declarations in).
"""

from __future__ import annotations

import copy
import importlib.util
from collections import defaultdict, deque
from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from itertools import pairwise
from typing import Any

import grimp
from grimp import ImportGraph
from importlinter import configuration as importlinter_configuration
from importlinter.contracts.acyclic_siblings import AcyclicSiblingsContract
from importlinter.contracts.forbidden import ForbiddenContract
from importlinter.contracts.protected import ProtectedContract
from importlinter.domain.contract import Contract, ContractCheck

from splitstone.kernel.arch.report import ArchReport, ImportLink, RuleResult, Violation
from splitstone.kernel.arch.spec import (
    COMPOSITION_ROOT,
    CONTRACT_MODULE,
    DECLARATION_MODULE,
    KERNEL_PACKAGE,
    MODULES_PACKAGE,
    ModuleSpec,
    specs_of,
)
from splitstone.kernel.module import Module

MAX_LINKS_SHOWN = 5


class ArchCheckError(Exception):
    """The check cannot run at all (the package cannot be found, say); distinct from a broken rule."""


RULES: dict[str, str] = {
    "declarations": "Every package under modules/ is a declared module whose contract lives in its api",
    "kernel-independent": "The kernel imports no module",
    "contract-only": "Only a module's api is public (and its declaration, to the composition root)",
    "api-standalone": "Importing a module's api loads none of its implementation",
    "acyclic": "No cycles between modules",
    "declared-dependencies": "Each module imports exactly the modules it declares (contracts, events)",
}


def check_modules(
    root: str, modules: Sequence[Module], *, composition_root: str = COMPOSITION_ROOT
) -> ArchReport:
    """Check the package `root` against the declarations of the modules it is made of."""
    return check_architecture(root, specs_of(modules), composition_root=composition_root)


def check_architecture(
    root: str, modules: Sequence[ModuleSpec], *, composition_root: str = COMPOSITION_ROOT
) -> ArchReport:
    """Check every rule; `root` must be importable (installed, or on `sys.path`) but is not imported."""
    layout = _Layout.build(root, modules, composition_root)
    results = {rule_id: list[Violation]() for rule_id in RULES}
    warnings: list[str] = []
    results["declarations"] = _declarations(layout)
    if layout.modules_package not in layout.graph.modules:
        return _report(layout, results, warnings)
    if layout.kernel in layout.graph.modules:
        results["kernel-independent"] = _kernel_imports_no_module(layout, warnings)
    else:
        warnings.append(f"{layout.kernel} not found; the kernel rule was not checked")
    results["contract-only"] = _contract_only(layout, warnings)
    results["api-standalone"] = _api_standalone(layout, warnings)
    results["acyclic"] = _acyclic(layout, warnings)
    results["declared-dependencies"] = _declared_dependencies(layout)
    return _report(layout, results, warnings)


def _report(layout: _Layout, results: Mapping[str, list[Violation]], warnings: list[str]) -> ArchReport:
    return ArchReport(
        root=layout.root,
        rules=tuple(RuleResult(rule_id, title, tuple(results[rule_id])) for rule_id, title in RULES.items()),
        warnings=tuple(warnings),
    )


@dataclass
class _Layout:
    """The root package's graph, and where modules, the kernel and the composition root are in it."""

    root: str
    graph: ImportGraph
    specs: dict[str, ModuleSpec]
    composition_root: str
    _cross: dict[tuple[str, str], list[ImportLink]] | None = field(default=None, repr=False)

    @classmethod
    def build(cls, root: str, modules: Sequence[ModuleSpec], composition_root: str) -> _Layout:
        if "." in root or not root.isidentifier():
            raise ArchCheckError(f"{root!r} is not a top-level package name")
        found = importlib.util.find_spec(root)
        if found is None or found.submodule_search_locations is None:
            raise ArchCheckError(f"package {root!r} cannot be found: is it installed, or on sys.path?")
        specs: dict[str, ModuleSpec] = {}
        for module in modules:
            if module.name in specs:
                raise ArchCheckError(f"two modules are named {module.name!r}")
            specs[module.name] = module
        graph = grimp.build_graph(root, cache_dir=None)
        return cls(root, graph, dict(sorted(specs.items())), f"{root}.{composition_root}")

    @property
    def modules_package(self) -> str:
        return f"{self.root}.{MODULES_PACKAGE}"

    @property
    def kernel(self) -> str:
        return f"{self.root}.{KERNEL_PACKAGE}"

    def package(self, name: str) -> str:
        return f"{self.modules_package}.{name}"

    def api(self, name: str) -> str:
        return f"{self.package(name)}.{CONTRACT_MODULE}"

    def owner(self, dotted: str) -> str | None:
        """The module whose package holds `dotted`, if any."""
        prefix = self.modules_package + "."
        if not dotted.startswith(prefix):
            return None
        return dotted[len(prefix) :].split(".", 1)[0]

    def members(self, name: str) -> set[str]:
        package = self.package(name)
        if package not in self.graph.modules:
            return set()
        return {package, *self.graph.find_descendants(package)}

    def contract_of(self, name: str) -> str:
        spec = self.specs.get(name)
        return spec.contract_name if spec else f"the contract in {self.api(name)}"

    def link(self, importer: str, imported: str) -> ImportLink:
        details = self.graph.get_import_details(importer=importer, imported=imported)
        lines = sorted({d["line_number"] for d in details if d["line_number"] is not None})
        return ImportLink(importer, imported, tuple(lines))

    def cross_imports(self) -> dict[tuple[str, str], list[ImportLink]]:
        """(importing module, imported module) -> the direct imports between their packages."""
        if self._cross is None:
            cross: dict[tuple[str, str], list[ImportLink]] = defaultdict(list)
            for importer in sorted(self.graph.modules):
                source = self.owner(importer)
                if source is None:
                    continue
                for imported in sorted(self.graph.find_modules_directly_imported_by(importer)):
                    target = self.owner(imported)
                    if target is not None and target != source:
                        cross[source, target].append(self.link(importer, imported))
            self._cross = dict(cross)
        return self._cross

    def run(self, contract_type: type[Contract], name: str, options: dict[str, Any]) -> ContractCheck:
        """Check one import-linter contract on a copy of the graph (contracts may remove imports)."""
        importlinter_configuration.configure()
        contract = contract_type(
            name=name, session_options={"root_packages": [self.root]}, contract_options=options
        )
        return contract.check(copy.deepcopy(self.graph), verbose=False)


def _is_in(dotted: str, package: str) -> bool:
    return dotted == package or dotted.startswith(package + ".")


def _links(chain: Iterable[Mapping[str, Any]]) -> tuple[ImportLink, ...]:
    return tuple(
        ImportLink(
            link["importer"],
            link["imported"],
            tuple(sorted({n for n in link["line_numbers"] if n is not None})),
        )
        for link in chain
    )


def _declarations(layout: _Layout) -> list[Violation]:
    violations: list[Violation] = []
    graph = layout.graph
    if layout.modules_package not in graph.modules:
        return [
            Violation(
                f"{layout.modules_package} does not exist",
                hint=f"business modules live in {layout.modules_package}.<name>",
            )
        ]
    providers = {spec.contract for spec in layout.specs.values()}
    for name, spec in layout.specs.items():
        package, api = layout.package(name), layout.api(name)
        if package not in graph.modules:
            violations.append(
                Violation(
                    f"module '{name}' is declared but {package} does not exist",
                    hint="create the package, or remove the declaration from the composition root",
                )
            )
            continue
        contract_module = spec.contract.partition(":")[0]
        if api not in graph.modules:
            violations.append(
                Violation(
                    f"module '{name}' has no {api}",
                    hint=f"put its contract (Protocol, DTOs, events, errors) in {api}",
                )
            )
        elif not _is_in(contract_module, api):
            violations.append(
                Violation(
                    f"the contract of module '{name}', {spec.contract}, is not in {api}",
                    hint=f"move {spec.contract_name} into {api}: it is the only part of '{name}' "
                    "other modules may import",
                )
            )
        for contract in spec.depends_on:
            if contract not in providers:
                violations.append(
                    Violation(
                        f"module '{name}' depends on {contract}, which no declared module provides",
                        hint="declare the module that provides it, or remove it from depends_on",
                    )
                )
        for event in spec.subscribes_to:
            event_module = event.partition(":")[0]
            publisher = layout.owner(event_module)
            if publisher is None or not _is_in(event_module, layout.api(publisher)):
                violations.append(
                    Violation(
                        f"module '{name}' subscribes to {event}, which is not declared in a module's api",
                        hint="an event is part of its publisher's contract: declare it in that module's api",
                    )
                )
    for child in sorted(graph.find_children(layout.modules_package)):
        name = child.rsplit(".", 1)[1]
        if name not in layout.specs:
            violations.append(
                Violation(
                    f"{child} is not a declared module",
                    hint=f"declare it in the composition root ({layout.composition_root}), "
                    "or move the code into a module",
                )
            )
    return violations


def _kernel_imports_no_module(layout: _Layout, warnings: list[str]) -> list[Violation]:
    check = layout.run(
        ForbiddenContract,
        RULES["kernel-independent"],
        {"source_modules": [layout.kernel], "forbidden_modules": [layout.modules_package]},
    )
    warnings += check.warnings
    violations: list[Violation] = []
    for chains in check.metadata.get("invalid_chains", []):
        for chain in chains["chains"]:
            links = _links(chain)
            first, last = links[0], links[-1]
            via = "" if len(links) == 1 else " via " + " -> ".join(link.imported for link in links[:-1])
            violations.append(
                Violation(
                    f"{first.importer} imports {last.imported}{via}",
                    chain=links,
                    hint="the kernel knows no module: move this code into the module, or have the module "
                    "hand it to the kernel through its declaration (factory, router, subscriptions)",
                )
            )
    return violations


def _contract_only(layout: _Layout, warnings: list[str]) -> list[Violation]:
    modules, kernel, root = layout.modules_package, layout.kernel, layout.root
    check = layout.run(
        ProtectedContract,
        RULES["contract-only"],
        {
            "protected_modules": [f"{modules}.*"],
            "allowed_importers": [],
            "ignore_imports": [
                f"{root}.** -> {modules}.*.{CONTRACT_MODULE}",
                f"{root}.** -> {modules}.*.{CONTRACT_MODULE}.**",
                f"{layout.composition_root} -> {modules}.*.{DECLARATION_MODULE}",
                # The kernel importing a module at all is the kernel rule's to report.
                f"{kernel} -> {modules}.**",
                f"{kernel}.** -> {modules}.**",
            ],
            "unmatched_ignore_imports_alerting": "none",
        },
    )
    warnings += check.warnings
    violations: list[Violation] = []
    for broken in check.metadata.get("illegal_imports", []):
        for link in _links(broken.illegal_links):
            target = layout.owner(link.imported) or "?"
            source = layout.owner(link.importer)
            if source is not None:
                summary = f"module '{source}' imports {link.imported}, which is private to '{target}'"
                hint = (
                    f"use {layout.contract_of(target)} from {layout.api(target)}; "
                    f"if it lacks what '{source}' needs, add that to the contract"
                )
            else:
                summary = f"{link.importer} imports {link.imported}, which is private to '{target}'"
                hint = (
                    f"outside the modules, only the composition root ({layout.composition_root}) imports "
                    f"a module, and only its declaration ({layout.package(target)}.{DECLARATION_MODULE}); "
                    f"other code uses {layout.api(target)}"
                )
            violations.append(Violation(summary, chain=(link,), hint=hint))
    return violations


def _api_standalone(layout: _Layout, warnings: list[str]) -> list[Violation]:
    violations: list[Violation] = []
    for name in layout.specs:
        package, api = layout.package(name), layout.api(name)
        if api not in layout.graph.modules:
            continue
        api_part = {m for m in layout.members(name) if _is_in(m, api)}
        implementation = layout.members(name) - api_part - {package}
        if not implementation:
            continue
        # Importing the api also runs the package's __init__, so that must load nothing either.
        check = layout.run(
            ForbiddenContract,
            f"{RULES['api-standalone']} ({name})",
            {
                "source_modules": sorted(api_part | {package}),
                "forbidden_modules": sorted(implementation),
                "as_packages": "false",
            },
        )
        warnings += check.warnings
        for chains in check.metadata.get("invalid_chains", []):
            for chain in chains["chains"]:
                links = _links(chain)
                violations.append(
                    Violation(
                        f"importing {api} loads {links[-1].imported}, part of the implementation of '{name}'",
                        chain=links,
                        hint=f"a contract imports only the kernel and other contracts: move what {api} "
                        f"needs into it, and keep {package.replace('.', '/')}/__init__.py empty",
                    )
                )
    return violations


def _acyclic(layout: _Layout, warnings: list[str]) -> list[Violation]:
    check = layout.run(
        AcyclicSiblingsContract,
        RULES["acyclic"],
        {"ancestors": [layout.modules_package], "depth": "0"},
    )
    warnings += check.warnings
    breakers: set[tuple[str, str]] = set()
    for imports in check.metadata.get("cycle_breakers_by_package", {}).values():
        breakers |= set(imports)
    cross = layout.cross_imports()
    edges: dict[str, set[str]] = defaultdict(set)
    for source, target in cross:
        edges[source].add(target)
    violations: list[Violation] = []
    seen: set[tuple[str, ...]] = set()
    for importer, imported in sorted(breakers):
        downstream, upstream = layout.owner(importer), layout.owner(imported)
        if downstream is None or upstream is None:
            continue
        back = _shortest_path(edges, upstream, downstream) or [upstream, downstream]
        cycle = [downstream, *back]
        key = _canonical(cycle[:-1])
        if key in seen:
            continue
        seen.add(key)
        chain = tuple(_telling_link(layout, cross[a, b]) for a, b in pairwise(cycle) if (a, b) in cross)
        violations.append(
            Violation(
                f"modules import each other in a cycle: {' -> '.join(cycle)}",
                chain=chain,
                hint=f"keep dependencies one-way, e.g. drop {importer} -> {imported}: let one side react "
                "to the other's events, or move the shared piece into the module that owns it",
            )
        )
    return violations


def _telling_link(layout: _Layout, links: list[ImportLink]) -> ImportLink:
    """An import that shows a real use: from anywhere but the module's declaration, if there is one."""
    for link in links:
        owner = layout.owner(link.importer)
        if owner and not _is_in(link.importer, f"{layout.package(owner)}.{DECLARATION_MODULE}"):
            return link
    return links[0]


def _shortest_path(edges: Mapping[str, set[str]], start: str, goal: str) -> list[str] | None:
    """The shortest path of module names from `start` to `goal` (both included), by breadth-first search."""
    previous: dict[str, str | None] = {start: None}
    queue = deque([start])
    while queue:
        node = queue.popleft()
        if node == goal:
            path: list[str] = []
            step: str | None = node
            while step is not None:
                path.append(step)
                step = previous[step]
            return path[::-1]
        for following in sorted(edges.get(node, ())):
            if following not in previous:
                previous[following] = node
                queue.append(following)
    return None


def _canonical(cycle: list[str]) -> tuple[str, ...]:
    start = cycle.index(min(cycle))
    return tuple(cycle[start:] + cycle[:start])


def _declared_dependencies(layout: _Layout) -> list[Violation]:
    cross = layout.cross_imports()
    provider = {spec.contract: name for name, spec in layout.specs.items()}
    violations: list[Violation] = []
    for name, spec in layout.specs.items():
        declared = {provider[c]: c.partition(":")[2] for c in spec.depends_on if c in provider}
        publishers = {layout.owner(e.partition(":")[0]) for e in spec.subscribes_to} - {None}
        imported = sorted(target for source, target in cross if source == name)
        for target in imported:
            if target in declared or target in publishers:
                continue
            links = cross[name, target]
            count = f" ({len(links)} imports)" if len(links) > 1 else ""
            if target in layout.specs:
                contract = layout.contract_of(target)
                summary = f"module '{name}' imports '{target}' but does not declare {contract}{count}"
                hint = (
                    f"add {contract} to depends_on in {layout.package(name)}.{DECLARATION_MODULE}, or "
                    f"subscribe to the '{target}' events it uses; if neither is meant, remove the import"
                )
            else:
                summary = f"module '{name}' imports {layout.package(target)}, which is not a declared module"
                hint = "declare that module in the composition root, or remove the import"
            violations.append(Violation(summary, chain=tuple(links[:MAX_LINKS_SHOWN]), hint=hint))
        declaration = f"{layout.package(name)}.{DECLARATION_MODULE}"
        for target, contract in sorted(declared.items()):
            links = cross.get((name, target), [])
            if any(not _is_in(link.importer, declaration) for link in links):
                continue
            summary = (
                f"module '{name}' declares {contract} in depends_on but its code never imports '{target}'"
            )
            if links:
                summary += " (only its declaration does)"
            violations.append(
                Violation(
                    summary,
                    chain=tuple(links[:MAX_LINKS_SHOWN]),
                    hint=f"remove {contract} from depends_on in {declaration}, or use it where it is needed",
                )
            )
    return violations
