"""The history of the key numbers: rich tables for the terminal, and a small SVG chart for docs/.

The SVG is written by hand (no plotting dependency) and depends only on the history, so the same
commits always give the same file.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from dataclasses import dataclass
from xml.sax.saxutils import escape

from rich.table import Table

from splitstone.kernel.arch.history import History
from splitstone.kernel.arch.metrics_model import ModuleMetrics

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#9467bd", "#ff7f0e", "#8c564b", "#e377c2", "#17becf")


# -- terminal ------------------------------------------------------------------------------------------------


def totals_table(history: History) -> Table:
    rows = [
        (
            point.commit.short,
            point.commit.date,
            str(len(point.metrics.modules)),
            str(point.cross_boundary_imports),
            str(point.non_contract_imports),
            str(point.contract_methods),
            str(point.events),
        )
        for point in history.points
    ]
    title = f"{history.package}: the last {len(history.points)} commits{UNCHANGED_NOTE}"
    headings = ("Commit", "Date", "Modules", "Cross imports", "Non-contract", "Methods", "Events")
    return _table(title, headings, rows, key_from=2)


def module_table(history: History, name: str) -> Table:
    rows = [
        (
            point.commit.short,
            str(module.ca),
            str(module.ce),
            f"{module.instability:.2f}",
            str(module.imports_out),
            str(len(module.non_contract_imports)),
            str(module.loc),
            str(module.tests),
        )
        for point in history.points
        if (module := _find(point.metrics.modules, name)) is not None
    ]
    headings = ("Commit", "Ca", "Ce", "I", "Imports out", "Non-contract", "LOC", "Tests")
    return _table(f"module {name}", headings, rows, key_from=1)


UNCHANGED_NOTE = " (a commit that changes none of a table's numbers is left out of it; the last is shown)"


def _table(title: str, headings: tuple[str, ...], rows: Sequence[tuple[str, ...]], *, key_from: int) -> Table:
    """A table of the rows whose numbers (from column `key_from` on) differ from the row before."""
    table = Table(title=title, title_justify="left")
    for index, heading in enumerate(headings):
        table.add_column(heading, justify="left" if index < key_from else "right", no_wrap=index == 0)
    previous: tuple[str, ...] | None = None
    for index, row in enumerate(rows):
        numbers = row[key_from:]
        if numbers != previous or index == len(rows) - 1:
            table.add_row(*row)
        previous = numbers
    return table


def _find(modules: tuple[ModuleMetrics, ...], name: str) -> ModuleMetrics | None:
    return next((m for m in modules if m.name == name), None)


# -- SVG -----------------------------------------------------------------------------------------------------

WIDTH = 760
PANEL_HEIGHT = 190
LEFT, RIGHT, TOP = 56, 16, 64
X_LABELS = 56  # room under the last panel for the rotated commit ids
GAP = 40


@dataclass(frozen=True)
class _Panel:
    title: str
    value: Callable[[ModuleMetrics], float]
    fixed_max: float | None = None


PANELS = (
    _Panel("Instability I = Ce / (Ca + Ce)", lambda m: m.instability, 1.0),
    _Panel("Cross-boundary imports out of the module", lambda m: float(m.imports_out)),
)


def render_svg(history: History) -> str:
    """Small multiples: one panel per number, one line per module, one point per commit."""
    names = history.module_names
    height = TOP + len(PANELS) * (PANEL_HEIGHT + GAP) - GAP + X_LABELS
    parts = [
        f'<svg xmlns="http://www.w3.org/2000/svg" width="{WIDTH}" height="{height}" '
        f'viewBox="0 0 {WIDTH} {height}" font-family="sans-serif" font-size="11">',
        f'<rect width="{WIDTH}" height="{height}" fill="white"/>',
        f'<text x="{LEFT}" y="20" font-size="14" font-weight="bold">'
        f"{escape(history.package)}: coupling over the last {len(history.points)} commits</text>",
        *_legend(names),
    ]
    for index, panel in enumerate(PANELS):
        top = TOP + index * (PANEL_HEIGHT + GAP)
        parts += _panel(history, names, panel, top, last=index == len(PANELS) - 1)
    parts.append("</svg>")
    return "\n".join(parts) + "\n"


def _legend(names: list[str]) -> list[str]:
    parts = []
    x = LEFT
    for index, name in enumerate(names):
        color = PALETTE[index % len(PALETTE)]
        parts.append(f'<rect x="{x}" y="32" width="12" height="12" fill="{color}"/>')
        parts.append(f'<text x="{x + 16}" y="42">{escape(name)}</text>')
        x += 24 + 7 * len(name)
    return parts


def _panel(history: History, names: list[str], panel: _Panel, top: int, *, last: bool) -> list[str]:
    values = [panel.value(m) for p in history.points for m in p.metrics.modules]
    y_max = panel.fixed_max or _nice_max(max(values, default=1.0))
    plot_width = WIDTH - LEFT - RIGHT
    count = len(history.points)

    def x_of(index: int) -> float:
        return LEFT + (plot_width * (index + 0.5) / count if count else 0)

    def y_of(value: float) -> float:
        return top + PANEL_HEIGHT - PANEL_HEIGHT * value / y_max

    parts = [
        '<g class="panel">',
        f'<text x="{LEFT}" y="{top - 8}" font-weight="bold">{escape(panel.title)}</text>',
        f'<rect x="{LEFT}" y="{top}" width="{plot_width}" height="{PANEL_HEIGHT}" '
        'fill="none" stroke="#999"/>',
    ]
    for step in range(5):
        value = y_max * step / 4
        y = y_of(value)
        label = f"{value:.2f}" if panel.fixed_max else f"{value:g}"
        parts.append(f'<line x1="{LEFT}" y1="{y:.1f}" x2="{LEFT + plot_width}" y2="{y:.1f}" stroke="#eee"/>')
        parts.append(f'<text x="{LEFT - 6}" y="{y + 4:.1f}" text-anchor="end">{label}</text>')
    if last:
        bottom = top + PANEL_HEIGHT
        for index, point in enumerate(history.points):
            x = x_of(index)
            parts.append(
                f'<text class="commit" x="{x:.1f}" y="{bottom + 12}" text-anchor="end" '
                f'transform="rotate(-60 {x:.1f} {bottom + 12})">{point.commit.short}</text>'
            )
    for index, name in enumerate(names):
        color = PALETTE[index % len(PALETTE)]
        series = [
            (x_of(i), y_of(panel.value(m)))
            for i, point in enumerate(history.points)
            if (m := _find(point.metrics.modules, name)) is not None
        ]
        coordinates = " ".join(f"{x:.1f},{y:.1f}" for x, y in series)
        parts.append(
            f'<polyline data-module="{escape(name)}" points="{coordinates}" fill="none" '
            f'stroke="{color}" stroke-width="2"/>'
        )
        parts += [f'<circle cx="{x:.1f}" cy="{y:.1f}" r="2.5" fill="{color}"/>' for x, y in series]
    parts.append("</g>")
    return parts


def _nice_max(value: float) -> float:
    """A round upper bound for an axis: 1, 2, 5 or 10 times a power of ten, at least `value`."""
    if value <= 0:
        return 1.0
    scale = 1.0
    while scale * 10 < value:
        scale *= 10
    return next(scale * f for f in (1, 2, 5, 10) if scale * f >= value)
