"""Module declarations, their dependency order, and the container that wires them."""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import Any, ClassVar, Protocol
from uuid import UUID

import pytest

from splitstone.kernel.container import Container
from splitstone.kernel.db import module_metadata
from splitstone.kernel.events import Event
from splitstone.kernel.module import Module, ModuleContext, ModuleGraphError, dependency_edges, order_modules
from splitstone.kernel.settings import Environment, Settings
from tests.kernel.conftest import Note, NotesApi, NotesService, notes_module


class BillingApi(Protocol):
    async def plan(self, org_id: UUID) -> str: ...


class ProjectsApi(Protocol):
    async def count(self, org_id: UUID) -> int: ...


class ReportsApi(Protocol):
    async def render(self) -> str: ...


class Billing:
    async def plan(self, org_id: UUID) -> str:
        return "free"


class Projects:
    def __init__(self, billing: BillingApi) -> None:
        self.billing = billing

    async def count(self, org_id: UUID) -> int:
        return 0


class Reports:
    async def render(self) -> str:
        return ""


def billing_of(ctx: ModuleContext) -> BillingApi:
    # mypy refuses a Protocol where type[T] is expected ("type-abstract"); the kernel takes it anyway.
    return ctx.dependency(BillingApi)  # type: ignore[type-abstract]


def declare(name: str, contract: type, *, depends_on: tuple[type, ...] = (), **extra: Any) -> Module:
    factories: dict[type, Callable[[ModuleContext], object]] = {
        BillingApi: lambda ctx: Billing(),
        ReportsApi: lambda ctx: Reports(),
    }
    factory = extra.pop("factory", None) or factories.get(contract) or (lambda ctx: Projects(Billing()))
    return Module(name=name, contract=contract, factory=factory, depends_on=depends_on, **extra)


def test_order_modules_puts_providers_before_consumers() -> None:
    billing = declare("billing", BillingApi)
    projects = declare("projects", ProjectsApi, depends_on=(BillingApi,))
    reports = declare("reports", ReportsApi, depends_on=(ProjectsApi, BillingApi))

    for given in ([reports, projects, billing], [projects, reports, billing], [billing, projects, reports]):
        names = [m.name for m in order_modules(given)]
        assert names.index("billing") < names.index("projects") < names.index("reports")
        assert sorted(names) == ["billing", "projects", "reports"]


def test_dependency_edges_name_consumer_provider_and_contract() -> None:
    billing = declare("billing", BillingApi)
    projects = declare("projects", ProjectsApi, depends_on=(BillingApi,))
    assert dependency_edges([billing, projects]) == [("projects", "billing", "BillingApi")]


def test_order_modules_refuses_a_cycle_and_names_it() -> None:
    projects = declare("projects", ProjectsApi, depends_on=(ReportsApi,))
    reports = declare("reports", ReportsApi, depends_on=(ProjectsApi,))
    billing = declare("billing", BillingApi)

    with pytest.raises(ModuleGraphError, match="cycle") as caught:
        order_modules([billing, projects, reports])
    assert "projects" in str(caught.value)
    assert "reports" in str(caught.value)
    assert "billing" not in str(caught.value)


def test_order_modules_refuses_a_missing_provider() -> None:
    projects = declare("projects", ProjectsApi, depends_on=(BillingApi,))
    reports = declare("reports", ReportsApi)

    with pytest.raises(ModuleGraphError) as caught:
        order_modules([projects, reports])
    message = str(caught.value)
    assert "'projects' depends on BillingApi, which no module provides" in message
    assert "ReportsApi" in message  # what is provided, to help spot a typo


def test_order_modules_refuses_duplicate_names() -> None:
    with pytest.raises(ModuleGraphError, match="two modules are named 'billing'"):
        order_modules([declare("billing", BillingApi), declare("billing", ReportsApi)])


def test_order_modules_refuses_two_providers_of_one_contract() -> None:
    with pytest.raises(ModuleGraphError) as caught:
        order_modules([declare("billing", BillingApi), declare("invoicing", BillingApi)])
    assert "'billing' and 'invoicing' both provide BillingApi" in str(caught.value)


@pytest.mark.parametrize("name", ["Notes", "my-notes", "1notes", "", "notes app"])
def test_module_refuses_a_bad_name(name: str) -> None:
    with pytest.raises(ModuleGraphError, match="lowercase Python identifier"):
        notes_module(name=name, metadata=None, publishes=())


def test_module_refuses_tables_in_a_foreign_schema() -> None:
    with pytest.raises(ModuleGraphError) as caught:
        notes_module(metadata=module_metadata("billing"))
    assert "module 'notes' declares tables in schema 'billing'" in str(caught.value)


def test_module_refuses_events_not_named_after_it() -> None:
    class Charged(Event):
        name: ClassVar[str] = "billing.Charged"

    class Sneaky(Event):
        name: ClassVar[str] = "notesextra.Sneaky"  # a prefix of the name is not enough

    for event_type in (Charged, Sneaky):
        with pytest.raises(ModuleGraphError) as caught:
            notes_module(publishes=(event_type,))
        assert event_type.name in str(caught.value)
        assert "'notes.<EventName>'" in str(caught.value)


def test_module_refuses_job_kinds_not_named_after_it() -> None:
    async def handler(job: object) -> None:
        return None

    for kind in ("billing.charge", "notesextra.reindex", "reindex"):
        with pytest.raises(ModuleGraphError) as caught:
            notes_module(jobs={kind: lambda implementation: handler})
        assert f"handles job kind {kind!r}" in str(caught.value)
        assert "'notes.<what>'" in str(caught.value)
    assert notes_module(jobs={"notes.reindex": lambda implementation: handler}).jobs.keys() == {
        "notes.reindex"
    }


async def test_the_container_knows_every_event_published_or_subscribed(tmp_path: Path) -> None:
    class Archived(Event):
        name: ClassVar[str] = "notes.Archived"

    audit = declare(
        "audit", ProjectsApi, subscriptions={Archived: lambda implementation: implementation.count}
    )
    container = Container.build(settings_for(tmp_path), [notes_module(), audit])
    try:
        assert container.catalog.names() == ["notes.Archived", "notes.NoteAdded"]
    finally:
        await container.aclose()


def test_module_accepts_its_own_declaration() -> None:
    module = notes_module()
    assert module.name == "notes"
    assert module.metadata is not None
    assert module.metadata.schema == "notes"


def settings_for(tmp_path: Path) -> Settings:
    url = f"sqlite+aiosqlite:///{tmp_path / 'db' / 'splitstone.db'}"
    return Settings(env=Environment.TEST, data_dir=tmp_path / "data", database_url=url)


async def test_container_builds_in_order_and_hands_each_module_its_dependencies(tmp_path: Path) -> None:
    seen: dict[str, ModuleContext] = {}

    def build_projects(ctx: ModuleContext) -> Projects:
        seen["projects"] = ctx
        return Projects(billing_of(ctx))

    projects = declare("projects", ProjectsApi, depends_on=(BillingApi,), factory=build_projects)
    container = Container.build(settings_for(tmp_path), [projects, declare("billing", BillingApi)])
    try:
        assert [m.name for m in container.modules] == ["billing", "projects"]
        built = container.implementations["projects"]
        assert isinstance(built, Projects)
        assert built.billing is container.implementations["billing"]
        assert container.contracts[ProjectsApi] is built
        ctx = seen["projects"]
        assert ctx.name == "projects"
        assert ctx.db is container.databases["projects"]
        assert ctx.db.schema == "projects"
        # Its units of work are its own: its database, and its outbox as the sink of their events.
        assert ctx.uow is container.units_of_work["projects"]
        assert ctx.uow.db is ctx.db
        assert ctx.uow.sink is container.sinks["projects"]
        assert container.sinks["billing"] is not container.sinks["projects"]
        assert set(ctx.dependencies) == {BillingApi}
        assert container.module("billing").name == "billing"
        with pytest.raises(KeyError, match="no module named 'nope'"):
            container.module("nope")
    finally:
        await container.aclose()


async def test_a_module_cannot_ask_for_an_undeclared_contract(tmp_path: Path) -> None:
    def greedy(ctx: ModuleContext) -> Projects:
        return Projects(billing_of(ctx))  # BillingApi is provided, but not declared

    projects = declare("projects", ProjectsApi, factory=greedy)
    with pytest.raises(ModuleGraphError) as caught:
        Container.build(settings_for(tmp_path), [declare("billing", BillingApi), projects])
    assert "module 'projects' asked for BillingApi, which it does not declare in depends_on" in str(
        caught.value
    )


async def test_container_refuses_an_implementation_missing_contract_methods(tmp_path: Path) -> None:
    class HalfNotes:
        async def add(self, text: str) -> Note:
            raise NotImplementedError

    with pytest.raises(ModuleGraphError) as caught:
        Container.build(settings_for(tmp_path), [notes_module(factory=lambda ctx: HalfNotes())])
    assert "module 'notes' lacks contract methods: get" in str(caught.value)


async def test_container_accepts_a_plain_protocol_implementation(tmp_path: Path) -> None:
    # NotesApi is not @runtime_checkable; wiring must still work (isinstance() would raise TypeError).
    container = Container.build(settings_for(tmp_path), [notes_module()])
    try:
        assert isinstance(container.implementations["notes"], NotesService)
    finally:
        await container.aclose()


async def test_overrides_replace_an_implementation_everywhere(tmp_path: Path) -> None:
    class FakeBilling:
        async def plan(self, org_id: UUID) -> str:
            return "enterprise"

    built_billing: list[object] = []

    def build_billing(ctx: ModuleContext) -> Billing:
        built_billing.append(ctx)
        return Billing()

    fake = FakeBilling()
    projects = declare(
        "projects",
        ProjectsApi,
        depends_on=(BillingApi,),
        factory=lambda ctx: Projects(billing_of(ctx)),
    )
    billing = declare("billing", BillingApi, factory=build_billing)
    container = Container.build(settings_for(tmp_path), [billing, projects], overrides={BillingApi: fake})
    try:
        assert container.implementations["billing"] is fake
        assert container.contracts[BillingApi] is fake
        built = container.implementations["projects"]
        assert isinstance(built, Projects)
        assert built.billing is fake
        assert built_billing == []  # the real factory never ran
    finally:
        await container.aclose()


async def test_overrides_must_implement_the_contract_too(tmp_path: Path) -> None:
    with pytest.raises(ModuleGraphError, match="lacks contract methods: add, get"):
        Container.build(settings_for(tmp_path), [notes_module()], overrides={NotesApi: object()})
