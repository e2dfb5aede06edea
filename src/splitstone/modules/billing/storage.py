"""Billing's tables, all in the `billing` schema.

Each index names the query it serves. Ids are UUIDv7, so ordering by id is ordering by creation time:
cursors over invoices are ids. Amounts are BigInteger minor units.
"""

from __future__ import annotations

from sqlalchemy import (
    BigInteger,
    Boolean,
    Column,
    ForeignKey,
    Index,
    Integer,
    PrimaryKeyConstraint,
    String,
    Table,
    Text,
    UniqueConstraint,
    Uuid,
)

from splitstone.kernel.db import UtcDateTime, module_metadata

SCHEMA = "billing"
metadata = module_metadata(SCHEMA)

# -- catalog: every version of every plan a subscription was ever bound to -------------------------------

plan_versions = Table(
    "plan_versions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("code", String(40), nullable=False),
    Column("version", Integer, nullable=False),
    Column("fingerprint", String(64), nullable=False),
    Column("definition", Text, nullable=False),  # PlanDefinition as JSON
    Column("created_at", UtcDateTime, nullable=False),
    UniqueConstraint("code", "version", name="uq_plan_versions_code_version"),
    # Syncing the same catalog twice (or from two processes) inserts each definition once.
    UniqueConstraint("code", "fingerprint", name="uq_plan_versions_code_fingerprint"),
)

# -- accounts: an organization's billing identity at the provider ---------------------------------------

accounts = Table(
    "accounts",
    metadata,
    Column("org_id", Uuid, primary_key=True),
    Column("org_name", String(200), nullable=False),
    Column("billing_email", String(320), nullable=True),
    Column("currency", String(3), nullable=False),
    Column("provider", String(20), nullable=False),
    Column("provider_customer_id", String(255), nullable=True),
    Column("payment_method_id", String(255), nullable=True),
    Column("payment_method", Text, nullable=True),  # JSON: {brand, last4, exp_month, exp_year}
    Column("credit_balance", BigInteger, nullable=False),  # owed to the customer, applied to invoices
    Column("trial_used", Boolean, nullable=False),  # one trial per organization
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# -- subscriptions: one per organization, changing status and plan over time ---------------------------

subscriptions = Table(
    "subscriptions",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, nullable=False, unique=True),
    Column("status", String(12), nullable=False),
    Column("plan_code", String(40), nullable=False),
    Column("plan_version_id", Uuid, ForeignKey("billing.plan_versions.id"), nullable=False),
    Column("interval", String(5), nullable=False),
    Column("billing_anchor", UtcDateTime, nullable=False),
    Column("current_period_start", UtcDateTime, nullable=False),
    Column("current_period_end", UtcDateTime, nullable=False),
    Column("trial_start", UtcDateTime, nullable=True),
    Column("trial_end", UtcDateTime, nullable=True),
    Column("cancel_at_period_end", Boolean, nullable=False),
    Column("canceled_at", UtcDateTime, nullable=True),
    # A downgrade waiting for the period's end.
    Column("scheduled_plan_version_id", Uuid, ForeignKey("billing.plan_versions.id"), nullable=True),
    Column("scheduled_interval", String(5), nullable=True),
    # What was charged for the current plan from `prepaid_from` to the period's end (proration's base).
    Column("prepaid_amount", BigInteger, nullable=False),
    Column("prepaid_from", UtcDateTime, nullable=False),
    Column("incomplete_expires_at", UtcDateTime, nullable=True),
    # The start of the oldest period whose invoice is not final yet: older usage is refused.
    Column("usage_open_from", UtcDateTime, nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)

# The audit trail of every change: GET .../subscription/history.
subscription_history = Table(
    "subscription_history",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("subscription_id", Uuid, ForeignKey("billing.subscriptions.id"), nullable=False),
    Column("org_id", Uuid, nullable=False),
    Column("change", String(30), nullable=False),
    Column("from_status", String(12), nullable=True),
    Column("to_status", String(12), nullable=False),
    Column("from_plan", String(40), nullable=True),
    Column("to_plan", String(40), nullable=False),
    Column("detail", Text, nullable=True),  # JSON
    Column("occurred_at", UtcDateTime, nullable=False),
    # An organization's history, newest first.
    Index("ix_subscription_history_org", "org_id", "id"),
)

# Proration credits and charges waiting for the next invoice.
pending_items = Table(
    "pending_items",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, nullable=False),
    Column("subscription_id", Uuid, ForeignKey("billing.subscriptions.id"), nullable=False),
    Column("kind", String(12), nullable=False),
    Column("description", String(300), nullable=False),
    Column("amount", BigInteger, nullable=False),
    Column("plan_code", String(40), nullable=True),
    Column("period_start", UtcDateTime, nullable=False),
    Column("period_end", UtcDateTime, nullable=False),
    Column("invoice_id", Uuid, ForeignKey("billing.invoices.id"), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    # A subscription's items not yet on an invoice.
    Index("ix_pending_items_open", "subscription_id", "invoice_id"),
)

# -- usage ---------------------------------------------------------------------------------------------

usage_events = Table(
    "usage_events",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, nullable=False),
    Column("metric", String(40), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("unique_value", String(255), nullable=True),
    Column("idempotency_key", String(255), nullable=False),
    Column("occurred_at", UtcDateTime, nullable=False),
    Column("recorded_at", UtcDateTime, nullable=False),
    # A repeated key is the same usage: recorded once (ON CONFLICT DO NOTHING).
    UniqueConstraint("org_id", "idempotency_key", name="uq_usage_events_org_key"),
    # A period's aggregate of one metric: WHERE org_id = ? AND metric = ? AND occurred_at in [start, end).
    Index("ix_usage_events_period", "org_id", "metric", "occurred_at", "quantity"),
)

# -- invoices ------------------------------------------------------------------------------------------

invoices = Table(
    "invoices",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("org_id", Uuid, nullable=False),
    Column("subscription_id", Uuid, ForeignKey("billing.subscriptions.id"), nullable=True),
    Column("status", String(14), nullable=False),
    Column("billing_reason", String(30), nullable=False),
    # What makes an invoice unique per subscription ("cycle:<period end>"): two schedulers, one invoice.
    Column("dedupe_key", String(100), nullable=False),
    Column("number", String(40), nullable=True),  # assigned when finalized
    Column("sequence", Integer, nullable=True),
    Column("currency", String(3), nullable=False),
    Column("subtotal", BigInteger, nullable=False),
    Column("credit_applied", BigInteger, nullable=False),
    Column("total", BigInteger, nullable=False),
    Column("amount_due", BigInteger, nullable=False),
    Column("amount_paid", BigInteger, nullable=False),
    Column("period_start", UtcDateTime, nullable=False),
    Column("period_end", UtcDateTime, nullable=False),
    # The plan whose metered prices apply to the period's usage, priced when the invoice is finalized.
    Column("usage_plan_version_id", Uuid, ForeignKey("billing.plan_versions.id"), nullable=True),
    Column("customer_name", String(200), nullable=False),
    Column("customer_email", String(320), nullable=True),
    Column("attempt_count", Integer, nullable=False),
    Column("next_payment_attempt_at", UtcDateTime, nullable=True),
    Column("finalize_at", UtcDateTime, nullable=True),  # when a draft is finalized
    Column("created_at", UtcDateTime, nullable=False),
    Column("finalized_at", UtcDateTime, nullable=True),
    Column("paid_at", UtcDateTime, nullable=True),
    Column("voided_at", UtcDateTime, nullable=True),
    Column("marked_uncollectible_at", UtcDateTime, nullable=True),
    UniqueConstraint("org_id", "dedupe_key", name="uq_invoices_org_dedupe"),
    # Gap-free numbers per organization.
    UniqueConstraint("org_id", "sequence", name="uq_invoices_org_sequence"),
    # An organization's invoices, newest first (keyset over id).
    Index("ix_invoices_org", "org_id", "id"),
)

invoice_lines = Table(
    "invoice_lines",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("invoice_id", Uuid, ForeignKey("billing.invoices.id", ondelete="CASCADE"), nullable=False),
    Column("position", Integer, nullable=False),
    Column("kind", String(12), nullable=False),  # subscription | proration | usage
    Column("description", String(300), nullable=False),
    Column("quantity", BigInteger, nullable=False),
    Column("unit_amount", BigInteger, nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("plan_code", String(40), nullable=True),
    Column("metric", String(40), nullable=True),
    Column("period_start", UtcDateTime, nullable=False),
    Column("period_end", UtcDateTime, nullable=False),
    # An invoice's lines in order.
    UniqueConstraint("invoice_id", "position", name="uq_invoice_lines_position"),
)

# The last invoice number of each organization: taken with UPDATE ... RETURNING when finalizing.
invoice_counters = Table(
    "invoice_counters",
    metadata,
    Column("org_id", Uuid, primary_key=True),
    Column("last_sequence", Integer, nullable=False),
)

# -- payments ------------------------------------------------------------------------------------------

payments = Table(
    "payments",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("invoice_id", Uuid, ForeignKey("billing.invoices.id"), nullable=False),
    Column("org_id", Uuid, nullable=False),
    Column("attempt", Integer, nullable=False),
    Column("provider", String(20), nullable=False),
    Column("provider_payment_id", String(255), nullable=True),
    Column("amount", BigInteger, nullable=False),
    Column("currency", String(3), nullable=False),
    Column("status", String(12), nullable=False),  # processing | succeeded | failed
    Column("failure_code", String(100), nullable=True),
    Column("failure_message", String(500), nullable=True),
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
    # One row per attempt of an invoice.
    UniqueConstraint("invoice_id", "attempt", name="uq_payments_invoice_attempt"),
    # A provider's webhook names its payment.
    UniqueConstraint("provider", "provider_payment_id", name="uq_payments_provider_id"),
)

# Inbound provider webhooks, deduplicated by the provider's event id.
provider_events = Table(
    "provider_events",
    metadata,
    Column("provider", String(20), nullable=False),
    Column("event_id", String(255), nullable=False),
    Column("type", String(100), nullable=False),
    Column("received_at", UtcDateTime, nullable=False),
    PrimaryKeyConstraint("provider", "event_id", name="pk_provider_events"),
)

# -- the sandbox provider's own state (customers, payment methods, payments) ----------------------------

sandbox_objects = Table(
    "sandbox_objects",
    metadata,
    Column("id", String(64), primary_key=True),  # cus_..., pm_..., pi_..., evt_...
    Column("kind", String(20), nullable=False),
    Column("data", Text, nullable=False),  # JSON
    Column("created_at", UtcDateTime, nullable=False),
    Column("updated_at", UtcDateTime, nullable=False),
)
