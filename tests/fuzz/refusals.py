"""Where a request that matches the schema may still be refused, and why no schema can say so.

`positive_data_acceptance` expects a schema-valid request to succeed (or to be refused for auth,
absence, conflict or rate). The operations below also refuse a well-formed request with 400 or 422
for a reason that depends on state the schema cannot describe: a single-use token or a cursor the
server issued, a credential, the current time. Each entry widens that one check for that one
operation only; every other check stays as it is.
"""

from __future__ import annotations

from typing import Any

from schemathesis.config._checks import POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES

# (method, path, extra statuses, why)
REFUSALS: tuple[tuple[str, str, tuple[str, ...], str], ...] = (
    ("POST", "/api/v1/auth/password", ("400",), "the current password is a credential"),
    ("POST", "/api/v1/auth/register", ("422",), "password strength (zxcvbn) is no JSON Schema"),
    ("POST", "/api/v1/auth/verify-email", ("400",), "a single-use token the server mailed"),
    ("POST", "/api/v1/auth/password/reset", ("400",), "a single-use token the server mailed"),
    ("POST", "/api/v1/invitations/accept", ("400",), "a single-use token the server mailed"),
    ("GET", "/api/v1/notifications/unsubscribe", ("422",), "a token the server signed"),
    ("POST", "/api/v1/notifications/unsubscribe", ("422",), "a token the server signed"),
    ("GET", "/api/v1/notifications/stream", ("422",), "Last-Event-ID must be an id this stream sent"),
    (
        "POST",
        "/api/v1/billing/webhooks/{provider}",
        ("400", "422"),
        "signed (400); free-form: a NUL anywhere is 422",
    ),
    ("POST", "/api/v1/orgs/{org_id}/api-keys", ("422",), "expires_at must be in the future"),
    ("POST", "/api/v1/orgs/{org_id}/billing/usage", ("422",), "occurred_at at most 5 minutes ahead"),
    ("POST", "/api/v1/orgs/{org_id}/billing/usage/batch", ("422",), "occurred_at at most 5 minutes ahead"),
    (
        "GET",
        "/api/v1/orgs/{org_id}/billing/usage",
        ("422",),
        "from and to come together (no schema for pairs)",
    ),
    (
        "POST",
        "/api/v1/orgs/{org_id}/billing/payment-method",
        ("422",),
        "the provider's token is a credential",
    ),
    (
        "POST",
        "/api/v1/orgs/{org_id}/billing/subscription/change",
        ("422",),
        "plans are data: GET /billing/plans",
    ),
    ("POST", "/api/v1/orgs/{org_id}/projects/{project_ref}/tasks", ("422",), "the assignee must be a member"),
    ("PATCH", "/api/v1/orgs/{org_id}/tasks/{task_ref}", ("422",), "the assignee must be a member"),
    ("PUT", "/api/v1/notifications/preferences", ("422",), "security mail cannot be turned off"),
    ("POST", "/api/v1/orgs/{org_id}/webhooks", ("422",), "a public http(s) URL: checked, not a schema"),
    ("PATCH", "/api/v1/orgs/{org_id}/webhooks/{endpoint_id}", ("422",), "the same URL rules"),
)

# (method, path, why): a 404 here is an answer about the resource's state, not a missing parent, so
# `ensure_resource_availability` (a 404 right after the parent was created is a bug) does not apply.
STATE_NOT_FOUND: tuple[tuple[str, str, str], ...] = (
    (
        "GET",
        "/api/v1/orgs/{org_id}/billing/upcoming-invoice",
        "404 no-upcoming-invoice: a new organization has no subscription yet, so nothing is coming",
    ),
)


def operation_settings(openapi: dict[str, Any]) -> list[dict[str, Any]]:
    """Schemathesis `[[operations]]` entries: the table above; every list with a `cursor` (only a
    cursor the server returned is valid: it is signed); every operation that documents 402 (a plan's
    limit reached is state, not input). Both found in the schema, so new routes are covered."""
    extra: dict[tuple[str, str], set[str]] = {(m, p): set(s) for m, p, s, _ in REFUSALS}
    for path, item in openapi["paths"].items():
        for method, operation in item.items():
            names = {p.get("name") for p in operation.get("parameters", []) if p.get("in") == "query"}
            if "cursor" in names:
                extra.setdefault((method.upper(), path), set()).add("400")
            if "402" in operation.get("responses", {}):
                extra.setdefault((method.upper(), path), set()).add("402")
    checks: dict[tuple[str, str], dict[str, Any]] = {
        key: {
            "positive_data_acceptance": {
                "expected-statuses": [*POSITIVE_DATA_ACCEPTANCE_EXPECTED_STATUSES, *sorted(statuses)]
            }
        }
        for key, statuses in extra.items()
    }
    for method, path, _ in STATE_NOT_FOUND:
        checks.setdefault((method, path), {})["ensure_resource_availability"] = {"enabled": False}
    return [
        {"include-name": f"{method} {path}", "checks": operation_checks}
        for (method, path), operation_checks in sorted(checks.items())
    ]
