"""A tiny fake module, "notes", so the kernel is tested without any real business module.

It has the same shape as a real one: a Protocol contract, an event, errors, a factory, a router, its own
`notes` schema with tables and an Alembic history (tests/kernel/fake_migrations). Like every module, it
is migrated with `migrations.upgrade_module`, which also creates the kernel's outbox, inbox and job
tables in its schema (see `migrate_notes`).
"""

from __future__ import annotations

from collections.abc import AsyncIterator
from datetime import datetime
from pathlib import Path
from typing import Annotated, Any, ClassVar, Protocol
from uuid import UUID

import httpx
import pytest
from fastapi import APIRouter, Depends, FastAPI, Request
from pydantic import BaseModel, Field
from sqlalchemy import Column, ForeignKey, String, Table, Uuid, insert, select
from uuid6 import uuid7

from splitstone.kernel import migrations
from splitstone.kernel.app import API_PREFIX, create_app
from splitstone.kernel.clock import Clock, ManualClock
from splitstone.kernel.container import Container
from splitstone.kernel.db import ModuleDatabase, UnitOfWorkFactory, UtcDateTime, module_metadata
from splitstone.kernel.errors import DomainError, NotAuthenticated, NotFound, RateLimited
from splitstone.kernel.events import Event, EventRecorder
from splitstone.kernel.http.security import bearer_principal
from splitstone.kernel.module import Module, ModuleContext
from splitstone.kernel.ratelimit import RateLimiter
from splitstone.kernel.settings import Environment, Settings

NOTES_MIGRATIONS = Path(__file__).parent / "fake_migrations"
NOTES_HEAD = "0002"

# --- contract (what would be modules/notes/api.py) -------------------------------------------------


class Note(BaseModel):
    id: UUID
    text: str
    created_at: datetime


class NoteAdded(Event):
    name: ClassVar[str] = "notes.NoteAdded"
    text: str


class NoteNotFound(NotFound):
    code = "note-not-found"
    title = "Note not found"


class NoteLocked(DomainError):
    code = "note-locked"
    status = 423
    title = "Note is locked"


class NotesApi(Protocol):
    async def add(self, text: str) -> Note: ...

    async def get(self, note_id: UUID) -> Note: ...


# --- storage --------------------------------------------------------------------------------------

metadata = module_metadata("notes")

notes_table = Table(
    "notes",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("text", String(200), nullable=False),
    Column("created_at", UtcDateTime, nullable=False),
)

tags_table = Table(
    "tags",
    metadata,
    Column("id", Uuid, primary_key=True),
    Column("note_id", Uuid, ForeignKey("notes.notes.id", ondelete="CASCADE"), nullable=False),
    Column("tag", String(50), nullable=False),
)


# --- implementation -------------------------------------------------------------------------------


class NotesService:
    def __init__(self, uow: UnitOfWorkFactory, clock: Clock) -> None:
        self._uow = uow
        self._clock = clock

    async def add(self, text: str) -> Note:
        note = Note(id=uuid7(), text=text, created_at=self._clock.now())
        async with self._uow() as uow:
            await uow.session.execute(insert(notes_table).values(**note.model_dump()))
            uow.publish(NoteAdded(occurred_at=note.created_at, aggregate_id=note.id, text=text))
            await uow.commit()
        return note

    async def get(self, note_id: UUID) -> Note:
        async with self._uow.db.session() as session:
            row = (await session.execute(select(notes_table).where(notes_table.c.id == note_id))).first()
        if row is None:
            raise NoteNotFound(f"No note {note_id}.")
        return Note.model_validate(row._mapping)


class NewNote(BaseModel):
    text: str = Field(min_length=1, max_length=200)


def build_router(service: NotesService) -> APIRouter:
    router = APIRouter(prefix=f"{API_PREFIX}/notes", tags=["notes"])

    @router.post("", status_code=201)
    async def add(body: NewNote) -> Note:
        return await service.add(body.text)

    @router.get("/{note_id}")
    async def get(note_id: UUID) -> Note:
        return await service.get(note_id)

    @router.delete("/{note_id}", status_code=204)
    async def delete(note_id: UUID) -> None:
        await service.get(note_id)
        raise NoteLocked("Notes are kept forever.")

    @router.post("/echo")
    async def echo(request: Request) -> dict[str, int]:
        return {"received": len(await request.body())}

    @router.get("/errors/locked")
    async def locked() -> None:
        raise NoteLocked("Note 7 is locked by another editor.", note="7")

    @router.get("/errors/limited")
    async def limited() -> None:
        raise RateLimited(retry_after=17)

    @router.get("/errors/unauthenticated")
    async def unauthenticated() -> None:
        raise NotAuthenticated()

    @router.get("/auth/me")
    async def me(principal: Annotated[str, Depends(bearer_principal(resolve_principal))]) -> dict[str, str]:
        return {"principal": principal}

    @router.get("/errors/crash")
    async def crash() -> None:
        raise RuntimeError("connection to db.internal:5432 failed, password=hunter2")

    return router


async def resolve_principal(authorization: str) -> str:
    if authorization != "Bearer good-token":
        raise NotAuthenticated("The token is not valid.")
    return "alice"


def build_notes(ctx: ModuleContext) -> NotesService:
    return NotesService(ctx.uow, ctx.clock)


def notes_module(**changes: Any) -> Module:
    """The fake module's declaration; keyword arguments replace fields (to declare a broken one)."""
    fields: dict[str, Any] = {
        "name": "notes",
        "description": "A fake module for kernel tests.",
        "contract": NotesApi,
        "factory": build_notes,
        "router": build_router,
        "metadata": metadata,
        "migrations": NOTES_MIGRATIONS,
        "publishes": (NoteAdded,),
    }
    fields.update(changes)
    return Module(**fields)


async def migrate_notes(db: ModuleDatabase) -> None:
    """The kernel's history (outbox, inbox, jobs), then the notes module's own, as `db upgrade` does."""
    await migrations.upgrade_module(db, NOTES_MIGRATIONS)


# --- fixtures -------------------------------------------------------------------------------------


@pytest.fixture
def sqlite_url(tmp_path: Path) -> str:
    """A fresh embedded database for tests that need no PostgreSQL variant."""
    return f"sqlite+aiosqlite:///{tmp_path / 'db' / 'splitstone.db'}"


@pytest.fixture
async def notes_db(empty_database_url: str) -> AsyncIterator[ModuleDatabase]:
    """The notes module's database handle on an empty database (both backends)."""
    db = ModuleDatabase.connect("notes", empty_database_url)
    try:
        yield db
    finally:
        await db.dispose()


def build_notes_container(url: str, data_dir: Path, clock: Clock, events: EventRecorder) -> Container:
    settings = Settings(env=Environment.TEST, data_dir=data_dir, database_url=url)
    return Container.build(
        settings, [notes_module()], clock=clock, recorder=events, rate_limiter=RateLimiter("memory://")
    )


@pytest.fixture
async def notes_container(
    sqlite_url: str, tmp_path: Path, clock: ManualClock, events: EventRecorder
) -> AsyncIterator[Container]:
    container = build_notes_container(sqlite_url, tmp_path / "data", clock, events)
    try:
        yield container
    finally:
        await container.aclose()


@pytest.fixture
def notes_app(notes_container: Container) -> FastAPI:
    return create_app(notes_container)


@pytest.fixture
async def notes_client(notes_app: FastAPI) -> AsyncIterator[httpx.AsyncClient]:
    async with client_for(notes_app) as http:
        yield http


def client_for(app: FastAPI) -> httpx.AsyncClient:
    # raise_app_exceptions=False: Starlette re-raises an unhandled error after sending the 500 response;
    # a real server logs it, and so should the test client rather than fail the request.
    transport = httpx.ASGITransport(app=app, client=("203.0.113.7", 4711), raise_app_exceptions=False)
    return httpx.AsyncClient(transport=transport, base_url="http://testserver")
