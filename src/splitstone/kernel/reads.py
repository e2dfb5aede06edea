"""Prepared reads: the hot SELECTs of a module, built once and run on the driver where that is safe.

A statement built per call costs SQLAlchemy its construction, a cache key, an execution context, a
result object and a greenlet switch: about 100 us per query on the benchmark machine, where asyncpg
itself takes 15. A `PreparedQuery` is built once, at import, with a `bindparam` for whatever varies:

    TASK_BY_ID = PreparedQuery(select(tasks).where(tasks.c.id == bindparam("task_id")))
    row = await uow.fetch_one(TASK_BY_ID, task_id=task_id)

In a read-only unit of work on PostgreSQL (no transaction: `ModuleDatabase.read_engine`), it goes to
asyncpg directly, compiled once per dialect; anywhere else (SQLite, a unit that writes, a handler's
joined unit) it runs through SQLAlchemy like any statement, with the same rows: read them by column
name (`row["title"]`). It reads a module's own tables (they carry their schema), one statement with
plain parameters: an `IN` list (an expanding parameter) is refused, since its SQL depends on the values.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

from sqlalchemy import Dialect, RowMapping, Select
from sqlalchemy.ext.asyncio import AsyncConnection


class FetchedRow(Protocol):
    """A row of a prepared read, by column name (an asyncpg `Record` or a SQLAlchemy `RowMapping`)."""

    def __getitem__(self, key: str, /) -> Any: ...


class PreparedQuery:
    """A SELECT built once, run by `UnitOfWork.fetch_all` and `fetch_one` (see the module's docstring)."""

    def __init__(self, statement: Select[Any]) -> None:
        self.statement = statement
        self._compiled: dict[str, _DriverStatement] = {}

    async def fetch_all(
        self, connection: AsyncConnection, params: dict[str, Any], *, direct: bool
    ) -> Sequence[FetchedRow]:
        """Every row; `direct` allows the driver itself (the connection is in no transaction)."""
        if direct and connection.dialect.driver == "asyncpg":
            driver: Any = connection.sync_connection.connection.driver_connection  # type: ignore[union-attr]
            return await self._driver_statement(connection.dialect).fetch(driver, params)
        rows: Sequence[RowMapping] = (await connection.execute(self.statement, params)).mappings().all()
        return rows

    async def fetch_one(
        self, connection: AsyncConnection, params: dict[str, Any], *, direct: bool
    ) -> FetchedRow | None:
        rows = await self.fetch_all(connection, params, direct=direct)
        return rows[0] if rows else None

    def _driver_statement(self, dialect: Dialect) -> _DriverStatement:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            compiled = self._compiled[dialect.name] = _DriverStatement.compile(self.statement, dialect)
        return compiled


@dataclass(frozen=True)
class _DriverStatement:
    """A statement compiled for asyncpg: its SQL, its parameters in order, and their conversions."""

    sql: str
    names: tuple[str, ...]
    literals: dict[str, Any]
    bind_processors: Mapping[str, Callable[[Any], Any]]
    result_processors: tuple[tuple[int, Callable[[Any], Any]], ...]
    columns: tuple[str, ...]

    @classmethod
    def compile(cls, statement: Select[Any], dialect: Dialect) -> _DriverStatement:
        # A table without a schema (the kernel's, placed per module by a schema translation) would
        # land in whatever schema the connection searches first.
        translated = statement.compile(dialect=dialect, schema_translate_map={None: "_"})
        if "__[SCHEMA__none]" in translated.string:
            raise ValueError("a prepared query reads a module's own tables, which name their schema")
        compiled = statement.compile(dialect=dialect)
        names = tuple(compiled.positiontup or ())
        binds = {name: compiled.binds[name] for name in names}
        expanding = [name for name, bind in binds.items() if bind.expanding]
        if expanding or "__[POSTCOMPILE" in compiled.string:
            raise ValueError(f"a prepared query takes plain parameters, not lists: {expanding}")
        bind_processors = {
            name: processor
            for name, bind in binds.items()
            if (processor := bind.type.dialect_impl(dialect).bind_processor(dialect)) is not None
        }
        result_processors = tuple(
            (index, processor)
            for index, column in enumerate(statement.selected_columns)
            if (processor := column.type.dialect_impl(dialect).result_processor(dialect, None)) is not None
        )
        return cls(
            sql=compiled.string,
            names=names,
            literals={name: bind.effective_value for name, bind in binds.items() if not bind.required},
            bind_processors=bind_processors,
            result_processors=result_processors,
            columns=tuple(str(column.key) for column in statement.selected_columns),
        )

    async def fetch(self, driver: Any, params: dict[str, Any]) -> Sequence[FetchedRow]:
        values = []
        for name in self.names:
            value = params[name] if name in params else self.literals[name]
            processor = self.bind_processors.get(name)
            values.append(processor(value) if processor is not None else value)
        records: Sequence[FetchedRow] = await driver.fetch(self.sql, *values)
        if not self.result_processors:
            return records
        return [self._processed(record) for record in records]

    def _processed(self, record: Any) -> dict[str, Any]:
        values = list(record.values())
        for index, processor in self.result_processors:
            values[index] = processor(values[index])
        return dict(zip(self.columns, values, strict=True))
