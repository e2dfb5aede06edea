"""A toy contract, shaped like a module's `api.py`: what the remote tests serve and call.

It has DTOs, its own errors (one with extra members), idempotent reads, a write that is not safe to
repeat, one made safe by an idempotency key, a method that returns nothing, and arguments of every
kind a contract uses (lists, UUIDs, datetimes, enums, frozensets, models, optionals with defaults).
"""

from __future__ import annotations

from datetime import datetime
from enum import StrEnum
from typing import Protocol
from uuid import UUID

from pydantic import BaseModel, Field
from uuid6 import uuid7

from splitstone.kernel.contracts import contract, idempotent
from splitstone.kernel.errors import Conflict, NotFound


class Colour(StrEnum):
    RED = "red"
    GREEN = "green"


class Item(BaseModel):
    id: UUID = Field(default_factory=uuid7)
    name: str
    colour: Colour
    tags: frozenset[str] = frozenset()
    made_at: datetime


class Echo(BaseModel):
    ids: list[UUID]
    when: datetime
    colour: Colour
    tags: frozenset[str]
    item: Item
    note: str | None


class ItemNotFound(NotFound):
    code = "item-not-found"
    title = "Item not found"


class OutOfStock(Conflict):
    """Raised with extras `item_id` and `available`."""

    code = "out-of-stock"
    title = "Not enough in stock"


@contract(version=3)
class ShopApi(Protocol):
    """What the toy shop serves."""

    @idempotent
    async def echo(
        self,
        ids: list[UUID],
        when: datetime,
        colour: Colour,
        tags: frozenset[str],
        item: Item,
        note: str | None = None,
    ) -> Echo:
        """Every argument back, as received."""
        ...

    @idempotent
    async def get_item(self, item_id: UUID) -> Item:
        """One item; raises `ItemNotFound`."""
        ...

    @idempotent
    async def stock(self) -> dict[UUID, int]:
        """How many of each item are in stock."""
        ...

    async def reserve(self, item_id: UUID, quantity: int) -> int:
        """Take `quantity` out of stock (not safe to repeat); the stock left. Raises `OutOfStock`."""
        ...

    async def restock(self, item_id: UUID, quantity: int, idempotency_key: str) -> int:
        """Put `quantity` back in stock, once per key; the stock now."""
        ...

    @idempotent
    async def forget(self, item_id: UUID) -> None:
        """Drop an item from the shop."""
        ...

    @idempotent
    async def fail(self, how: str) -> None:
        """Raise the error named `how` (see the tests' implementation)."""
        ...
