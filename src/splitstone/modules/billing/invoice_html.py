"""An invoice as a self-contained, printable HTML page (inline CSS, no scripts, no external assets).

The page is `templates/invoice.html` (with its style sheet `templates/invoice.css` inlined), rendered
by Jinja2 with autoescaping, so names and descriptions are always text, never markup, and with
`StrictUndefined`, so a missing value is an error rather than a blank. Amounts are formatted with the
currency's ISO 4217 exponent; dates are UTC.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from datetime import UTC, datetime
from functools import cache

import jinja2

from splitstone.modules.billing.api import InvoiceStatus
from splitstone.modules.billing.invoices import Invoice

# ISO 4217 minor units that are not 2 (every other currency has cents). Funds codes included.
_EXPONENTS: dict[str, int] = {
    **dict.fromkeys(
        (
            "BIF",
            "CLP",
            "DJF",
            "GNF",
            "ISK",
            "JPY",
            "KMF",
            "KRW",
            "PYG",
            "RWF",
            "UGX",
            "UYI",
            "VND",
            "VUV",
            "XAF",
            "XOF",
            "XPF",
        ),
        0,
    ),
    **dict.fromkeys(("BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"), 3),
    **dict.fromkeys(("CLF", "UYW"), 4),
}

# The stamp across the page; an open invoice has none (its amount due says it all).
_STAMPS: dict[InvoiceStatus, str] = {
    InvoiceStatus.DRAFT: "DRAFT",
    InvoiceStatus.PAID: "PAID",
    InvoiceStatus.VOID: "VOID",
    InvoiceStatus.UNCOLLECTIBLE: "UNCOLLECTIBLE",
}


def currency_exponent(currency: str) -> int:
    """How many decimal places the currency's minor unit has (ISO 4217): 2, or 0 (JPY), 3 (BHD), 4 (CLF)."""
    return _EXPONENTS.get(currency.upper(), 2)


def format_money(amount: int, currency: str) -> str:
    """`amount` minor units as `1,234.50 USD`; negative amounts (credits) with a leading minus."""
    exponent = currency_exponent(currency)
    sign = "-" if amount < 0 else ""
    major, minor = divmod(abs(amount), 10**exponent)
    fraction = f".{minor:0{exponent}d}" if exponent else ""
    return f"{sign}{major:,}{fraction} {currency.upper()}"


def _date(value: datetime | None) -> str:
    return "" if value is None else value.astimezone(UTC).strftime("%Y-%m-%d")


def _issuer_lines(issuer: str) -> list[str]:
    # A real newline, or the two characters `\n` as an environment variable often carries them.
    return [line.strip() for line in re.split(r"\r?\n|\\n", issuer) if line.strip()]


@cache
def _environment() -> jinja2.Environment:
    env = jinja2.Environment(
        loader=jinja2.PackageLoader("splitstone.modules.billing", "templates"),
        autoescape=True,
        undefined=jinja2.StrictUndefined,
        trim_blocks=True,
        lstrip_blocks=True,
    )
    env.filters["date"] = _date
    env.filters["money"] = format_money
    return env


def render_invoice_html(invoice: Invoice, *, issuer: str, plan_names: Mapping[str, str] | None = None) -> str:
    """The invoice as a complete HTML5 page, ready to serve, print or turn into a PDF.

    `issuer` is the seller's name and address, one line per `\\n` (`BillingSettings.invoice_issuer`).
    `plan_names` maps plan codes to names, shown under the lines of a plan (by code if not mapped).
    """
    names = plan_names or {}
    lines = [
        {"line": line, "plan": names.get(line.plan_code, line.plan_code) if line.plan_code else None}
        for line in sorted(invoice.lines, key=lambda line: line.position)
    ]
    return (
        _environment()
        .get_template("invoice.html")
        .render(
            invoice=invoice,
            issuer=_issuer_lines(issuer),
            lines=lines,
            number=invoice.number or "Draft",
            status=invoice.status.value,
            stamp=_STAMPS.get(invoice.status),
        )
    )
