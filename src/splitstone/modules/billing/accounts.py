"""Billing accounts: an organization's name, billing contact, provider customer, payment method and
credit balance."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any
from uuid import UUID

from sqlalchemy import select, update
from sqlalchemy.ext.asyncio import AsyncConnection

from splitstone.kernel.clock import Clock
from splitstone.kernel.db import UnitOfWorkFactory, upsert_insert
from splitstone.modules.billing.api import PaymentMethodRequired
from splitstone.modules.billing.provider import CardSummary, PaymentProvider
from splitstone.modules.billing.storage import accounts


@dataclass(frozen=True)
class Account:
    org_id: UUID
    org_name: str
    billing_email: str | None
    currency: str
    provider: str
    provider_customer_id: str | None
    payment_method_id: str | None
    payment_method: CardSummary | None
    credit_balance: int
    trial_used: bool
    created_at: datetime
    updated_at: datetime


def account_from_row(row: Any) -> Account:
    card = json.loads(row["payment_method"]) if row["payment_method"] else None
    return Account(
        org_id=row["org_id"],
        org_name=row["org_name"],
        billing_email=row["billing_email"],
        currency=row["currency"],
        provider=row["provider"],
        provider_customer_id=row["provider_customer_id"],
        payment_method_id=row["payment_method_id"],
        payment_method=CardSummary(**card) if card else None,
        credit_balance=row["credit_balance"],
        trial_used=row["trial_used"],
        created_at=row["created_at"],
        updated_at=row["updated_at"],
    )


async def ensure_account(
    session: AsyncConnection, *, org_id: UUID, org_name: str, currency: str, provider: str, now: datetime
) -> Account:
    """The organization's account, created on first use (idempotent, race-free)."""
    insert = upsert_insert(accounts, session.dialect).values(
        org_id=org_id,
        org_name=org_name,
        billing_email=None,
        currency=currency,
        provider=provider,
        provider_customer_id=None,
        payment_method_id=None,
        payment_method=None,
        credit_balance=0,
        trial_used=False,
        created_at=now,
        updated_at=now,
    )
    await session.execute(insert.on_conflict_do_nothing())
    account = await load_account(session, org_id)
    assert account is not None
    return account


async def load_account(session: AsyncConnection, org_id: UUID, *, lock: bool = False) -> Account | None:
    query = select(accounts).where(accounts.c.org_id == org_id)
    if lock:
        query = query.with_for_update()
    row = (await session.execute(query)).mappings().first()
    return account_from_row(row) if row else None


class Accounts:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock, provider: PaymentProvider) -> None:
        self._uow = uow
        self._clock = clock
        self._provider = provider

    async def get(self, org_id: UUID) -> Account | None:
        async with self._uow(read_only=True) as uow:
            return await load_account(uow.session, org_id)

    async def update(self, org_id: UUID, **changes: str | None) -> Account:
        """Change the name on invoices (`org_name`) and the billing contact (`billing_email`)."""
        async with self._uow() as uow:
            await uow.session.execute(
                update(accounts)
                .where(accounts.c.org_id == org_id)
                .values(**changes, updated_at=self._clock.now())
            )
            account = await load_account(uow.session, org_id)
            assert account is not None
            await uow.commit()
        return account

    async def set_payment_method(self, account: Account, token: str) -> Account:
        """Attach a payment method from a provider token and make it the default.

        The provider is called outside any transaction; the customer is created on first use with an
        idempotency key derived from the organization, so a retry creates no second customer.
        """
        customer_id = account.provider_customer_id
        if customer_id is None:
            customer_id = await self._provider.create_customer(
                org_id=account.org_id,
                name=account.org_name,
                email=account.billing_email,
                idempotency_key=f"customer:{account.org_id}",
            )
            async with self._uow() as uow:
                await uow.session.execute(
                    update(accounts)
                    .where(accounts.c.org_id == account.org_id, accounts.c.provider_customer_id.is_(None))
                    .values(provider_customer_id=customer_id, updated_at=self._clock.now())
                )
                await uow.commit()
        attached = await self._provider.attach_payment_method(customer_id=customer_id, token=token)
        card = attached.card
        async with self._uow() as uow:
            await uow.session.execute(
                update(accounts)
                .where(accounts.c.org_id == account.org_id)
                .values(
                    payment_method_id=attached.id,
                    payment_method=json.dumps(
                        {
                            "brand": card.brand,
                            "last4": card.last4,
                            "exp_month": card.exp_month,
                            "exp_year": card.exp_year,
                        }
                    ),
                    updated_at=self._clock.now(),
                )
            )
            updated = await load_account(uow.session, account.org_id)
            assert updated is not None
            await uow.commit()
        return updated


def require_payment_method(account: Account) -> tuple[str, str]:
    """(customer id, payment method id), or `PaymentMethodRequired`."""
    if account.provider_customer_id is None or account.payment_method_id is None:
        raise PaymentMethodRequired(
            "Add a payment method first: POST .../billing/payment-method with a token.",
            org_id=str(account.org_id),
        )
    return account.provider_customer_id, account.payment_method_id
