"""Projects' rules, with no I/O: project keys, the task workflow, labels, task references."""

from __future__ import annotations

import re
import unicodedata

from splitstone.kernel.errors import InvalidInput
from splitstone.modules.projects.api import IllegalStatusChange, TaskStatus

T = TaskStatus

KEY_PATTERN = re.compile(r"^[A-Z][A-Z0-9]{1,9}$")
TASK_REF = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9]{1,9})-(?P<number>[1-9][0-9]{0,9})$")
LABEL_PATTERN = re.compile(r"^[\w][\w .:/+-]{0,49}$")
MAX_LABELS = 20

# From each status, where a task may go. Done and canceled tasks may be reopened (to todo).
WORKFLOW: dict[TaskStatus, frozenset[TaskStatus]] = {
    T.TODO: frozenset({T.IN_PROGRESS, T.CANCELED}),
    T.IN_PROGRESS: frozenset({T.TODO, T.DONE, T.CANCELED}),
    T.DONE: frozenset({T.TODO}),
    T.CANCELED: frozenset({T.TODO}),
}


class InvalidProjectKey(InvalidInput):
    code = "invalid-project-key"
    title = "Invalid project key"


class InvalidLabel(InvalidInput):
    code = "invalid-label"
    title = "Invalid label"


def project_key(raw: str) -> str:
    """A project key, upper-cased: 2 to 10 letters and digits, starting with a letter (`WEB`, `API2`)."""
    stripped = raw.strip()
    # ASCII before upper-casing: "\u017fx".upper() is "SX" and "\ufb01x".upper() is "FIX".
    key = stripped.upper() if stripped.isascii() else ""
    if not KEY_PATTERN.fullmatch(key):
        raise InvalidProjectKey(
            f"{raw!r} is not a project key: 2 to 10 letters and digits, starting with a letter.", key=raw
        )
    return key


def change_status(current: TaskStatus, target: TaskStatus) -> TaskStatus:
    """`target` if the workflow allows it from `current` (staying put is allowed); else 409."""
    if target is current or target in WORKFLOW[current]:
        return target
    allowed = ", ".join(sorted(s.value for s in WORKFLOW[current]))
    raise IllegalStatusChange(
        f"A task in {current.value} cannot move to {target.value}; it can move to: {allowed}.",
        current_status=current.value,
        target_status=target.value,
        allowed=sorted(s.value for s in WORKFLOW[current]),
    )


def clean_labels(labels: list[str]) -> list[str]:
    """Labels NFKC-folded, trimmed, lower-cased, de-duplicated and sorted; at most 20 of up to 50 characters.

    NFKC makes look-alike spellings one label (fullwidth and plain letters, the ligature U+FB01 and `fi`).
    """
    folded = (unicodedata.normalize("NFKC", label).strip().lower() for label in labels)
    cleaned = sorted({label for label in folded if label})
    if len(cleaned) > MAX_LABELS:
        raise InvalidLabel(f"A task has at most {MAX_LABELS} labels.", count=len(cleaned))
    for label in cleaned:
        if not LABEL_PATTERN.match(label):
            raise InvalidLabel(
                f"{label!r} is not a label: up to 50 letters, digits, spaces and . : / + - _.", label=label
            )
    return cleaned


def task_key(project_key: str, number: int) -> str:
    return f"{project_key}-{number}"


def parse_task_ref(ref: str) -> tuple[str, int] | None:
    """(`WEB`, 42) for "WEB-42" (any case), None for anything else (such as a UUID)."""
    match = TASK_REF.match(ref)
    if match is None:
        return None
    return match["key"].upper(), int(match["number"])
