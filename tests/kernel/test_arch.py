"""`splitstone arch check`: the real package keeps every rule; the fixtures show each break, readably."""

from __future__ import annotations

from pathlib import Path
from typing import ClassVar, Protocol
from uuid import UUID

import pytest
from typer.testing import CliRunner

from splitstone.bootstrap import MODULES
from splitstone.kernel.arch.check import ArchCheckError, check_architecture, check_modules
from splitstone.kernel.arch.report import ArchReport, ImportLink
from splitstone.kernel.arch.spec import ModuleSpec, reference
from splitstone.kernel.events import Event
from splitstone.kernel.module import Module

FIXTURES = Path(__file__).parents[1] / "fixtures"


@pytest.fixture(autouse=True)
def fixture_packages(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.syspath_prepend(str(FIXTURES))


def spec(
    root: str,
    name: str,
    contract: str,
    *,
    depends_on: tuple[str, ...] = (),
    subscribes_to: tuple[str, ...] = (),
) -> ModuleSpec:
    """A spec of a fixture module; references are written 'module:Name' and resolved into its api."""

    def ref(short: str) -> str:
        module, _, qualname = short.partition(":")
        return f"{root}.modules.{module}.api:{qualname}"

    return ModuleSpec(
        name,
        ref(f"{name}:{contract}"),
        depends_on=tuple(map(ref, depends_on)),
        subscribes_to=tuple(map(ref, subscribes_to)),
    )


def ok_specs() -> list[ModuleSpec]:
    root = "archfixture_ok"
    return [
        spec(root, "auth", "AuthApi"),
        spec(root, "projects", "ProjectsApi", depends_on=("auth:AuthApi",)),
        spec(root, "notifications", "NotificationsApi", subscribes_to=("auth:UserRegistered",)),
    ]


def broken_specs() -> list[ModuleSpec]:
    root = "archfixture_broken"
    return [
        spec(root, "auth", "AuthApi"),
        spec(root, "projects", "ProjectsApi", depends_on=("auth:AuthApi", "billing:BillingApi")),
        spec(root, "billing", "BillingApi", depends_on=("auth:AuthApi",)),
    ]


def summaries(report: ArchReport, rule: str) -> list[str]:
    return [v.summary for v in report.rule(rule).violations]


# --- the real package -----------------------------------------------------------------------------


def test_splitstone_keeps_every_rule() -> None:
    report = check_modules("splitstone", MODULES)

    assert report.ok, report.render()
    assert not report.warnings


def test_cli_check_passes_on_splitstone() -> None:
    from splitstone.cli import app

    result = CliRunner().invoke(app, ["arch", "check"])

    assert result.exit_code == 0, result.output
    assert "All 6 rules kept." in result.output


# --- the fixture that keeps the rules -------------------------------------------------------------


def test_ok_fixture_keeps_every_rule() -> None:
    report = check_architecture("archfixture_ok", ok_specs())

    assert report.ok, report.render()
    assert "All 6 rules kept." in report.render()


def test_subscribing_to_events_allows_importing_the_publishers_api() -> None:
    specs = ok_specs()
    specs[2] = ModuleSpec("notifications", specs[2].contract)  # the same code, no subscription declared

    report = check_architecture("archfixture_ok", specs)

    assert summaries(report, "declared-dependencies") == [
        "module 'notifications' imports 'auth' but does not declare AuthApi (2 imports)"
    ]


def test_a_module_package_missing_from_the_declarations_is_reported() -> None:
    report = check_architecture("archfixture_ok", ok_specs()[:2])

    assert summaries(report, "declarations") == [
        "archfixture_ok.modules.notifications is not a declared module"
    ]


def test_declarations_that_do_not_match_the_packages_are_reported() -> None:
    root = "archfixture_ok"
    specs = [
        ModuleSpec("auth", f"{root}.modules.auth.service:AuthService"),
        spec(root, "projects", "ProjectsApi", depends_on=("billing:BillingApi",)),
        spec(root, "notifications", "NotificationsApi", subscribes_to=("auth:UserRegistered",)),
        spec(root, "search", "SearchApi"),
    ]

    report = check_architecture(root, specs)

    assert summaries(report, "declarations") == [
        f"the contract of module 'auth', {root}.modules.auth.service:AuthService, is not in "
        f"{root}.modules.auth.api",
        f"module 'projects' depends on {root}.modules.billing.api:BillingApi, "
        "which no declared module provides",
        f"module 'search' is declared but {root}.modules.search does not exist",
    ]


def test_an_unknown_package_is_an_error_not_a_broken_rule() -> None:
    with pytest.raises(ArchCheckError, match="cannot be found"):
        check_architecture("archfixture_missing", [])


# --- the fixture that breaks each rule once -------------------------------------------------------


@pytest.fixture
def broken() -> ArchReport:
    return check_architecture("archfixture_broken", broken_specs())


def test_broken_fixture_fails(broken: ArchReport) -> None:
    assert not broken.ok
    assert broken.rule("declarations").kept
    assert len(broken.violations) == 7


def test_kernel_importing_a_module(broken: ArchReport) -> None:
    [violation] = broken.rule("kernel-independent").violations

    assert violation.summary == "archfixture_broken.kernel.app imports archfixture_broken.modules.auth.api"
    assert violation.chain == (
        ImportLink("archfixture_broken.kernel.app", "archfixture_broken.modules.auth.api", (2,)),
    )
    assert "the kernel knows no module" in violation.hint


def test_importing_another_modules_private_code(broken: ArchReport) -> None:
    from_module, from_outside = sorted(
        broken.rule("contract-only").violations, key=lambda v: not v.summary.startswith("module")
    )

    assert from_module.summary == (
        "module 'projects' imports archfixture_broken.modules.auth.storage, which is private to 'auth'"
    )
    assert [str(link) for link in from_module.chain] == [
        "archfixture_broken.modules.projects.service -> archfixture_broken.modules.auth.storage (line 2)"
    ]
    assert from_module.hint.startswith("use AuthApi from archfixture_broken.modules.auth.api")
    assert from_outside.summary.startswith(
        "archfixture_broken.cli imports archfixture_broken.modules.auth.service"
    )
    assert "only the composition root (archfixture_broken.bootstrap)" in from_outside.hint


def test_an_api_that_loads_its_implementation(broken: ArchReport) -> None:
    [violation] = broken.rule("api-standalone").violations

    assert violation.summary == (
        "importing archfixture_broken.modules.auth.api loads archfixture_broken.modules.auth.domain, "
        "part of the implementation of 'auth'"
    )
    assert [str(link) for link in violation.chain] == [
        "archfixture_broken.modules.auth.api -> archfixture_broken.modules.auth.domain (line 4)"
    ]


def test_a_cycle_between_modules(broken: ArchReport) -> None:
    [violation] = broken.rule("acyclic").violations

    assert violation.summary == "modules import each other in a cycle: billing -> projects -> billing"
    assert [str(link) for link in violation.chain] == [
        "archfixture_broken.modules.billing.service -> archfixture_broken.modules.projects.api (line 2)",
        "archfixture_broken.modules.projects.service -> archfixture_broken.modules.billing.api (line 3)",
    ]
    assert "keep dependencies one-way" in violation.hint


def test_undeclared_and_unused_dependencies(broken: ArchReport) -> None:
    undeclared, unused = broken.rule("declared-dependencies").violations

    assert undeclared.summary == "module 'billing' imports 'projects' but does not declare ProjectsApi"
    assert "add ProjectsApi to depends_on in archfixture_broken.modules.billing.module" in undeclared.hint
    assert unused.summary == (
        "module 'billing' declares AuthApi in depends_on but its code never imports 'auth' "
        "(only its declaration does)"
    )
    assert [str(link) for link in unused.chain] == [
        "archfixture_broken.modules.billing.module -> archfixture_broken.modules.auth.api (line 2)"
    ]
    assert unused.hint.startswith("remove AuthApi from depends_on")


def test_the_report_names_every_broken_rule_with_chains_and_hints(broken: ArchReport) -> None:
    text = broken.render()

    for rule in ("kernel-independent", "contract-only", "api-standalone", "acyclic", "declared-dependencies"):
        assert f"[{rule}]:" in text
    assert "  ok     Every package under modules/" in text
    assert text.count("    fix: ") == 7
    private_import = "archfixture_broken.modules.projects.service -> archfixture_broken.modules.auth.storage"
    assert f"      {private_import} (line 2)\n" in text
    assert text.endswith("7 violations of 5 rule(s).")


def test_the_kernel_may_not_reach_a_module_even_indirectly(
    tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    files = {
        "archfixture_tmp/__init__.py": "",
        "archfixture_tmp/bootstrap.py": "from archfixture_tmp.modules.auth import module\n",
        "archfixture_tmp/kernel/__init__.py": "",
        "archfixture_tmp/kernel/app.py": "import archfixture_tmp.bootstrap\n",
        "archfixture_tmp/modules/__init__.py": "",
        "archfixture_tmp/modules/auth/__init__.py": "",
        "archfixture_tmp/modules/auth/api.py": "class AuthApi: ...\n",
        "archfixture_tmp/modules/auth/module.py": "from archfixture_tmp.modules.auth.api import AuthApi\n",
    }
    for name, text in files.items():
        (tmp_path / name).parent.mkdir(parents=True, exist_ok=True)
        (tmp_path / name).write_text(text)
    monkeypatch.syspath_prepend(str(tmp_path))

    report = check_architecture("archfixture_tmp", [spec("archfixture_tmp", "auth", "AuthApi")])

    [violation] = report.violations
    assert violation.summary == (
        "archfixture_tmp.kernel.app imports archfixture_tmp.modules.auth.module via archfixture_tmp.bootstrap"
    )
    assert [str(link) for link in violation.chain] == [
        "archfixture_tmp.kernel.app -> archfixture_tmp.bootstrap (line 1)",
        "archfixture_tmp.bootstrap -> archfixture_tmp.modules.auth.module (line 1)",
    ]


# --- from declarations ----------------------------------------------------------------------------


class ThingsApi(Protocol):
    async def count(self) -> int: ...


class OtherApi(Protocol):
    async def ping(self) -> None: ...


class ThingAdded(Event):
    name: ClassVar[str] = "things.ThingAdded"
    thing_id: UUID


def test_a_spec_is_derived_from_a_module_declaration() -> None:
    module = Module(
        name="things",
        contract=ThingsApi,
        factory=lambda _ctx: object(),
        depends_on=[OtherApi],
        subscriptions={ThingAdded: lambda _impl: _noop},
    )

    assert ModuleSpec.of(module) == ModuleSpec(
        name="things",
        contract=f"{__name__}:ThingsApi",
        depends_on=(f"{__name__}:OtherApi",),
        subscribes_to=(f"{__name__}:ThingAdded",),
    )
    assert reference(ThingsApi) == f"{__name__}:ThingsApi"


def test_a_malformed_reference_is_refused() -> None:
    with pytest.raises(ValueError, match=r"package\.module:QualName"):
        ModuleSpec("things", "things.api.ThingsApi")


async def _noop(_event: object) -> None:
    return None
