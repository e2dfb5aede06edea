"""One schemathesis run over the whole schema, as one tenant, with every check; its failures and figures."""

from __future__ import annotations

import os
import re
import uuid
from collections import Counter
from dataclasses import dataclass, field
from typing import Any

import schemathesis
from email_validator import SPECIAL_USE_DOMAIN_NAMES
from fastapi import FastAPI
from hypothesis import strategies as st
from hypothesis.provisional import domains
from schemathesis.engine import events

from tests.fuzz import tenancy_check  # noqa: F401 (registers `foreign_org_refused` with schemathesis)
from tests.fuzz.refusals import operation_settings
from tests.fuzz.tenants import Tenant

_IDEMPOTENCY_KEY = "Idempotency-Key"
_VALID_KEY = re.compile(r"^[ -~]{1,255}$")


@dataclass(frozen=True)
class Seed:
    """Hypothesis' seed, and whether generation is derandomized (CI) or random from it (`make fuzz`)."""

    value: int
    derandomize: bool


@dataclass
class Report:
    """What a run did: cases by phase, stateful scenarios and the link steps in them, failures."""

    operations: int = 0
    cases: Counter[str] = field(default_factory=Counter)
    scenarios: Counter[str] = field(default_factory=Counter)
    linked_steps: int = 0
    longest_chain: int = 0
    transitions: int = 0
    seconds: dict[str, float] = field(default_factory=dict)
    checks: Counter[str] = field(default_factory=Counter)
    failures: list[str] = field(default_factory=list)

    def summary(self) -> str:
        return (
            f"{self.operations} operations, cases by phase {dict(self.cases)}, stateful: "
            f"{self.scenarios['stateful']} scenarios (up to {self.longest_chain} calls), "
            f"{self.linked_steps} steps through {self.transitions} links; seconds by phase "
            f"{self.seconds}; checks evaluated {dict(self.checks)}; {len(self.failures)} failures"
        )


def fuzz(
    app: FastAPI,
    tenant: Tenant,
    *,
    max_examples: int,
    seed: Seed,
    parameters: dict[str, str] | None = None,
    phases: tuple[str, ...] = ("examples", "coverage", "fuzzing", "stateful"),
) -> Report:
    """Every phase and check as `tenant`'s owner. `parameters` fixes path parameters (by default its own
    `org_id`): another organization's ids make every operation a cross-tenant attempt."""
    fixed = parameters or {"org_id": tenant.org_id}
    config = _config(app, fixed, max_examples, seed, phases)
    schema = schemathesis.openapi.from_asgi("/openapi.json", app, config=config)
    _authenticate(schema, tenant)
    report = Report(operations=schema.statistic.operations.total)
    for event in schemathesis.engine.from_schema(schema).execute():
        _record(report, event)
    return report


def _config(
    app: FastAPI, parameters: dict[str, str], max_examples: int, seed: Seed, phases: tuple[str, ...]
) -> schemathesis.Config:
    generation: dict[str, Any] = {"mode": "all", "max-examples": max_examples, "database": "none"}
    if seed.derandomize:
        generation["deterministic"] = True
    return schemathesis.Config.from_dict(
        {
            "seed": seed.value,
            "workers": int(os.environ.get("FUZZ_WORKERS", "1")),
            "max-failures": 1000,
            "request-timeout": 10,
            # The notification stream never ends: one event, or the timeout, is an answer.
            "max-stream-events": 1,
            "checks": {"enabled": True},
            "parameters": parameters,
            "generation": generation,
            # Chains of calls through links (create → read → update → delete) need more scenarios than
            # one operation needs examples.
            "phases": {
                **{name: {"enabled": name in phases} for name in ("examples", "coverage", "fuzzing")},
                "stateful": {
                    "enabled": "stateful" in phases,
                    "generation": {**generation, "max-examples": max_examples * 10},
                },
            },
            "operations": operation_settings(app.openapi()),
        }
    )


def _authenticate(schema: Any, tenant: Tenant) -> None:
    """Every request as the tenant's owner. A fuzzed logout (or password change) ends that session:
    a 401 makes schemathesis ask for a token again, and the owner signs in anew."""

    @schema.auth(retry_on=[401])
    class Owner:
        def get(self, case: Any, context: Any) -> str:
            tenant.forget_token()
            return tenant.token()

        def set(self, case: Any, token: str, context: Any) -> None:
            case.headers = {**(case.headers or {}), "Authorization": f"Bearer {token}"}


# `format: email` as the API reads it: an address at a special-use domain (RFC 6761: `.test`,
# `.invalid`, `.localhost`, ...) can receive no mail and is refused with 422, which the format cannot say.
schemathesis.openapi.format(
    "email",
    st.emails(
        domains=domains().filter(lambda d: d.rsplit(".", 1)[-1].lower() not in SPECIAL_USE_DOMAIN_NAMES)
    ),
)


@schemathesis.hook
def before_call(context: Any, case: Any, kwargs: dict[str, Any]) -> None:
    """The header's documented contract is a new random key per new request, which a schema cannot
    say: generated keys repeat across operations (`"0"`), and a reused key is rightly refused with 422
    `idempotency-key-reused`. So a well-formed key is replaced by a fresh UUID; a malformed one (a
    negative case) is sent as generated, and must still be refused. (A global hook: schemathesis runs
    `before_call` only from the global scope; only this suite loads schemathesis.)"""
    key = (case.headers or {}).get(_IDEMPOTENCY_KEY)
    if isinstance(key, str) and _VALID_KEY.match(key):
        case.headers[_IDEMPOTENCY_KEY] = str(uuid.uuid4())


def _record(report: Report, event: events.EngineEvent) -> None:
    if isinstance(event, events.PhaseStarted):
        report.seconds[event.phase.name.value] = -event.timestamp
        if event.payload is not None:
            report.transitions = event.payload.transitions_selected
    elif isinstance(event, events.PhaseFinished):
        report.seconds[event.phase.name.value] = round(
            report.seconds.get(event.phase.name.value, 0) + event.timestamp, 1
        )
    elif isinstance(event, events.ScenarioFinished):
        phase = event.phase.value
        report.cases[phase] += len(event.recorder.cases)
        report.scenarios[phase] += 1
        if event.phase.value == "stateful":
            linked = sum(1 for node in event.recorder.cases.values() if node.transition)
            report.linked_steps += linked
            report.longest_chain = max(report.longest_chain, len(event.recorder.cases))
        report.failures += _failures(event)
        for results in event.recorder.checks.values():
            report.checks.update(check.name for check in results)
    elif isinstance(event, events.NonFatalError | events.FatalError):
        report.failures.append(f"error: {event!r}"[:3000])


def _failures(event: events.ScenarioFinished) -> list[str]:
    found = []
    for case_id, checks in event.recorder.checks.items():
        for check in checks:
            if check.failure_info is None:
                continue
            failure = check.failure_info.failure
            interaction = event.recorder.interactions.get(case_id)
            answer = ""
            if interaction is not None and interaction.response is not None:
                response = interaction.response
                body = (response.content or b"")[:400]
                answer = f"-> {response.status_code} {response.headers.get('content-type')} {body!r}"
            found.append(
                f"[{event.phase.value}] {event.label} {check.name}: {failure.title}\n{failure.message}\n"
                f"{check.failure_info.code_sample}\n{answer}"
            )
    return found
