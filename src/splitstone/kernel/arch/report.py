"""The result of an architecture check: each rule, kept or broken, with the imports that break it."""

from __future__ import annotations

from dataclasses import dataclass, field


@dataclass(frozen=True, order=True)
class ImportLink:
    """One import statement (or several between the same two modules), with its line numbers."""

    importer: str
    imported: str
    lines: tuple[int, ...] = ()

    def __str__(self) -> str:
        if not self.lines:
            return f"{self.importer} -> {self.imported}"
        label = "line" if len(self.lines) == 1 else "lines"
        return f"{self.importer} -> {self.imported} ({label} {', '.join(map(str, self.lines))})"


@dataclass(frozen=True)
class Violation:
    """One way a rule is broken: what is wrong, the import chain that shows it, and how to fix it."""

    summary: str
    chain: tuple[ImportLink, ...] = ()
    hint: str = ""


@dataclass(frozen=True)
class RuleResult:
    id: str
    title: str
    violations: tuple[Violation, ...] = ()

    @property
    def kept(self) -> bool:
        return not self.violations


@dataclass(frozen=True)
class ArchReport:
    root: str
    rules: tuple[RuleResult, ...] = ()
    warnings: tuple[str, ...] = field(default=())

    @property
    def ok(self) -> bool:
        return all(rule.kept for rule in self.rules)

    @property
    def violations(self) -> list[Violation]:
        return [v for rule in self.rules for v in rule.violations]

    def rule(self, rule_id: str) -> RuleResult:
        for rule in self.rules:
            if rule.id == rule_id:
                return rule
        raise KeyError(f"no rule {rule_id!r} (rules: {', '.join(r.id for r in self.rules)})")

    def render(self) -> str:
        """A plain-text report: one line per rule, then each violation with its chain and a fix hint."""
        lines = [f"Architecture of {self.root}:"]
        for rule in self.rules:
            mark = "ok    " if rule.kept else "BROKEN"
            lines.append(f"  {mark} {rule.title} [{rule.id}]")
        for warning in self.warnings:
            lines.append(f"  warning: {warning}")
        broken = [rule for rule in self.rules if not rule.kept]
        for rule in broken:
            lines += ["", f"{rule.title} [{rule.id}]:"]
            for violation in rule.violations:
                lines.append(f"  - {violation.summary}")
                lines += [f"      {link}" for link in violation.chain]
                if violation.hint:
                    lines.append(f"    fix: {violation.hint}")
        count = sum(len(rule.violations) for rule in broken)
        lines.append("")
        if broken:
            lines.append(f"{count} violation{'s' if count != 1 else ''} of {len(broken)} rule(s).")
        else:
            lines.append(f"All {len(self.rules)} rules kept.")
        return "\n".join(lines)
