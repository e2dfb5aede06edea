"""The checkout the generator works in, read as files: its modules, their contracts, their URLs."""

from __future__ import annotations

import ast
import re
from dataclasses import dataclass
from pathlib import Path

from splitstone.scaffold.names import ScaffoldError

PACKAGE = "splitstone"
_MODULE_IMPORT = re.compile(r"^from splitstone\.modules\.(\w+)\.module import module as \w+$", re.MULTILINE)
# `/orgs/{org_id}/<segment>` in a route or prefix (with f-string braces or not), and the first segment of
# routes whose router's prefix ends at the organization.
_ORG_SEGMENT = re.compile(r"orgs/\{\{?org_id\}\}?/([a-z0-9-]+)")
_ORG_PREFIX = re.compile(r"orgs/\{\{org_id\}\}[\"']")
_ROUTE_SEGMENT = re.compile(r"@\w+\.(?:get|post|put|patch|delete)\(\s*[\"']/([a-z0-9-]+)")


@dataclass(frozen=True)
class Project:
    """A splitstone checkout: `root` holds pyproject.toml and src/splitstone."""

    root: Path

    @classmethod
    def find(cls, start: Path) -> Project:
        """The checkout that holds `start` (the current directory, usually)."""
        for folder in (start.resolve(), *start.resolve().parents):
            if (folder / "pyproject.toml").is_file() and (folder / "src" / PACKAGE).is_dir():
                return cls(folder)
        raise ScaffoldError(
            f"{start} is not inside a splitstone checkout (a folder with pyproject.toml and src/{PACKAGE}); "
            "run the command from the repository"
        )

    @property
    def package(self) -> Path:
        return self.root / "src" / PACKAGE

    @property
    def modules_dir(self) -> Path:
        return self.package / "modules"

    @property
    def bootstrap(self) -> Path:
        return self.package / "bootstrap.py"

    def path(self, relative: str) -> Path:
        return self.root / relative

    def registered_modules(self) -> list[str]:
        """The modules the composition root imports, in its order."""
        return _MODULE_IMPORT.findall(self.bootstrap.read_text())

    def contract_of(self, module: str) -> str:
        """The name of the Protocol class in `module`'s api.py."""
        api = self.modules_dir / module / "api.py"
        tree = ast.parse(api.read_text(), filename=str(api))
        protocols = [
            node.name
            for node in tree.body
            if isinstance(node, ast.ClassDef)
            and any(isinstance(b, ast.Name) and b.id == "Protocol" for b in node.bases)
        ]
        if len(protocols) != 1:
            raise ScaffoldError(
                f"{api} declares {len(protocols)} Protocol classes; expected its one contract"
            )
        return protocols[0]

    def taken_url_segments(self) -> dict[str, str]:
        """URL segment right after `/orgs/{org_id}/` -> the module whose routes use it."""
        taken: dict[str, str] = {}
        for source in sorted(self.modules_dir.glob("*/*.py")):
            text = source.read_text()
            found = set(_ORG_SEGMENT.findall(text))
            if _ORG_PREFIX.search(text):
                found |= set(_ROUTE_SEGMENT.findall(text))
            for segment in found:
                taken.setdefault(segment, source.parent.name)
        return taken
