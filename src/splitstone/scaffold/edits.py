"""Edits of existing files: above a marker comment, into the composition root, into topologies.

Each function takes a file's text and returns the new text, or raises `ScaffoldError` naming the file
and what is missing, so the generator can compute every edit before it writes anything.
"""

from __future__ import annotations

import re
import tomllib
from collections.abc import Sequence

from splitstone.scaffold.names import ScaffoldError

MARKER = "new-module inserts above this line"


def marker(slot: str) -> str:
    """The comment text of an insertion point: `# new-module inserts above this line: <slot>`."""
    return f"{MARKER}: {slot}"


def insert_above(text: str, slot: str, lines: Sequence[str], *, where: str) -> str:
    """`lines` inserted above the marker line of `slot` (a `#` or an HTML comment), indented as it is."""
    comments = {f"# {marker(slot)}", f"<!-- {marker(slot)} -->"}
    found = [i for i, line in enumerate(text.splitlines()) if line.strip() in comments]
    if len(found) != 1:
        problem = "has no" if not found else f"has {len(found)}"
        raise ScaffoldError(
            f"{where} {problem} '{marker(slot)}' comment; it marks where `splitstone new-module` adds "
            "entries (see docs/architecture.md, Growth tooling): put one back where they belong"
        )
    rows = text.splitlines(keepends=True)
    index = found[0]
    indent = rows[index][: len(rows[index]) - len(rows[index].lstrip())]
    rows[index:index] = [f"{indent}{line}\n" if line else "\n" for line in lines]
    return "".join(rows)


def register_in_bootstrap(text: str, module: str, *, where: str) -> str:
    """The module's declaration imported (in sorted place) and listed in `MODULES` (above its marker)."""
    import_line = f"from splitstone.modules.{module}.module import module as {module}\n"
    rows = text.splitlines(keepends=True)
    imports = [
        i for i, row in enumerate(rows) if re.match(r"from splitstone\.modules\.\w+\.module import", row)
    ]
    if not imports:
        raise ScaffoldError(
            f"{where} imports no module declaration (from splitstone.modules.<name>.module ...)"
        )
    position = next((i for i in imports if rows[i] > import_line), imports[-1] + 1)
    rows.insert(position, import_line)
    return insert_above("".join(rows), "modules", [f"{module},"], where=where)


def add_to_service(text: str, service: str, module: str, *, database_url: str | None, where: str) -> str:
    """Topology text with `module` in `[services.<service>]`'s modules (and its database URL, if given)."""
    rows = text.splitlines(keepends=True)
    start = _section(rows, f"services.{service}", where=where)
    end = _section_end(rows, start)
    key = next((i for i in range(start + 1, end) if re.match(r"\s*modules\s*=", rows[i])), None)
    if key is None:
        raise ScaffoldError(f"{where}: [services.{service}] has no modules list")
    closing = next((i for i in range(key, end) if "]" in rows[i].split("#", 1)[0]), None)
    if closing is None:
        raise ScaffoldError(f"{where}: the modules list of [services.{service}] does not end")
    if closing == key:  # one line: modules = ["a", "b"]  # comment
        code, hash_, comment = rows[key].rstrip("\n").partition("#")
        listed = tomllib.loads(code)["modules"]
        rebuilt = "modules = [" + ", ".join(f'"{m}"' for m in [*listed, module]) + "]"
        rows[key] = rebuilt + (f"  #{comment}" if hash_ else "") + "\n"
    else:  # one module a line: the new one above the closing bracket
        indent = re.match(r"\s*", rows[closing - 1]).group(0)  # type: ignore[union-attr]
        rows.insert(closing, f'{indent}"{module}",\n')
    if database_url is not None:
        rows = _add_database_url(rows, service, module, database_url, where=where)
    result = "".join(rows)
    parsed = tomllib.loads(result)["services"][service]
    if module not in parsed["modules"] or (
        database_url and parsed["database_urls"].get(module) != database_url
    ):
        raise ScaffoldError(f"{where}: could not add {module} to [services.{service}]; add it by hand")
    return result


def _add_database_url(rows: list[str], service: str, module: str, url: str, *, where: str) -> list[str]:
    line = f'{module} = "{url}"\n'
    header = f"services.{service}.database_urls"
    if any(row.strip() == f"[{header}]" for row in rows):
        start = _section(rows, header, where=where)
        end = _section_end(rows, start)
        last = max(i for i in range(start, end) if rows[i].strip() and not rows[i].lstrip().startswith("#"))
        return [*rows[: last + 1], line, *rows[last + 1 :]]
    start = _section(rows, f"services.{service}", where=where)
    last = max(i for i in range(start, _section_end(rows, start)) if rows[i].strip())
    return [*rows[: last + 1], "\n", f"[{header}]\n", line, *rows[last + 1 :]]


def _section(rows: list[str], name: str, *, where: str) -> int:
    for i, row in enumerate(rows):
        if row.strip() == f"[{name}]":
            return i
    raise ScaffoldError(f"{where} has no [{name}] section")


def _section_end(rows: list[str], start: int) -> int:
    return next((i for i in range(start + 1, len(rows)) if rows[i].lstrip().startswith("[")), len(rows))
