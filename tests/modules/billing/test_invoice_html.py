"""An invoice as a printable HTML page: every status, credits, currencies' minor units, escaping."""

from __future__ import annotations

import re
from dataclasses import replace
from datetime import UTC, datetime
from html.parser import HTMLParser
from uuid import UUID

import pytest

from splitstone.modules.billing.api import InvoiceStatus
from splitstone.modules.billing.invoice_html import currency_exponent, format_money, render_invoice_html
from splitstone.modules.billing.invoices import BillingReason, Invoice, InvoiceLine, LineKind

MARCH = datetime(2026, 3, 1, tzinfo=UTC)
APRIL = datetime(2026, 4, 1, tzinfo=UTC)
FEBRUARY = datetime(2026, 2, 1, tzinfo=UTC)
TO = "\N{EN DASH}"  # between the two dates of a period


def line(position: int, description: str, amount: int, **fields: object) -> InvoiceLine:
    values: dict[str, object] = {
        "id": UUID(int=position + 1),
        "position": position,
        "kind": LineKind.SUBSCRIPTION,
        "description": description,
        "quantity": 1,
        "unit_amount": amount,
        "amount": amount,
        "plan_code": "pro",
        "metric": None,
        "period_start": MARCH,
        "period_end": APRIL,
    }
    values.update(fields)
    return InvoiceLine(**values)  # type: ignore[arg-type]


def invoice(**fields: object) -> Invoice:
    """An open invoice of Pro for March: 19.00, a 5.00 proration credit, 2.50 of API calls."""
    lines = (
        line(0, "Pro (monthly)", 1900),
        line(
            1,
            "Unused time on Free",
            -500,
            kind=LineKind.PRORATION,
            plan_code="free",
            unit_amount=None,
        ),
        line(
            2,
            "API calls over 100,000 included",
            250,
            kind=LineKind.USAGE,
            quantity=105_000,
            unit_amount=50,
            plan_code=None,
            metric="api_calls",
            period_start=FEBRUARY,
            period_end=MARCH,
        ),
    )
    values: dict[str, object] = {
        "id": UUID("0191f0a4-1111-7b3a-9d2e-5f6a7b8c9d0e"),
        "org_id": UUID(int=7),
        "subscription_id": UUID(int=8),
        "status": InvoiceStatus.OPEN,
        "billing_reason": BillingReason.SUBSCRIPTION_CYCLE,
        "number": "SPL-2026-0042",
        "currency": "USD",
        "subtotal": 1650,
        "credit_applied": 0,
        "total": 1650,
        "amount_due": 1650,
        "amount_paid": 0,
        "period_start": MARCH,
        "period_end": APRIL,
        "customer_name": "Acme Inc.",
        "customer_email": "billing@acme.example",
        "attempt_count": 0,
        "next_payment_attempt_at": None,
        "created_at": datetime(2026, 3, 1, 0, 5, tzinfo=UTC),
        "finalized_at": datetime(2026, 3, 1, 1, 5, tzinfo=UTC),
        "paid_at": None,
        "voided_at": None,
        "marked_uncollectible_at": None,
        "lines": lines,
    }
    values.update(fields)
    return Invoice(**values)  # type: ignore[arg-type]


def text_of(html: str) -> str:
    """The page's visible text (outside <style> and <title>), whitespace collapsed."""

    class Text(HTMLParser):
        def __init__(self) -> None:
            super().__init__()
            self.parts: list[str] = []
            self.skip = 0

        def handle_starttag(self, tag: str, attrs: object) -> None:
            if tag in ("style", "title"):
                self.skip += 1

        def handle_endtag(self, tag: str) -> None:
            if tag in ("style", "title"):
                self.skip -= 1

        def handle_data(self, data: str) -> None:
            if not self.skip:
                self.parts.append(data)

    parser = Text()
    parser.feed(html)
    return re.sub(r"\s+", " ", " ".join(parser.parts)).strip()


def stamp_of(html: str) -> str | None:
    found = re.search(r'<span class="stamp"[^>]*>([^<]*)</span>', html)
    return found.group(1) if found else None


def render(inv: Invoice) -> str:
    return render_invoice_html(
        inv, issuer="Splitstone Ltd\n1 Quarry Lane\nGranite Falls", plan_names={"pro": "Pro"}
    )


# -- the page ------------------------------------------------------------------------------------------


def test_an_open_invoice_shows_parties_dates_lines_and_totals() -> None:
    html = render(invoice())
    text = text_of(html)
    assert html.startswith("<!DOCTYPE html>")
    assert "<title>Invoice SPL-2026-0042 · Splitstone Ltd</title>" in html
    assert "<strong>Splitstone Ltd</strong><br>1 Quarry Lane<br>Granite Falls" in html
    assert "Bill to Acme Inc. billing@acme.example" in text
    assert "Invoice number SPL-2026-0042" in text
    assert "Status Open" in text
    assert "Created 2026-03-01" in text
    assert "Finalized 2026-03-01" in text
    assert "Paid" not in text
    assert f"Billing period 2026-03-01 {TO} 2026-04-01" in text
    assert stamp_of(html) is None  # an open invoice is simply due
    # The lines in order: description (with the plan), period, quantity, unit price, amount.
    assert "Description Period Quantity Unit price Amount" in text
    assert f"Pro (monthly) Plan: Pro 2026-03-01 {TO} 2026-04-01 1 19.00 USD 19.00 USD" in text
    assert f"Unused time on Free Plan: free 2026-03-01 {TO} 2026-04-01 1 — -5.00 USD" in text
    assert f"API calls over 100,000 included 2026-02-01 {TO} 2026-03-01 105,000 0.50 USD 2.50 USD" in text
    assert text.index("Pro (monthly)") < text.index("Unused time") < text.index("API calls")
    assert (
        "Subtotal 16.50 USD Credit applied 0.00 USD Total 16.50 USD Amount paid 0.00 USD "
        "Amount due 16.50 USD" in text
    )


def test_the_page_is_self_contained_and_printable() -> None:
    html = render(invoice())
    assert "<style>" in html
    assert "@page" in html
    assert "@media print" in html
    for external in ("<script", "<link", "<img", "src=", "http://", "https://", "@import", "url("):
        assert external not in html


def test_lines_are_listed_by_position_whatever_their_order() -> None:
    inv = invoice()
    html = render(replace(inv, lines=tuple(reversed(inv.lines))))
    text = text_of(html)
    assert text.index("Pro (monthly)") < text.index("Unused time") < text.index("API calls")


@pytest.mark.parametrize(
    ("status", "stamp", "dates"),
    [
        (InvoiceStatus.DRAFT, "DRAFT", {}),
        (InvoiceStatus.OPEN, None, {}),
        (InvoiceStatus.PAID, "PAID", {"paid_at": datetime(2026, 3, 2, 9, 30, tzinfo=UTC)}),
        (InvoiceStatus.VOID, "VOID", {"voided_at": datetime(2026, 3, 3, tzinfo=UTC)}),
        (
            InvoiceStatus.UNCOLLECTIBLE,
            "UNCOLLECTIBLE",
            {"marked_uncollectible_at": datetime(2026, 3, 20, tzinfo=UTC)},
        ),
    ],
)
def test_each_status_has_its_stamp_and_dates(
    status: InvoiceStatus, stamp: str | None, dates: dict[str, datetime]
) -> None:
    fields: dict[str, object] = {"status": status, **dates}
    if status is InvoiceStatus.DRAFT:
        fields.update(number=None, finalized_at=None)
    if status is InvoiceStatus.PAID:
        fields.update(amount_paid=1650, amount_due=0)
    html = render(invoice(**fields))
    text = text_of(html)
    assert stamp_of(html) == stamp
    assert f"Status {status.value.capitalize()}" in text
    if status is InvoiceStatus.DRAFT:
        assert "Invoice number Draft" in text
        assert "<title>Invoice Draft · Splitstone Ltd</title>" in html
        assert "Finalized" not in text
    if status is InvoiceStatus.PAID:
        assert "Paid 2026-03-02" in text
        assert "Amount paid 16.50 USD Amount due 0.00 USD" in text
    if status is InvoiceStatus.VOID:
        assert "Voided 2026-03-03" in text
    if status is InvoiceStatus.UNCOLLECTIBLE:
        assert "Uncollectible 2026-03-20" in text


def test_a_credit_applied_is_shown_as_a_negative_amount() -> None:
    html = render(invoice(credit_applied=1000, total=650, amount_due=650))
    assert (
        "Subtotal 16.50 USD Credit applied -10.00 USD Total 6.50 USD Amount paid 0.00 USD Amount due 6.50 USD"
        in (text_of(html))
    )


def test_an_invoice_without_an_email_or_lines() -> None:
    text = text_of(render(invoice(customer_email=None, lines=(), subtotal=0, total=0, amount_due=0)))
    assert "Bill to Acme Inc. Amount due" in text
    assert "No lines." in text


def test_without_plan_names_a_line_names_its_plan_by_code() -> None:
    text = text_of(render_invoice_html(invoice(), issuer="Splitstone"))
    assert "Pro (monthly) Plan: pro" in text


# -- money -----------------------------------------------------------------------------------------------


def test_amounts_in_yen_have_no_minor_unit() -> None:
    lines = (line(0, "Pro (monthly)", 2900, quantity=1), line(1, "Credit", -1200, unit_amount=None))
    html = render(
        invoice(currency="JPY", lines=lines, subtotal=1700, credit_applied=200, total=1500, amount_due=1500)
    )
    text = text_of(html)
    assert "2,900 JPY 2,900 JPY" in text
    assert "-1,200 JPY" in text
    assert "Subtotal 1,700 JPY Credit applied -200 JPY Total 1,500 JPY" in text
    assert "Amounts in JPY" in text


def test_amounts_in_bahraini_dinar_have_three_decimals() -> None:
    lines = (line(0, "Pro (monthly)", 7125),)
    html = render(
        invoice(currency="BHD", lines=lines, subtotal=7125, credit_applied=5, total=7120, amount_due=7120)
    )
    text = text_of(html)
    assert "7.125 BHD 7.125 BHD" in text
    assert "Credit applied -0.005 BHD Total 7.120 BHD" in text


@pytest.mark.parametrize(
    ("amount", "currency", "expected"),
    [
        (0, "USD", "0.00 USD"),
        (5, "USD", "0.05 USD"),
        (-5, "EUR", "-0.05 EUR"),
        (123456789, "USD", "1,234,567.89 USD"),
        (-1900, "USD", "-19.00 USD"),
        (1500, "JPY", "1,500 JPY"),
        (-7, "KRW", "-7 KRW"),
        (1, "KWD", "0.001 KWD"),
        (-12345, "BHD", "-12.345 BHD"),
        (10000, "CLF", "1.0000 CLF"),
        (100, "usd", "1.00 USD"),
    ],
)
def test_format_money(amount: int, currency: str, expected: str) -> None:
    assert format_money(amount, currency) == expected


def test_currency_exponents_follow_iso_4217() -> None:
    assert [
        currency_exponent(c) for c in ("USD", "EUR", "JPY", "KRW", "VND", "BHD", "KWD", "TND", "CLF")
    ] == [
        2,
        2,
        0,
        0,
        0,
        3,
        3,
        3,
        4,
    ]


# -- escaping --------------------------------------------------------------------------------------------


def test_what_customers_and_operators_wrote_is_escaped() -> None:
    evil = '<script>alert("pwned")</script><img src=x onerror=alert(1)>'
    html = render_invoice_html(
        invoice(
            customer_name=evil,
            customer_email='"><b>x</b>@example.com',
            lines=(line(0, f"Pro {evil}", 1900, plan_code="pro"),),
            number="<i>42</i>",
        ),
        issuer="Evil & Sons <b>Ltd</b>\n</address><script>x()</script>",
        plan_names={"pro": "<u>Pro</u>"},
    )
    assert "<script" not in html
    assert "<img" not in html
    assert "<b>" not in html
    assert "<u>" not in html
    assert "<i>" not in html
    assert "&lt;script&gt;alert(&#34;pwned&#34;)&lt;/script&gt;&lt;img src=x onerror=alert(1)&gt;" in html
    assert "&lt;/address&gt;&lt;script&gt;x()&lt;/script&gt;" in html
    assert "Evil &amp; Sons &lt;b&gt;Ltd&lt;/b&gt;" in html
    assert "Plan: &lt;u&gt;Pro&lt;/u&gt;" in html
    assert "<title>Invoice &lt;i&gt;42&lt;/i&gt; · Evil &amp; Sons &lt;b&gt;Ltd&lt;/b&gt;</title>" in html
    text = text_of(html)
    assert f"Bill to {evil}" in text  # shown as the text it is


def test_issuer_lines_split_on_newlines_and_on_a_literal_backslash_n() -> None:
    html = render_invoice_html(invoice(), issuer="Splitstone Ltd\\n1 Quarry Lane\r\nGranite Falls\n\n")
    assert "<strong>Splitstone Ltd</strong><br>1 Quarry Lane<br>Granite Falls\n" in html
