"""Generated documents (the diagram, the event catalog, the module canvas): write them, or check them."""

from __future__ import annotations

import difflib
from dataclasses import dataclass
from pathlib import Path


@dataclass(frozen=True)
class GeneratedUpdate:
    """What regenerating a document found: whether it changed, and how (a unified diff)."""

    path: Path
    changed: bool
    diff: str


def refresh(path: Path, current: str, generated: str, *, check: bool) -> GeneratedUpdate:
    """Write `generated` over `current` at `path` unless `check`; either way, say how they differ."""
    diff = "".join(
        difflib.unified_diff(
            current.splitlines(keepends=True),
            generated.splitlines(keepends=True),
            fromfile=f"{path} (as is)",
            tofile=f"{path} (generated)",
        )
    )
    changed = generated != current
    if changed and not check:
        path.write_text(generated, encoding="utf-8")
    return GeneratedUpdate(path, changed, diff)
