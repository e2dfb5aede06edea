"""Billing's operator commands: `splitstone billing ...`: the plans, their stored versions, and checking
a catalog file before deploying it.

They only read. Billing stores a changed plan as its next version when it first uses the catalog (see
`plans.py`); until then these commands show that version as "not stored yet", so that running one with
another catalog than the servers' cannot store a version no server uses.
"""

from __future__ import annotations

import asyncio
from collections.abc import Coroutine
from pathlib import Path
from typing import Annotated, Any

import typer
from rich.console import Console
from rich.table import Table

from splitstone.kernel.module import ImplementationProvider
from splitstone.modules.billing.catalog import Catalog, CatalogError, Plan, PlanDefinition, load_catalog
from splitstone.modules.billing.invoice_html import format_money
from splitstone.modules.billing.plans import PlanVersion

NOT_STORED_NOTE = (
    "Not stored yet: billing stores a changed plan as its next version when it first uses the catalog "
    "(SPLITSTONE_BILLING_CATALOG_PATH, or the shipped one)."
)


def build_cli(implementation: ImplementationProvider) -> typer.Typer:
    app = typer.Typer(help="Billing: the catalog, subscriptions and invoices.", no_args_is_help=True)
    catalog_app = typer.Typer(help="The catalog file: metrics, entitlements and plans.", no_args_is_help=True)
    app.add_typer(catalog_app, name="catalog")

    @app.command("plans")
    def plans() -> None:
        """The configured catalog's plans: version, prices, trial and limits."""

        async def run() -> bool:
            async with implementation() as service:
                catalog: Catalog = service.catalog
                stored = {code: await service.plans.versions(code) for code in catalog.plans}
            table = Table()
            for title in ("code", "name", "version", "prices", "trial", "limits"):
                table.add_column(title, overflow="fold")
            pending = False
            for definition in catalog.definitions():
                version, is_stored = _version_of(definition, stored[definition.code])
                pending = pending or not is_stored
                plan = definition.plan
                table.add_row(
                    definition.code,
                    plan.name,
                    str(version) if is_stored else f"{version} (not stored yet)",
                    _prices(plan, definition.currency),
                    _trial(plan),
                    _limits(plan),
                )
            Console().print(table)
            if pending:
                typer.echo(NOT_STORED_NOTE)
            return True

        _run(run())

    @app.command("plan-versions")
    def plan_versions(code: Annotated[str, typer.Argument(help="A plan code, e.g. pro.")]) -> None:
        """Every stored version of a plan, oldest first, also of a plan no longer in the catalog."""

        async def run() -> bool:
            async with implementation() as service:
                catalog: Catalog = service.catalog
                versions = await service.plans.versions(code)
            definition = catalog.definition(code) if code in catalog.plans else None
            if not versions and definition is None:
                known = ", ".join(catalog.plans)
                typer.echo(f"error: there is no plan {code!r}; the catalog's plans: {known}", err=True)
                return False
            current = definition.fingerprint if definition else None
            table = Table(title=f"plan {code}")
            columns = (
                "version",
                "created (UTC)",
                "name",
                "prices",
                "trial",
                "limits",
                "fingerprint",
                "current",
            )
            for title in columns:
                table.add_column(title, overflow="fold")
            for v in versions:
                plan = v.definition.plan
                fingerprint = v.definition.fingerprint
                table.add_row(
                    str(v.version),
                    v.created_at.strftime("%Y-%m-%d %H:%M:%S"),
                    v.name,
                    _prices(plan, v.definition.currency),
                    _trial(plan),
                    _limits(plan),
                    fingerprint[:12],
                    "yes" if fingerprint == current else "",
                )
            Console().print(table)
            if definition is None:
                typer.echo(f"{code} is not in the catalog: no new subscription can choose it.")
            else:
                version, is_stored = _version_of(definition, versions)
                if not is_stored:
                    typer.echo(f"The catalog's {code} will be version {version}. {NOT_STORED_NOTE}")
            return True

        _run(run())

    @catalog_app.command("check")
    def check(
        path: Annotated[
            Path | None,
            typer.Argument(
                help="The catalog TOML file to check (default: the one shipped with splitstone).",
                show_default=False,
            ),
        ] = None,
    ) -> None:
        """Validate a catalog file, and print what it defines (or what is wrong, and exit 1)."""
        try:
            catalog = load_catalog(path)
        except CatalogError as error:
            typer.echo(f"error: {error}", err=True)
            raise typer.Exit(code=1) from None
        _summary(catalog, str(path) if path else "the shipped catalog")

    return app


def _run(command: Coroutine[Any, Any, bool]) -> None:
    """Run a command that needs the service; exit 1 when it failed or the configured catalog is invalid."""
    try:
        succeeded = asyncio.run(command)
    except CatalogError as error:
        typer.echo(f"error: {error}", err=True)
        raise typer.Exit(code=1) from None
    if not succeeded:
        raise typer.Exit(code=1)


def _version_of(definition: PlanDefinition, stored: list[PlanVersion]) -> tuple[int, bool]:
    """The version number of the definition, and whether it is stored (else: the number it will get)."""
    fingerprint = definition.fingerprint
    for version in stored:
        if version.definition.fingerprint == fingerprint:
            return version.version, True
    return max((v.version for v in stored), default=0) + 1, False


def _summary(catalog: Catalog, source: str) -> None:
    typer.echo(
        f"ok: {source}: currency {catalog.currency}, default plan {catalog.default_plan}; "
        f"{len(catalog.metrics)} metrics, {len(catalog.entitlements)} entitlements, "
        f"{len(catalog.plans)} plans"
    )
    table = Table()
    for title in ("code", "name", "prices", "trial", "limits", "metered", "fingerprint"):
        table.add_column(title, overflow="fold")
    for definition in catalog.definitions():
        plan = definition.plan
        table.add_row(
            definition.code,
            plan.name,
            _prices(plan, catalog.currency),
            _trial(plan),
            _limits(plan),
            ", ".join(m.metric for m in plan.metered) or "-",
            definition.fingerprint[:12],
        )
    Console().print(table)


def _prices(plan: Plan, currency: str) -> str:
    return ", ".join(
        f"{format_money(amount, currency)}/{interval}" for interval, amount in plan.prices.items()
    )


def _trial(plan: Plan) -> str:
    return f"{plan.trial_days} days" if plan.trial_days else "-"


def _limits(plan: Plan) -> str:
    return ", ".join(f"{k} {'unlimited' if v is None else v}" for k, v in plan.limits.items()) or "-"
