"""A schemathesis check of our own: a token of one organization never succeeds on another's path."""

from __future__ import annotations

from collections import Counter
from typing import Any

import schemathesis

from tests.fuzz.tenants import ORG_OF_TOKEN

ATTEMPTS: Counter[str] = Counter()
"""Requests this check judged, by the caller's organization: proof that run B reached org A's paths."""


@schemathesis.check
def foreign_org_refused(ctx: Any, response: Any, case: Any) -> bool | None:
    """`/orgs/{org_id}/...` called with a member's token of another organization answers 4xx."""
    org_id = (case.path_parameters or {}).get("org_id")
    authorization = str((case.headers or {}).get("Authorization", ""))
    caller_org = ORG_OF_TOKEN.get(authorization.removeprefix("Bearer "))
    if org_id is None or caller_org is None or str(org_id) == caller_org:
        return None
    ATTEMPTS[caller_org] += 1
    if response.status_code < 400:
        raise AssertionError(
            f"A member of organization {caller_org} got {response.status_code} on organization {org_id}"
        )
    return True
