"""What `splitstone arch report` finds: each module's numbers and canvas, as plain values with their JSON."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any


class MetricsError(ValueError):
    """The directory given is not a package with a modules/ folder."""


@dataclass(frozen=True)
class ContractMethod:
    name: str
    summary: str
    used_by: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "summary": self.summary, "used_by": list(self.used_by)}


@dataclass(frozen=True)
class PublishedEvent:
    name: str
    class_name: str
    consumed_by: tuple[str, ...]

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "class": self.class_name, "consumed_by": list(self.consumed_by)}


@dataclass(frozen=True)
class ConsumedEvent:
    name: str
    class_name: str
    publisher: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "class": self.class_name, "publisher": self.publisher}


@dataclass(frozen=True, order=True)
class ImportEdge:
    """A cross-boundary import: the importing file's module, the module it imports, the line."""

    importer: str
    imported: str
    line: int

    def to_json(self) -> dict[str, Any]:
        return {"importer": self.importer, "imported": self.imported, "line": self.line}


@dataclass(frozen=True)
class Setting:
    name: str
    type: str
    default: str | None
    env: str

    def to_json(self) -> dict[str, Any]:
        return {"name": self.name, "type": self.type, "default": self.default, "env": self.env}


@dataclass(frozen=True)
class ModuleMetrics:
    name: str
    description: str
    contract: str | None
    methods: tuple[ContractMethod, ...]
    depends_on: tuple[str, ...]
    used_by: tuple[str, ...]
    events_published: tuple[PublishedEvent, ...]
    events_consumed: tuple[ConsumedEvent, ...]
    imports_in: int
    imports_out: int
    non_contract_imports: tuple[ImportEdge, ...]
    loc: int
    files: int
    tests: int
    settings: tuple[Setting, ...]
    tables: tuple[str, ...]
    jobs: tuple[str, ...]
    routes: int

    @property
    def ca(self) -> int:
        """Afferent coupling: how many modules import this one."""
        return len(self.used_by)

    @property
    def ce(self) -> int:
        """Efferent coupling: how many modules this one imports."""
        return len(self.depends_on)

    @property
    def instability(self) -> float:
        """Ce / (Ca + Ce), to two places: 0 when nothing depends on anything, 1 when only outgoing."""
        total = self.ca + self.ce
        return round(self.ce / total, 2) if total else 0.0

    @property
    def methods_used(self) -> int:
        """Contract methods at least one other module calls."""
        return sum(1 for method in self.methods if method.used_by)

    def to_json(self) -> dict[str, Any]:
        return {
            "name": self.name,
            "description": self.description,
            "contract": self.contract,
            "methods": [m.to_json() for m in self.methods],
            "depends_on": list(self.depends_on),
            "used_by": list(self.used_by),
            "ca": self.ca,
            "ce": self.ce,
            "instability": self.instability,
            "events_published": [e.to_json() for e in self.events_published],
            "events_consumed": [e.to_json() for e in self.events_consumed],
            "imports_in": self.imports_in,
            "imports_out": self.imports_out,
            "non_contract_imports": [e.to_json() for e in self.non_contract_imports],
            "loc": self.loc,
            "files": self.files,
            "tests": self.tests,
            "settings": [s.to_json() for s in self.settings],
            "tables": list(self.tables),
            "jobs": list(self.jobs),
            "routes": self.routes,
        }


@dataclass(frozen=True)
class ProjectMetrics:
    package: str
    modules: tuple[ModuleMetrics, ...]
    # Every cross-boundary import, for cross-checks; not part of the JSON.
    cross_imports: tuple[ImportEdge, ...] = ()

    def module(self, name: str) -> ModuleMetrics:
        for module in self.modules:
            if module.name == name:
                return module
        raise KeyError(name)

    @property
    def names(self) -> list[str]:
        return [m.name for m in self.modules]

    def to_json(self) -> dict[str, Any]:
        return {"package": self.package, "modules": [m.to_json() for m in self.modules]}
