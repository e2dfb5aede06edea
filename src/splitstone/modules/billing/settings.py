"""Billing's own settings (`SPLITSTONE_BILLING_*`), handed to it by the composition root."""

from __future__ import annotations

from pathlib import Path
from typing import Literal

from pydantic import Field, SecretStr, field_validator
from pydantic_settings import SettingsConfigDict

from splitstone.kernel.settings import ModuleSettings


class BillingSettings(ModuleSettings):
    model_config = SettingsConfigDict(env_prefix="SPLITSTONE_BILLING_", env_file=".env", extra="ignore")

    catalog_path: Path | None = Field(
        default=None, description="A catalog TOML file to use instead of the shipped one."
    )

    # The payment provider
    provider: Literal["sandbox", "stripe"] = Field(
        default="sandbox", description='"sandbox": simulated, with test tokens; "stripe": the Stripe API.'
    )
    stripe_api_key: SecretStr | None = Field(default=None, description="Required with provider=stripe.")
    stripe_webhook_secret: SecretStr | None = Field(
        default=None, description="The signing secret of the Stripe webhook endpoint (`whsec_...`)."
    )
    stripe_api_base: str = Field(
        default="https://api.stripe.com", description="Only tests point it elsewhere (a fake server)."
    )
    sandbox_webhook_url: str | None = Field(
        default="{base_url}/api/v1/billing/webhooks/sandbox",
        description="Where the sandbox posts its signed webhooks; empty: it posts none (then payments "
        "with the asynchronous test tokens never settle).",
    )
    sandbox_webhook_secret: SecretStr | None = Field(
        default=None, description="Signs the sandbox's webhooks; generated under data/secrets if unset."
    )
    sandbox_settle_seconds: float = Field(
        default=5, ge=0, description="How long the sandbox's asynchronous payments stay processing."
    )
    provider_event_retention_days: float = Field(
        default=30,
        ge=4,
        description="Inbound provider events are remembered (so a repeat changes nothing) this long; "
        "more than the provider's retry window (Stripe: 3 days).",
    )
    webhook_tolerance_seconds: int = Field(
        default=300, ge=1, description="Inbound webhooks signed longer ago than this are refused."
    )

    # Invoices and dunning
    invoice_finalize_delay_seconds: int = Field(
        default=3600,
        ge=0,
        description="A period's draft invoice is finalized this long after the period ends, so late "
        "usage reports still count.",
    )
    dunning_retry_days: list[float] = Field(
        default=[1, 3, 5],
        description="Days after the first failed payment at which it is retried (1, 3, 5: retries on "
        "day 1, 3 and 5).",
    )
    dunning_final_action: Literal["unpaid", "cancel"] = Field(
        default="unpaid",
        description='After the last failed retry: "unpaid" (the open invoice can still be paid) or '
        '"cancel" (the subscription ends, the invoice is marked uncollectible).',
    )
    incomplete_expiry_hours: float = Field(
        default=23, gt=0, description="A new paid subscription whose first payment fails ends after this."
    )
    trial_ending_notice_days: float = Field(
        default=3, ge=0, description="`TrialEnding` is announced this long before a trial ends."
    )
    entitlement_cache_seconds: float = Field(
        default=30,
        ge=0,
        description="How long an organization's plan is cached for entitlement checks (changes made in "
        "this process invalidate it at once).",
    )
    invoice_issuer: str = Field(
        default="Splitstone", description="The seller's name and address on invoices (lines split by '\\n')."
    )
    upgrade_url: str = Field(
        default="{base_url}/api/v1/billing/plans",
        description="Named in 402 problems as where to upgrade; `{base_url}` and `{org_id}` are filled in.",
    )

    @field_validator("dunning_retry_days")
    @classmethod
    def _increasing(cls, days: list[float]) -> list[float]:
        if any(d <= 0 for d in days) or days != sorted(set(days)):
            raise ValueError("dunning_retry_days must be positive and increasing, e.g. [1, 3, 5]")
        return days
