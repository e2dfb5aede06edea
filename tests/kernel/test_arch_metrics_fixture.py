"""`arch report`'s numbers, checked against a fake project whose every number was counted by hand.

tests/fixtures/archfixture_metrics/README.md says where each number in expected_report.json comes from.
One test per module and field, so a failure names what is wrong; then the whole document, which also
catches a field or module too many.
"""

from __future__ import annotations

import json
import sys
from pathlib import Path
from typing import Any

import pytest

from splitstone.kernel.arch.metrics import measure

FIXTURE = Path(__file__).parent.parent / "fixtures" / "archfixture_metrics"
EXPECTED: dict[str, Any] = json.loads((FIXTURE / "expected_report.json").read_text(encoding="utf-8"))
EXPECTED_MODULES = {module["name"]: module for module in EXPECTED["modules"]}


@pytest.fixture(scope="module")
def report() -> dict[str, Any]:
    return measure(FIXTURE / "archfixture_metrics", tests_dir=FIXTURE / "tests").to_json()


def _module(report: dict[str, Any], name: str) -> dict[str, Any]:
    found = [module for module in report["modules"] if module["name"] == name]
    assert len(found) == 1, f"the report has {len(found)} modules named {name!r}"
    return found[0]


def test_the_package_and_its_modules_in_order(report: dict[str, Any]) -> None:
    assert report["package"] == EXPECTED["package"]
    assert [m["name"] for m in report["modules"]] == list(EXPECTED_MODULES)


@pytest.mark.parametrize("name", list(EXPECTED_MODULES))
def test_each_module_has_exactly_the_agreed_fields(report: dict[str, Any], name: str) -> None:
    assert sorted(_module(report, name)) == sorted(EXPECTED_MODULES[name])


@pytest.mark.parametrize(
    ("name", "field"),
    [(name, field) for name, module in EXPECTED_MODULES.items() for field in module if field != "name"],
)
def test_field(report: dict[str, Any], name: str, field: str) -> None:
    assert _module(report, name).get(field) == EXPECTED_MODULES[name][field]


def test_the_whole_document(report: dict[str, Any]) -> None:
    assert report == EXPECTED


def test_the_json_is_plain_and_round_trips(report: dict[str, Any]) -> None:
    assert json.loads(json.dumps(report)) == report


def test_the_fixture_is_read_never_imported(report: dict[str, Any]) -> None:
    assert not any(name.split(".")[0] == "archfixture_metrics" for name in sys.modules)
