"""Tasks as splitstone shows them, its list cursors and search words, and the create body's rules."""

from __future__ import annotations

import base64
import binascii
import hashlib
import json
import re
from dataclasses import dataclass
from datetime import date
from typing import Any
from uuid import UUID

from asyncpg import Record

from bench.baseline.problems import Problem, invalid_input, validation_failed

PRIORITIES = ("none", "low", "medium", "high", "urgent")  # by their stored number, 0 to 4
STATUSES = ("todo", "in_progress", "done", "canceled")
MAX_PAGE = 100
MAX_QUERY = 200
MAX_TERMS = 16
MAX_TITLE = 300
MAX_DESCRIPTION = 100_000
MAX_LABELS = 20
_WORD = re.compile(r"[^\W_]+")
_LABEL = re.compile(r"^[\w][\w .:/+-]{0,49}$")
_TASK_REF = re.compile(r"^(?P<key>[A-Za-z][A-Za-z0-9]{1,9})-(?P<number>[1-9][0-9]{0,9})$")
_PROJECT_KEY = re.compile(r"^[A-Z][A-Z0-9]{1,9}$")
_NOT_OURS = "The cursor is not one this API returned."
_CREATE_FIELDS = {"title", "description", "status", "priority", "assignee_id", "due_date", "labels"}


def task_json(row: Record | dict[str, Any], project_key: str) -> dict[str, Any]:
    """The task's representation, member for member in the order of splitstone's `TaskResponse`."""
    return {
        "id": row["id"],
        "org_id": row["org_id"],
        "project_id": row["project_id"],
        "project_key": project_key,
        "number": row["number"],
        "key": f"{project_key}-{row['number']}",
        "title": row["title"],
        "description": row["description"],
        "status": row["status"],
        "priority": PRIORITIES[row["priority"]],
        "assignee_id": row["assignee_id"],
        "due_date": row["due_date"],
        "labels": json.loads(row["labels"]),
        "created_by": row["created_by"],
        "created_at": row["created_at"],
        "updated_at": row["updated_at"],
        "version": row["version"],
    }


def task_ref(ref: str) -> UUID | tuple[str, int] | None:
    """A task's id, or its (project key, number) for `WEB-42` in any case; None for anything else."""
    try:
        return UUID(ref)
    except ValueError:
        match = _TASK_REF.match(ref)
        return (match["key"].upper(), int(match["number"])) if match else None


def project_ref(ref: str) -> UUID | str | None:
    """A project's id, or its key upper-cased; None when it is neither (no such project)."""
    try:
        return UUID(ref)
    except ValueError:
        key = ref.strip().upper()
        return key if _PROJECT_KEY.match(key) else None


def search_terms(q: str) -> list[str]:
    if len(q) > MAX_QUERY:
        raise _invalid_search(f"A search has at most {MAX_QUERY} characters.")
    terms = [word.lower() for word in _WORD.findall(q)]
    if not terms:
        raise _invalid_search("The search has no word to look for (letters or digits).")
    if len(terms) > MAX_TERMS:
        raise _invalid_search(f"A search has at most {MAX_TERMS} words.")
    return terms


def match_expression(terms: list[str]) -> str:
    return " ".join(f'"{term}"' for term in terms)


def _invalid_search(detail: str) -> Problem:
    return invalid_input(detail, code="invalid-search", title="Invalid search", field="q")


# -- cursors of the newest-first list: its scope (sort, order, filters) and the last row's id ----------


def list_scope(order: str, org_id: UUID, project_id: UUID, terms: list[str] | None) -> str:
    """The list a cursor belongs to, spelled as splitstone spells it (the unused filters are null)."""
    return json.dumps(["created", order, str(org_id), str(project_id), None, None, None, None, None, terms])


def encode_cursor(last_id: UUID, scope: str, value: str | int | None = None) -> str:
    payload = json.dumps([_digest(scope), value, last_id.hex], separators=(",", ":"))
    return base64.urlsafe_b64encode(payload.encode()).rstrip(b"=").decode("ascii")


def decode_cursor(cursor: str, scope: str) -> UUID:
    """The last id of the page before; 400 `invalid-cursor` unless `encode_cursor` made it for `scope`."""
    try:
        raw = base64.urlsafe_b64decode(cursor.encode("ascii") + b"=" * (-len(cursor) % 4))
        digest, value, id_hex = json.loads(raw.decode())
        last_id = UUID(hex=id_hex)
    except (binascii.Error, ValueError, TypeError, AttributeError, UnicodeEncodeError):
        raise _invalid_cursor(_NOT_OURS) from None
    if not (value is None or isinstance(value, str | int)) or isinstance(value, bool):
        raise _invalid_cursor(_NOT_OURS)
    if encode_cursor(last_id, scope, value) != cursor:
        if isinstance(digest, str) and digest != _digest(scope):
            raise _invalid_cursor("The cursor belongs to another list (another sort, order or filters).")
        raise _invalid_cursor(_NOT_OURS)
    if value is not None:  # a newest-first cursor holds no sort value: the id is the sort value
        raise _invalid_cursor(_NOT_OURS)
    return last_id


def _invalid_cursor(detail: str) -> Problem:
    return Problem(400, "invalid-cursor", "Invalid cursor", detail)


def _digest(scope: str) -> str:
    return hashlib.sha256(scope.encode()).hexdigest()[:12]


# -- the create body ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NewTask:
    title: str
    description: str
    status: str
    priority: int
    assignee_id: UUID | None
    due_date: date | None
    labels: list[str]


def new_task(body: object) -> NewTask:
    """The create body checked as splitstone's `TaskCreate` and `clean_labels` check it."""
    if not isinstance(body, dict):
        raise validation_failed([_error((), "Input should be a valid dictionary", "model_attributes_type")])
    errors = [
        _error((name,), "Extra inputs are not permitted", "extra_forbidden")
        for name in body
        if name not in _CREATE_FIELDS
    ]
    title = body.get("title")
    if not isinstance(title, str) or not 1 <= len(title.strip()) <= MAX_TITLE:
        errors.append(
            _error(("title",), f"A string of 1 to {MAX_TITLE} characters is required", "string_type")
        )
    description = body.get("description", "")
    if not isinstance(description, str) or len(description) > MAX_DESCRIPTION:
        errors.append(_error(("description",), "A string of at most 100000 characters", "string_type"))
    status = body.get("status", "todo")
    if status not in STATUSES:
        errors.append(_error(("status",), f"Input should be one of {', '.join(STATUSES)}", "enum"))
    priority = body.get("priority", "none")
    if priority not in PRIORITIES:
        errors.append(
            _error(("priority",), f"Input should be one of {', '.join(PRIORITIES)}", "literal_error")
        )
    assignee_id = _optional(body.get("assignee_id"), UUID, "assignee_id", "uuid_parsing", errors)
    due_date = _optional(
        body.get("due_date"), date.fromisoformat, "due_date", "date_from_datetime_parsing", errors
    )
    labels = body.get("labels", [])
    if (
        not isinstance(labels, list)
        or len(labels) > 50
        or not all(isinstance(x, str) and len(x) <= 50 for x in labels)
    ):
        errors.append(_error(("labels",), "A list of up to 50 strings of up to 50 characters", "list_type"))
    if errors:
        raise validation_failed(errors)
    return NewTask(
        title=str(title).strip(),
        description=description,
        status=status,
        priority=PRIORITIES.index(priority),
        assignee_id=assignee_id,
        due_date=due_date,
        labels=clean_labels(labels),
    )


def clean_labels(labels: list[str]) -> list[str]:
    cleaned = sorted({label.strip().lower() for label in labels if label.strip()})
    if len(cleaned) > MAX_LABELS:
        raise invalid_input(
            f"A task has at most {MAX_LABELS} labels.",
            code="invalid-label",
            title="Invalid label",
            count=len(cleaned),
        )
    for label in cleaned:
        if not _LABEL.match(label):
            raise invalid_input(
                f"{label!r} is not a label: up to 50 letters, digits, spaces and . : / + - _.",
                code="invalid-label",
                title="Invalid label",
                label=label,
            )
    return cleaned


def _optional(value: object, parse: Any, name: str, kind: str, errors: list[dict[str, Any]]) -> Any:
    if value is None:
        return None
    try:
        if not isinstance(value, str):
            raise TypeError
        return parse(value)
    except (TypeError, ValueError):
        errors.append(_error((name,), f"Input should be a valid {name}", kind))
        return None


def _error(loc: tuple[str, ...], msg: str, kind: str) -> dict[str, Any]:
    return {"loc": ["body", *loc], "msg": msg, "type": kind}
