"""`splitstone arch explain MODULE`: one screen on a module, for an engineer who has never opened it."""

from __future__ import annotations

import ast
import textwrap
from collections import defaultdict
from collections.abc import Sized
from pathlib import Path

from splitstone.kernel.arch.metrics_model import ModuleMetrics, ProjectMetrics
from splitstone.kernel.arch.spec import CONTRACT_MODULE, MODULES_PACKAGE

WIDTH = 100


def explain(metrics: ProjectMetrics, name: str, *, package_dir: Path, repo: Path) -> str:
    """What the module does, its contract, who it depends on and who on it, its events, tables and
    settings, and how to run its tests and read its docs. `repo` is where tests/ and docs/ are looked up."""
    module = metrics.module(name)
    package = package_dir / MODULES_PACKAGE / name
    lines = [f"{name}: {module.description or 'no description'}"]
    lines += _wrap(_contract_story(package), "  ")
    lines += ["", f"Contract {module.contract or '(none)'}: {_count(module.methods, 'method')}"]
    lines += [f"  {m.name}(): {_clip(m.summary, WIDTH - len(m.name) - 6)}" for m in module.methods]
    lines += [
        "",
        f"Depends on: {_names(module.depends_on)}",
        f"Used by: {_names(module.used_by)}   (Ca {module.ca}, Ce {module.ce}, "
        f"instability {module.instability:.2f})",
    ]
    lines += _events(module)
    lines += [""]
    lines += _wrap(f"Tables: {_names(module.tables)}", "", "  ")
    lines.append(f"Settings: {_settings(module)}")
    lines += _wrap(f"Jobs: {_names(module.jobs)}", "", "  ")
    lines.append(f"Routes: {module.routes}")
    lines += ["", *_where(name, repo)]
    return "\n".join(lines) + "\n"


def _contract_story(package: Path) -> str:
    """The api docstring after its first paragraph (which only says that it is the contract)."""
    doc = ast.get_docstring(ast.parse((package / f"{CONTRACT_MODULE}.py").read_text(encoding="utf-8")))
    paragraphs = (doc or "").split("\n\n")
    return " ".join(" ".join(paragraphs[1:] or paragraphs).split())


def _events(module: ModuleMetrics) -> list[str]:
    by_consumer: dict[str, list[str]] = defaultdict(list)
    for event in module.events_published:
        for consumer in event.consumed_by or ["nobody yet"]:
            by_consumer[consumer].append(event.class_name)
    by_publisher: dict[str, list[str]] = defaultdict(list)
    for consumed in module.events_consumed:
        by_publisher[consumed.publisher].append(consumed.class_name)
    lines = [
        "",
        f"Publishes {_count(module.events_published, 'event')}" + (":" if module.events_published else "."),
    ]
    for consumer, names in sorted(by_consumer.items(), key=lambda item: (item[0] == "nobody yet", item[0])):
        lines += _wrap(f"→ {consumer} listens to {', '.join(names)}", "  ", "      ")
    lines.append(
        f"Listens to {_count(module.events_consumed, 'event')}" + (":" if module.events_consumed else ".")
    )
    for publisher, names in sorted(by_publisher.items()):
        lines += _wrap(f"← from {publisher}: {', '.join(names)}", "  ", "      ")
    return lines


def _settings(module: ModuleMetrics) -> str:
    if not module.settings:
        return "none"
    first = module.settings[0]
    prefix = first.env[: len(first.env) - len(first.name)]
    return f"{len(module.settings)}, environment variables {prefix}*"


def _where(name: str, repo: Path) -> list[str]:
    lines = [f"Tests alone: pytest tests/modules/{name}"]
    journey = Path("tests") / "e2e" / f"test_{name}_journey.py"
    if (repo / journey).is_file():
        lines.append(f"Its journey (e2e): pytest {journey.as_posix()}")
    doc = Path("docs") / f"{name}.md"
    lines.append(f"Docs: {doc.as_posix()}" if (repo / doc).is_file() else "Docs: docs/modules.md (canvas)")
    return lines


def _count(items: Sized, noun: str) -> str:
    return f"{len(items)} {noun}{'' if len(items) == 1 else 's'}"


def _names(items: tuple[str, ...]) -> str:
    return ", ".join(items) if items else "none"


def _wrap(text: str, indent: str = "", subsequent: str | None = None) -> list[str]:
    return textwrap.wrap(
        text, WIDTH, initial_indent=indent, subsequent_indent=indent if subsequent is None else subsequent
    )


def _clip(text: str, width: int) -> str:
    return text if len(text) <= width else text[: width - 1].rstrip() + "…"
