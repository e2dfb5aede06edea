"""`splitstone arch contracts`: the snapshot of the wire shapes, the compatibility rules, write and check.

No `from __future__ import annotations` here: the contracts below are declared inside the tests, and
`describe` can read their annotations only when they are evaluated where they are written.
"""

import copy
import enum
import json
import re
from pathlib import Path
from typing import Any, ClassVar, Literal, Protocol
from uuid import UUID

import pytest
from pydantic import BaseModel, Field
from typer.testing import CliRunner

from splitstone.bootstrap import MODULES
from splitstone.kernel.arch.contracts import (
    GENERATED_NOTE,
    ContractsFileError,
    compare,
    load_snapshot,
    render_changes,
    render_snapshot,
    snapshot,
    unacknowledged,
    update_contracts,
)
from splitstone.kernel.contracts import contract, idempotent
from splitstone.kernel.events import Event
from splitstone.kernel.module import Module

REPO_ROOT = Path(__file__).parents[2]
CONTRACTS_FILE = REPO_ROOT / "docs" / "contracts.json"


def shape(api: type, *events: type[Event]) -> dict[str, Any]:
    """The snapshot of a one-module build, module "shop", with contract `api`."""
    return snapshot([Module(name="shop", contract=api, factory=lambda _ctx: object(), publishes=events)])


def changes(old: dict[str, Any], new: dict[str, Any]) -> list[str]:
    """The changes as text, with contracts named without the test function they are declared in."""
    return [_unqualified(str(change)) for change in compare(old, new)]


def _unqualified(text: str) -> str:
    return re.sub(r"\w+\.<locals>\.", "", text)


class Item(BaseModel):
    sku: str
    quantity: int


# --- arguments: the provider reads what callers send ------------------------------------------------


def test_arguments_may_widen_but_not_narrow() -> None:
    class Shop(Protocol):  # as released
        async def order(
            self, org_id: UUID, quantity: int, note: str | None = None, rush: bool = False
        ) -> int: ...

    released = shape(Shop)

    class Shop(Protocol):  # as it is now
        async def order(
            self, org_id: UUID, quantity: float, note: str, coupon: str | None = None, rush: bool = True
        ) -> int: ...

    assert changes(released, shape(Shop)) == [
        "compatible: Shop.order(coupon): new optional argument",
        "breaking: Shop.order(note): became required",
        "breaking: Shop.order(note): no longer accepts null",
        "compatible: Shop.order(quantity): widened from integer to number",
        "compatible: Shop.order(rush): default changed from false to true",
    ]


def test_a_removed_or_new_required_argument_breaks_old_callers() -> None:
    class Shop(Protocol):  # as released
        async def order(self, org_id: UUID, quantity: int = 1) -> int: ...

    released = shape(Shop)

    class Shop(Protocol):  # as it is now
        async def order(self, org_id: UUID, sku: str) -> int: ...

    assert changes(released, shape(Shop)) == [
        "breaking: Shop.order(quantity): argument removed",
        "breaking: Shop.order(sku): new required argument: callers of the old version do not send it",
    ]


def test_nested_argument_models_follow_the_argument_rules() -> None:
    class Level(enum.StrEnum):
        LOW = "low"
        HIGH = "high"

    class FilterV1(BaseModel):
        level: Level
        tags: list[str] = []
        extra: dict[str, Any] = {}

    class FilterV2(BaseModel):
        level: Level | Literal["urgent"]
        tags: list[int] = []
        extra: dict[str, int] = {}

    class Shop(Protocol):  # as released
        async def search(self, query: FilterV1) -> int: ...

    released = shape(Shop)

    class Shop(Protocol):  # as it is now
        async def search(self, query: FilterV2) -> int: ...

    assert changes(released, shape(Shop)) == [
        "breaking: Shop.search(query).extra[*]: type changed from any to integer",
        'compatible: Shop.search(query).level: now also accepts "urgent"',
        "breaking: Shop.search(query).tags[]: type changed from string to integer",
    ]


def test_argument_enum_values_may_be_added_not_removed() -> None:
    class Shop(Protocol):  # as released
        async def ship(self, speed: Literal["slow", "fast"]) -> None: ...

    released = shape(Shop)

    class Shop(Protocol):  # as it is now
        async def ship(self, speed: Literal["fast", "drone"]) -> None: ...

    assert changes(released, shape(Shop)) == [
        'breaking: Shop.ship(speed): no longer accepts "slow"',
        'compatible: Shop.ship(speed): now also accepts "drone"',
    ]


def test_argument_constraints_may_loosen_not_tighten() -> None:
    class Shop(Protocol):  # as released
        async def rename(self, name: str = Field(max_length=10), size: int = Field(ge=1)) -> None: ...

    released = shape(Shop)

    class Shop(Protocol):  # as it is now
        async def rename(self, name: str = Field(max_length=20), size: int = Field(ge=2)) -> None: ...

    assert changes(released, shape(Shop)) == [
        "compatible: Shop.rename(name): maxLength changed from 10 to 20: accepts more",
        "breaking: Shop.rename(size): minimum changed from 1 to 2: accepts less",
    ]


# --- results and events: both versions must read what the other writes -----------------------------


def test_results_keep_the_type_of_every_field() -> None:
    class Status(enum.StrEnum):
        OPEN = "open"
        CLOSED = "closed"

    class Status2(enum.StrEnum):
        OPEN = "open"
        CLOSED = "closed"
        ARCHIVED = "archived"

    class OrderV1(BaseModel):
        id: UUID
        total: int
        status: Status
        note: str
        items: list[Item]
        legacy: str

    class OrderV2(BaseModel):
        id: str
        total: int | None
        status: Status2
        note: str | None = None
        items: list[Item]
        paid: bool
        currency: str = "EUR"

    class Shop(Protocol):  # as released
        async def get(self, order_id: UUID) -> OrderV1: ...

    released = shape(Shop)

    class Shop(Protocol):  # as it is now
        async def get(self, order_id: UUID) -> OrderV2: ...

    assert changes(released, shape(Shop)) == [
        "breaking: Shop.get() result.legacy: field removed",
        "compatible: Shop.get() result.currency: new optional field",
        "breaking: Shop.get() result.paid: new required field: the old version does not write it",
        "breaking: Shop.get() result.id: type changed from string (uuid) to string",
        "compatible: Shop.get() result.note: became optional",
        "breaking: Shop.get() result.note: may now be null, which readers of the old version reject",
        'breaking: Shop.get() result.status: may now be "archived", which readers of the old version reject',
        "breaking: Shop.get() result.total: may now be null, which readers of the old version reject",
    ]


def test_a_result_narrowed_breaks_readers_of_what_the_old_version_writes() -> None:
    class Shop(Protocol):  # as released
        async def count(self) -> int | None: ...

        async def items(self) -> list[Item]: ...

    class ItemV2(BaseModel):
        sku: str
        quantity: int = Field(le=100)

    released = shape(Shop)

    class Shop(Protocol):  # as it is now
        async def count(self) -> int: ...

        async def items(self) -> list[ItemV2]: ...

    assert changes(released, shape(Shop)) == [
        "breaking: Shop.count() result: can no longer be null, which the old version may still write",
        "breaking: Shop.items() result[].quantity: maximum 100 added: readers of this version may reject "
        "what the other version writes",
    ]


def test_a_new_field_breaks_readers_that_refuse_unknown_fields() -> None:
    class StrictV1(BaseModel, extra="forbid"):
        sku: str

    class StrictV2(BaseModel, extra="forbid"):
        sku: str
        label: str = ""

    class Shop(Protocol):  # as released
        async def get(self) -> StrictV1: ...

    released = shape(Shop)

    class Shop(Protocol):  # as it is now
        async def get(self) -> StrictV2: ...

    assert changes(released, shape(Shop)) == [
        "breaking: Shop.get() result.label: new field: readers of the old version refuse unknown fields"
    ]


class Api(Protocol):
    async def ping(self) -> None: ...


class PlacedV1(Event):
    """An order was placed."""

    name: ClassVar[str] = "shop.OrderPlaced"
    order_id: UUID
    total: int
    coupon: str | None = None


class PlacedV2(Event):
    """An order was placed."""

    name: ClassVar[str] = "shop.OrderPlaced"
    order_id: UUID
    total: int
    channel: str = "web"


class PlacedV2Bumped(PlacedV2):
    version: ClassVar[int] = 2


class Shipped(Event):
    """An order left the warehouse."""

    name: ClassVar[str] = "shop.OrderShipped"
    order_id: UUID


def test_event_payloads_follow_the_result_rules() -> None:
    assert changes(shape(Api, PlacedV1), shape(Api, PlacedV2)) == [
        "breaking: shop.OrderPlaced.coupon: field removed",
        "compatible: shop.OrderPlaced.channel: new optional field",
    ]


def test_an_event_no_longer_published_breaks_its_subscribers_and_a_new_one_does_not() -> None:
    assert changes(shape(Api, PlacedV1), shape(Api, Shipped)) == [
        "breaking: shop.OrderPlaced: event no longer published: subscribers of the old version wait for it",
        "compatible: shop.OrderShipped: new event",
    ]


# --- operations, modules and versions -----------------------------------------------------------


def test_operations_removed_added_and_no_longer_idempotent() -> None:
    class Shop(Protocol):  # as released
        @idempotent
        async def charge(self, amount: int) -> None: ...

        async def refund(self, amount: int) -> None: ...

    released = shape(Shop)

    class Shop(Protocol):  # as it is now
        async def charge(self, amount: int) -> None: ...

        @idempotent
        async def quote(self, amount: int) -> int: ...

    assert changes(released, shape(Shop)) == [
        "breaking: Shop.charge: no longer idempotent: callers of the old version may retry it",
        "compatible: Shop.quote: new operation",
        "breaking: Shop.refund: operation removed",
    ]


def test_documentation_is_not_part_of_the_shape() -> None:
    class DocV1(BaseModel):
        """One thing."""

        sku: str = Field(description="The stock keeping unit.", examples=["A-1"], title="SKU")

    class DocV2(BaseModel):
        """Something else entirely."""

        sku: str = Field(description="Reworded.")

    class Shop(Protocol):  # as released
        async def get(self, sku: str) -> DocV1:
            """Old words."""
            ...

    released = shape(Shop)

    class Shop(Protocol):  # as it is now
        async def get(self, sku: str) -> DocV2:
            """New words."""
            ...

    assert changes(released, shape(Shop)) == []
    text = render_snapshot([Module(name="shop", contract=Shop, factory=lambda _ctx: object())])
    assert "Reworded" not in text
    assert '"title"' not in text


def test_recursive_models_are_compared_without_looping() -> None:
    class NodeV1(BaseModel):
        label: str
        children: list["NodeV1"] = []

    class NodeV2(BaseModel):
        label: str
        weight: int
        children: list["NodeV2"] = []

    class Shop(Protocol):  # as released
        async def tree(self) -> NodeV1: ...

    released = shape(Shop)

    class Shop(Protocol):  # as it is now
        async def tree(self) -> NodeV2: ...

    assert changes(released, shape(Shop)) == [
        "breaking: Shop.tree() result.weight: new required field: the old version does not write it"
    ]


def test_a_version_bump_acknowledges_the_breaking_changes_of_what_it_versions() -> None:
    class V1(Protocol):
        async def get(self, sku: str) -> Item: ...

    @contract(version=2)
    class V2(Protocol):
        async def get(self, sku: str, warehouse: str) -> Item: ...

    unbumped = compare(shape(Api, PlacedV1), shape(Api, PlacedV2))
    assert [c.breaking for c in unacknowledged(unbumped)] == [True]

    bumped = compare(shape(Api, PlacedV1), shape(Api, PlacedV2Bumped))
    assert [str(c) for c in bumped] == [
        "compatible: shop.OrderPlaced: version bumped from 1 to 2",
        "breaking: shop.OrderPlaced.coupon: field removed",
        "compatible: shop.OrderPlaced.channel: new optional field",
    ]
    assert unacknowledged(bumped) == []

    # A contract's version covers its operations, not its events: each event carries its own.
    mixed = compare(shape(V1, PlacedV1), shape(V2, PlacedV2))
    assert [str(c) for c in unacknowledged(mixed)] == ["breaking: shop.OrderPlaced.coupon: field removed"]
    report = _unqualified(render_changes(mixed))
    assert "breaking change to event `shop.OrderPlaced` without a version bump: bump " in report
    assert "`version: ClassVar[int] = 2` on the event class, then run `splitstone arch contracts`" in report
    assert "contract `V2`" in report
    assert "without a version bump: bump `@contract" not in report


def test_a_version_going_down_or_a_module_removed_is_breaking() -> None:
    @contract(version=3)
    class Shop(Protocol):  # as released
        async def ping(self) -> None: ...

    released = shape(Shop)

    class Shop(Protocol):  # as it is now: version 1 again
        async def ping(self) -> None: ...

    assert changes(released, shape(Shop)) == ["breaking: shop: version went down from 3 to 1"]
    gone = compare(shape(Api), {"modules": {}})
    assert [str(c) for c in gone] == ["breaking: shop: module removed, with its operations and events"]
    assert "--force" in render_changes(gone)


# --- the snapshot file --------------------------------------------------------------------------


def test_the_snapshot_is_sorted_indented_json_with_a_trailing_newline() -> None:
    text = render_snapshot(MODULES)

    assert text.endswith("}\n")
    assert text == json.dumps(json.loads(text), indent=2, sort_keys=True, ensure_ascii=False) + "\n"
    assert render_snapshot(list(reversed(MODULES))) == text
    data = json.loads(text)
    assert data["$comment"] == GENERATED_NOTE
    assert sorted(data["modules"]) == sorted(m.name for m in MODULES)
    get_user = data["modules"]["auth"]["operations"]["get_user"]
    assert get_user["idempotent"] is True
    assert get_user["arguments"]["properties"]["user_id"] == {"format": "uuid", "type": "string"}


def test_the_committed_snapshot_matches_the_code() -> None:
    result = CliRunner().invoke(_app(), ["arch", "contracts", "--check", "--file", str(CONTRACTS_FILE)])

    assert result.exit_code == 0, f"run `splitstone arch contracts` and commit it:\n{result.output}"
    assert "contracts up to date" in result.output


def committed() -> dict[str, Any]:
    return load_snapshot(CONTRACTS_FILE.read_text(encoding="utf-8"))


def test_changes_to_the_product_are_classified() -> None:
    """The committed snapshot edited as if the code had changed since, and what the check makes of it."""
    old = committed()
    auth = old["modules"]["auth"]
    user = auth["operations"]["get_user"]["result"]
    user["properties"]["nickname"] = {"type": "string"}  # the code lacks it: a removed field
    user["properties"]["email"] = {"type": "integer"}  # a changed type
    entitlement = old["modules"]["billing"]["operations"]["check_entitlement"]["arguments"]
    del entitlement["properties"]["current"]  # the code has it: a new optional argument
    entitlement["required"].remove("key")  # the code requires it: made required
    del auth["operations"]["get_member"]["arguments"]["properties"]["user_id"]  # a new required argument
    auth["operations"]["get_member"]["arguments"]["required"].remove("user_id")
    auth["operations"]["merge_users"] = copy.deepcopy(auth["operations"]["get_user"])  # a removed operation
    registered = auth["events"]["auth.UserRegistered"]["schema"]
    registered["properties"]["referrer"] = {"type": "string"}  # an event field removed

    assert changes(old, snapshot(MODULES)) == [
        "breaking: AuthApi.get_member(user_id): new required argument: callers of the old version do not "
        "send it",
        "breaking: AuthApi.get_user() result.nickname: field removed",
        "breaking: AuthApi.get_user() result.email: type changed from integer to string",
        "breaking: AuthApi.merge_users: operation removed",
        "breaking: auth.UserRegistered.referrer: field removed",
        "compatible: BillingApi.check_entitlement(current): new optional argument",
        "breaking: BillingApi.check_entitlement(key): became required",
    ]


def test_check_fails_on_a_breaking_change_without_a_bump(tmp_path: Path) -> None:
    old = committed()
    old["modules"]["auth"]["operations"]["get_user"]["result"]["properties"]["nickname"] = {"type": "string"}
    file = tmp_path / "contracts.json"
    file.write_text(json.dumps(old))

    result = CliRunner().invoke(_app(), ["arch", "contracts", "--check", "--file", str(file)])

    assert result.exit_code == 1
    assert "breaking: AuthApi.get_user() result.nickname: field removed" in result.output
    assert (
        "breaking change to contract `AuthApi` (module auth) without a version bump: "
        "bump `@contract(version=2)` on `AuthApi`, then run `splitstone arch contracts`"
    ) in result.output
    assert "breaking changes without a version bump (see above)" in result.output
    assert json.loads(file.read_text()) == old


def test_check_fails_on_compatible_drift_too(tmp_path: Path) -> None:
    old = committed()
    del old["modules"]["billing"]["operations"]["check_entitlement"]["arguments"]["properties"]["current"]
    file = tmp_path / "contracts.json"
    file.write_text(json.dumps(old))

    result = CliRunner().invoke(_app(), ["arch", "contracts", "--check", "--file", str(file)])

    assert result.exit_code == 1
    assert "compatible: BillingApi.check_entitlement(current): new optional argument" in result.output
    assert "is stale; run `splitstone arch contracts`" in result.output
    assert "without a version bump" not in result.output


def test_check_fails_when_the_file_is_only_formatted_differently_or_missing(tmp_path: Path) -> None:
    file = tmp_path / "contracts.json"
    runner = CliRunner()

    assert runner.invoke(_app(), ["arch", "contracts", "--check", "--file", str(file)]).exit_code == 1
    assert not file.exists()
    file.write_text(json.dumps(committed()))  # same content, one line
    result = runner.invoke(_app(), ["arch", "contracts", "--check", "--file", str(file)])
    assert result.exit_code == 1
    assert "is stale; run `splitstone arch contracts`" in result.output


def test_writing_records_compatible_changes_and_refuses_unversioned_breaking_ones(tmp_path: Path) -> None:
    file = tmp_path / "contracts.json"
    runner = CliRunner()

    drift = committed()
    del drift["modules"]["billing"]["operations"]["check_entitlement"]["arguments"]["properties"]["current"]
    file.write_text(json.dumps(drift))
    written = runner.invoke(_app(), ["arch", "contracts", "--file", str(file)])
    assert written.exit_code == 0, written.output
    assert "contracts updated" in written.output
    assert file.read_text() == render_snapshot(MODULES)

    broken = committed()
    broken["modules"]["auth"]["events"]["auth.UserRegistered"]["schema"]["properties"]["referrer"] = {}
    file.write_text(json.dumps(broken))
    refused = runner.invoke(_app(), ["arch", "contracts", "--file", str(file)])
    assert refused.exit_code == 1
    assert "breaking change to event `auth.UserRegistered` without a version bump" in refused.output
    assert "not written" in refused.output
    assert json.loads(file.read_text()) == broken

    forced = runner.invoke(_app(), ["arch", "contracts", "--force", "--file", str(file)])
    assert forced.exit_code == 0, forced.output
    assert "with breaking changes (--force)" in forced.output
    assert runner.invoke(_app(), ["arch", "contracts", "--check", "--file", str(file)]).exit_code == 0


def test_a_bumped_version_is_written_and_becomes_the_baseline(tmp_path: Path) -> None:
    class V1(Protocol):
        async def get(self, sku: str) -> Item: ...

    class V2(Protocol):
        async def get(self, sku: str, warehouse: str) -> Item: ...

    @contract(version=2)
    class V2Bumped(Protocol):
        async def get(self, sku: str, warehouse: str) -> Item: ...

    def build(api: type) -> list[Module]:
        return [Module(name="shop", contract=api, factory=lambda _ctx: object())]

    file = tmp_path / "contracts.json"
    assert update_contracts(file, build(V1)).written
    refused = update_contracts(file, build(V2))
    assert refused.refused
    assert not refused.written
    assert [_unqualified(str(c)) for c in refused.unacknowledged] == [
        "breaking: V2.get(warehouse): new required argument: callers of the old version do not send it"
    ]

    checked = update_contracts(file, build(V2Bumped), check=True)
    assert checked.stale
    assert not checked.written
    assert checked.unacknowledged == []
    accepted = update_contracts(file, build(V2Bumped))
    assert accepted.written
    assert json.loads(file.read_text())["modules"]["shop"]["version"] == 2
    assert not update_contracts(file, build(V2Bumped), check=True).stale


def test_an_unreadable_file_is_a_usage_error(tmp_path: Path) -> None:
    file = tmp_path / "contracts.json"
    file.write_text("{not json")
    runner = CliRunner()

    result = runner.invoke(_app(), ["arch", "contracts", "--check", "--file", str(file)])
    assert result.exit_code == 2
    assert "is not JSON" in result.output

    file.write_text('{"modules": {"auth": {"version": 1}}}')
    with pytest.raises(ContractsFileError, match="lacks contract, events, operations"):
        update_contracts(file, MODULES, check=True)
    assert (
        runner.invoke(_app(), ["arch", "contracts", "--file", str(tmp_path / "no" / "x.json")]).exit_code == 2
    )


def _app() -> Any:
    from splitstone.cli import app

    return app
