"""Schemathesis against the whole OpenAPI schema, every check on, as real users of two organizations.

Run B: org B's owner on org A's organization, project, task and comment, where the checks and our
`foreign_org_refused` check hold that nothing of org A is reached. Run A: org A's owner on org A,
every phase (examples, coverage, fuzzing, stateful chains through links). (tests/security covers the
full matrix of roles, API keys and anonymous callers; this is its fuzzed complement.)
"""

from __future__ import annotations

import os

import pytest
from fastapi import FastAPI

from tests.fuzz.engine import Seed, fuzz
from tests.fuzz.tenancy_check import ATTEMPTS
from tests.fuzz.tenants import Tenant, seed

# CI: PostgreSQL, as deployed. `make fuzz` runs SQLite too (FUZZ_BACKENDS=postgres,sqlite).
BACKENDS = tuple(os.environ.get("FUZZ_BACKENDS", "postgres").split(","))


EVERY_CHECK = {
    "not_a_server_error",
    "status_code_conformance",
    "content_type_conformance",
    "response_headers_conformance",
    "response_schema_conformance",
    "negative_data_rejection",
    "positive_data_acceptance",
    "missing_required_header",
    "unsupported_method",
    "allow_header_conformance",
    "ignored_auth",
    "use_after_free",
    "ensure_resource_availability",
    "object_level_authorization",
    "foreign_org_refused",
}


@pytest.mark.backends(*BACKENDS)
def test_every_operation_passes_every_check(
    served: FastAPI, tenants: tuple[Tenant, Tenant], max_examples: int, fuzz_seed: Seed
) -> None:
    alpha, bravo = tenants
    # Run B first, while org A's seeded resources certainly exist (run A may delete them).
    foreign = {"org_id": alpha.org_id, **seed(alpha)}
    intruder = fuzz(
        served,
        bravo,
        max_examples=max(2, max_examples // 2),  # every answer is a refusal: fewer examples tell as much
        seed=fuzz_seed,
        parameters=foreign,
        phases=("examples", "fuzzing"),
    )
    print(f"\nrun B (org B's owner on org A): {intruder.summary()}")
    assert not intruder.failures, f"{len(intruder.failures)} failures:\n\n" + "\n\n".join(intruder.failures)
    assert ATTEMPTS[bravo.org_id] > 0, "no request of org B reached org A's paths"

    own = fuzz(served, alpha, max_examples=max_examples, seed=fuzz_seed)
    print(f"run A (own organization): {own.summary()}")
    assert not own.failures, f"{len(own.failures)} failures:\n\n" + "\n\n".join(own.failures)
    assert own.linked_steps > 0, "the stateful phase followed no link"
    assert set(own.checks) >= EVERY_CHECK, f"checks that never ran: {EVERY_CHECK - set(own.checks)}"
