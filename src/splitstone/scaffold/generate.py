"""Plan a new module (every file to write and every edit, checked before anything is written), then
write it, format it and regenerate the docs that are generated from the declarations."""

from __future__ import annotations

import datetime
import json
import os
import subprocess
import sys
import tomllib
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import jinja2

from splitstone.scaffold import edits
from splitstone.scaffold.names import ModuleNames, ScaffoldError, check_name
from splitstone.scaffold.project import Project

TEMPLATES = Path(__file__).parent / "templates"
AUTH = "auth"
DEFAULT_DESCRIPTION = "A new module: say here what it does."
MAX_DESCRIPTION = 80
"""One line of the diagram, the CLI help and a docstring: the generated lines stay under 110 characters."""
REGENERATED = (("diagram",), ("events",), ("contracts",), ("report", "--markdown"))
"""The `splitstone arch` commands run after writing: the diagram in docs/architecture.md, docs/events.md,
docs/contracts.json and docs/modules.md."""


@dataclass(frozen=True)
class Dependency:
    name: str
    contract: str


@dataclass
class Plan:
    """What generating a module does: new files, changed files (their whole new text), and notes."""

    project: Project
    names: ModuleNames
    dependencies: list[Dependency]
    service: str
    """The service of topologies/split.toml that runs the module."""
    writes: dict[Path, str] = field(default_factory=dict)
    changes: dict[Path, str] = field(default_factory=dict)
    notes: list[str] = field(default_factory=list)

    def relative(self, path: Path) -> str:
        return str(path.relative_to(self.project.root))


def plan_module(
    project: Project, name: str, depends_on: list[str], *, description: str = DEFAULT_DESCRIPTION
) -> Plan:
    """Everything `new-module` would do; `ScaffoldError` (and nothing decided) for any refusal."""
    names = check_name(name)
    registered = project.registered_modules()
    if name in registered or (project.modules_dir / name).exists():
        raise ScaffoldError(f"module {name!r} already exists (src/splitstone/modules/{name} or bootstrap.py)")
    dependencies = _dependencies(project, names, depends_on, registered)
    segment = project.taken_url_segments().get(names.dashed)
    if segment is not None:
        raise ScaffoldError(
            f"{name!r}: its routes would be /api/v1/orgs/{{org_id}}/{names.dashed}, which module "
            f"{segment!r} already serves; pick another name"
        )
    _check_description(description)
    split = _read_toml(project, "topologies/split.toml")
    plan = Plan(project, names, dependencies, _service_for(split, dependencies))
    _plan_files(plan, description)
    _plan_edits(plan)
    clashes = [plan.relative(p) for p in plan.writes if p.exists()]
    if clashes:
        raise ScaffoldError(
            f"these files exist already: {', '.join(clashes)}; move them away or pick another name"
        )
    return plan


def _dependencies(
    project: Project, names: ModuleNames, depends_on: list[str], registered: list[str]
) -> list[Dependency]:
    wanted = list(dict.fromkeys(d.strip() for d in depends_on if d.strip()))
    if names.name in wanted:
        raise ScaffoldError(f"module {names.name!r} cannot depend on itself")
    unknown = [d for d in wanted if d not in registered]
    if unknown:
        raise ScaffoldError(
            f"unknown module(s) in --depends-on: {', '.join(unknown)}; "
            f"the modules are: {', '.join(sorted(registered))}"
        )
    if AUTH not in registered:
        raise ScaffoldError(
            "the generated module needs the auth module (AuthApi), which bootstrap.py does not list"
        )
    return [Dependency(d, project.contract_of(d)) for d in wanted if d != AUTH]


def _check_description(description: str) -> None:
    if not description.strip() or len(description) > MAX_DESCRIPTION or not description.isprintable():
        raise ScaffoldError(f"--description is one line of 1 to {MAX_DESCRIPTION} printable characters")
    if any(c in description for c in '"\\`'):
        raise ScaffoldError("--description may not hold quotes, backslashes or backticks")


def _read_toml(project: Project, relative: str) -> dict[str, object]:
    path = project.path(relative)
    if not path.is_file():
        raise ScaffoldError(f"{relative} not found; the generator registers the module there")
    return tomllib.loads(path.read_text())


def _service_for(topology: dict[str, object], dependencies: list[Dependency]) -> str:
    """The service that runs the module's first dependency other than auth (its calls stay in-process);
    without one, the busiest service that does not run auth (auth's service stays small)."""
    services: dict[str, dict[str, list[str]]] = topology.get("services", {})  # type: ignore[assignment]
    for dependency in dependencies:
        for service, body in services.items():
            if dependency.name in body.get("modules", []):
                return service
    candidates = [s for s, body in services.items() if AUTH not in body.get("modules", [])] or list(services)
    return max(candidates, key=lambda s: len(services[s].get("modules", [])))


def _environment() -> jinja2.Environment:
    # `[[ ]]` and `[% %]`: the templates are Python, whose f-strings use `{{ }}` themselves.
    environment = jinja2.Environment(
        loader=jinja2.FileSystemLoader(TEMPLATES),
        variable_start_string="[[",
        variable_end_string="]]",
        block_start_string="[%",
        block_end_string="%]",
        comment_start_string="[#",
        comment_end_string="#]",
        keep_trailing_newline=True,
        trim_blocks=True,
        lstrip_blocks=True,
        undefined=jinja2.StrictUndefined,
        autoescape=False,  # noqa: S701 (Python and Markdown, not HTML)
    )
    environment.filters["py"] = json.dumps
    return environment


def _plan_files(plan: Plan, description: str) -> None:
    names, root = plan.names, plan.project.root
    contracts = [("AuthApi", AUTH), *((d.contract, d.name) for d in plan.dependencies)]
    context = {
        "name": names.name,
        "title": names.title,
        "camel": names.camel,
        "contract": names.contract,
        "service": names.service,
        "dashed": names.dashed,
        "item_param": names.item_param,
        "description": description.strip(),
        "deps": plan.dependencies,
        "depends_on": "[" + ", ".join(c for c, _ in contracts) + "]",
        "depends_on_docs": " and ".join(f"`{c}` ({m})" for c, m in contracts),
        "today": datetime.date.today().isoformat(),
    }
    environment = _environment()
    package = plan.project.modules_dir / names.name
    tests = root / "tests" / "modules" / names.name
    targets = {
        "module": package,
        "tests": tests,
    }
    for template in sorted(environment.list_templates(filter_func=lambda t: t.endswith(".j2"))):
        folder, _, rest = template.partition("/")
        target = rest.removesuffix(".j2")
        if folder == "docs":
            path = root / "docs" / f"{names.name}.md"
        elif target == "e2e_journey.py":
            path = root / "tests" / "e2e" / f"test_{names.name}_journey.py"
        else:
            path = targets[folder] / target
        plan.writes[path] = environment.get_template(template).render(context)
    house_script = plan.project.modules_dir / AUTH / "migrations" / "script.py.mako"
    if not house_script.is_file():
        raise ScaffoldError(
            f"{plan.relative(house_script)} not found: the generator copies the house migration script"
        )
    plan.writes[package / "migrations" / "script.py.mako"] = house_script.read_text()


def _plan_edits(plan: Plan) -> None:
    names, project = plan.names, plan.project

    def edit(relative: str, change: Callable[[str, str], str]) -> None:
        path = project.path(relative)
        if not path.is_file():
            raise ScaffoldError(f"{relative} not found")
        plan.changes[path] = change(plan.changes.get(path, path.read_text()), relative)

    edit("src/splitstone/bootstrap.py", lambda t, w: edits.register_in_bootstrap(t, names.name, where=w))
    edit(
        "topologies/monolith.toml",
        lambda t, w: edits.add_to_service(t, _only_service(t, w), names.name, database_url=None, where=w),
    )
    edit(
        "topologies/split.toml",
        lambda t, w: edits.add_to_service(
            t, plan.service, names.name, database_url=_database_url(t, names), where=w
        ),
    )
    for relative, slots in _route_table_entries(names).items():
        for slot, lines in slots.items():
            edit(relative, _inserter(slot, lines))
    readme = project.path("README.md")
    link = f"- [docs/{names.name}.md](docs/{names.name}.md): {names.title} (`splitstone new-module`)"
    if readme.is_file() and edits.marker("module docs") in readme.read_text():
        plan.changes[readme] = edits.insert_above(
            readme.read_text(), "module docs", [link], where="README.md"
        )
    else:
        plan.notes.append(
            f"link docs/{names.name}.md from README.md where the other modules' docs are linked"
        )


def _inserter(slot: str, lines: list[str]) -> Callable[[str, str], str]:
    return lambda text, where: edits.insert_above(text, slot, lines, where=where)


def _only_service(text: str, where: str) -> str:
    services = list(tomllib.loads(text).get("services", {}))
    if len(services) != 1:
        raise ScaffoldError(f"{where}: expected the one service of the monolith, found {services}")
    return str(services[0])


def _database_url(text: str, names: ModuleNames) -> str:
    """A database URL entry like its neighbours': the module's own role, from its env variable."""
    default = f"postgresql+asyncpg://splitstone_{names.name}@127.0.0.1:5432/splitstone"
    for body in tomllib.loads(text).get("services", {}).values():
        for module, url in body.get("database_urls", {}).items():
            prefix, found, rest = url.partition(f"splitstone_{module}@")
            if found and prefix.startswith("${") and ":-" in prefix:
                default = prefix.split(":-", 1)[1] + f"splitstone_{names.name}@" + rest.removesuffix("}")
                break
    return f"${{{names.env_prefix}_DATABASE_URL:-{default}}}"


def _route_table_entries(names: ModuleNames) -> dict[str, dict[str, list[str]]]:
    """file -> marker slot -> the lines above it: the new routes in the suites that cover every route."""
    org, item, dashed = "{ORG}", f"{{{{{names.item_param}}}}}", names.dashed
    return {
        "tests/security/test_role_matrix.py": {
            "EXPECTED": [
                f'f"GET {org}/{dashed}": Need(P.ORG_READ),',
                f'f"POST {org}/{dashed}": Need(P.ORG_UPDATE, ADMIN),',
                f'f"GET {org}/{dashed}/{item}": Need(P.ORG_READ),',
            ],
        },
        "tests/security/tenancy_support.py": {
            "RESOURCE_PARAMS": [f'"{names.item_param}": "{names.item_param}",'],
            "Tenant fields": [f'{names.item_param}: str = ""'],
            "BODIES": [f'"POST /api/v1/orgs/{{org_id}}/{dashed}": lambda t: {{"title": "Planted"}},'],
            "tenant resources": [
                f"{names.name}_item = await self.call(",
                f'    "POST", f"{{base}}/{dashed}", owner, 201, json={{"title": f"{{name}} secret item"}}',
                ")",
                f'tenant.{names.item_param} = str({names.name}_item["id"])',
            ],
        },
    }


# -- writing ----------------------------------------------------------------------------------------------


def write_plan(plan: Plan) -> None:
    """Write the files and edits, format the Python among them, and regenerate the generated docs.

    The regeneration runs `splitstone arch ...` in a new process, so the new module is imported fresh
    (from this checkout's src, whatever package the running process imported).
    """
    for path, text in {**plan.writes, **plan.changes}.items():
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text)
    python = [str(p) for p in (*plan.writes, *plan.changes) if p.suffix == ".py"]
    _run(plan, [sys.executable, "-m", "ruff", "check", "--select", "I", "--fix", "--quiet", *python])
    _run(plan, [sys.executable, "-m", "ruff", "format", "--quiet", *python])
    for command in REGENERATED:
        _run(plan, [sys.executable, "-m", "splitstone", "arch", *command])


def _run(plan: Plan, command: list[str]) -> None:
    source = str(plan.project.root / "src")
    environ = {
        **os.environ,
        "PYTHONPATH": os.pathsep.join(filter(None, [source, os.environ.get("PYTHONPATH")])),
    }
    done = subprocess.run(  # noqa: S603 (this interpreter, fixed arguments)
        command, cwd=plan.project.root, env=environ, capture_output=True, text=True, check=False
    )
    if done.returncode != 0:
        shown = " ".join(command[1:] if command[0] == sys.executable else command)
        raise ScaffoldError(
            f"the module is written, but `{shown}` failed (exit {done.returncode}):\n"
            f"{done.stdout}{done.stderr}"
        )
