"""A new module's name, checked, and every name derived from it (class, URL segment, env variable)."""

from __future__ import annotations

import builtins
import keyword
import re
from dataclasses import dataclass

from sqlalchemy.dialects.postgresql.base import RESERVED_WORDS

MAX_NAME_LENGTH = 30
"""PostgreSQL names hold 63 bytes; the split test deployment names a module's role
`<database>_<module>` with a 30-character database name, and the role `splitstone_<module>` too."""

_SHAPE = re.compile(r"^[a-z][a-z0-9]*(_[a-z0-9]+)*$")

RESERVED = {
    "api": "a module's contract file is called api",
    "kernel": "the kernel is splitstone.kernel",
    "modules": "the package that holds the modules",
    "module": "a module's declaration file is called module",
    "test": "the test suite's name",
    "tests": "the test suite's name",
    "scaffold": "the generator itself",
    "bootstrap": "the composition root",
    "cli": "the command line",
    "splitstone": "the product",
    "main": "SQLite's own database name",
    "temp": "SQLite's temporary database name",
    "public": "PostgreSQL's default schema",
    "information_schema": "PostgreSQL's catalog schema",
}
"""Names that a module may not take, and why."""


class ScaffoldError(Exception):
    """The generator refuses: a bad name, an existing module, unknown dependencies, a missing marker."""


@dataclass(frozen=True)
class ModuleNames:
    """Everything named after the module `name` (e.g. `invoicing_exports`)."""

    name: str

    @property
    def camel(self) -> str:
        return "".join(part.capitalize() for part in self.name.split("_"))

    @property
    def contract(self) -> str:
        return f"{self.camel}Api"

    @property
    def service(self) -> str:
        return f"{self.camel}Service"

    @property
    def dashed(self) -> str:
        """The URL segment: `/api/v1/orgs/{org_id}/invoicing-exports`."""
        return self.name.replace("_", "-")

    @property
    def title(self) -> str:
        return self.name.replace("_", " ").capitalize()

    @property
    def item_param(self) -> str:
        """The item's path parameter, unique across modules (the route tables key on it)."""
        return f"{self.name}_item_id"

    @property
    def env_prefix(self) -> str:
        return f"SPLITSTONE_{self.name.upper()}"


def check_name(name: str) -> ModuleNames:
    """`ModuleNames` for a valid module name; `ScaffoldError` saying why anything else is refused."""
    if "-" in name and _SHAPE.match(name.replace("-", "_")):
        raise ScaffoldError(f"{name!r}: a module name is a Python identifier; try {name.replace('-', '_')!r}")
    if name.startswith("_"):
        raise ScaffoldError(f"{name!r}: a module name may not start with an underscore")
    if not _SHAPE.match(name):
        raise ScaffoldError(
            f"{name!r}: a module name is lowercase letters and digits in words joined by single "
            "underscores, starting with a letter (e.g. invoicing_exports)"
        )
    if len(name) > MAX_NAME_LENGTH:
        raise ScaffoldError(
            f"{name!r} is {len(name)} characters; a module name has at most {MAX_NAME_LENGTH}, so that "
            "the PostgreSQL schema and role names derived from it fit"
        )
    if keyword.iskeyword(name) or keyword.issoftkeyword(name):
        raise ScaffoldError(f"{name!r} is a Python keyword")
    if name in RESERVED:
        raise ScaffoldError(f"{name!r} is reserved: {RESERVED[name]}")
    if name.startswith("pg_"):
        raise ScaffoldError(f"{name!r}: PostgreSQL reserves schema names starting with pg_")
    if name in RESERVED_WORDS:
        raise ScaffoldError(f"{name!r} is an SQL reserved word; it would name the module's schema")
    if hasattr(builtins, name):
        raise ScaffoldError(
            f"{name!r} is a Python builtin; the composition root imports the module by its name"
        )
    return ModuleNames(name)
