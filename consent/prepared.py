"""Statements compiled once per dialect and run on the driver's cursor, for hot write paths.

SQLAlchemy takes about 35 microseconds to set up each execution of even a cached statement,
ten times what SQLite takes to run a one-row insert, and a consent change runs several. A
:class:`Prepared` statement keeps SQLAlchemy for building and compiling the SQL and for
converting parameters (its own bind processors, so values are stored exactly as an
ordinary execution would store them), and skips the rest. It runs on the session's own
connection, inside the session's transaction.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, nullcontext
from dataclasses import dataclass
from threading import Lock
from typing import Any

from sqlalchemy.engine import Dialect
from sqlalchemy.exc import DBAPIError
from sqlalchemy.sql import ClauseElement
from sqlmodel import Session

from consent.db import flushed_connection

Processor = Callable[[Any], Any] | None


@dataclass(frozen=True, slots=True)
class _Compiled:
    sql: str
    names: tuple[str, ...]
    processors: tuple[Processor, ...]
    positional: bool
    #: Values fixed in the statement itself, such as ``.values(status="pending")``.
    fixed: dict[str, Any]
    #: The type of each column a SELECT returns, to convert what the driver gives back.
    types: tuple[Any, ...]

    def parameters(self, values: Mapping[str, Any]) -> Sequence[Any] | dict[str, Any]:
        if self.fixed:
            values = {**self.fixed, **values}
        converted = [
            value if process is None else process(value)
            for value, process in zip(
                (values[name] for name in self.names), self.processors, strict=True
            )
        ]
        return converted if self.positional else dict(zip(self.names, converted, strict=True))


class Prepared:
    """One statement, built by ``build(dialect_name)`` the first time a dialect needs it.

    Only plain bound parameters are supported (no ``IN`` lists expanded at run time).
    :meth:`run` gives back the driver's rows as they are; :meth:`rows` converts them.
    """

    #: Every prepared statement made, so a test can check each one's query plan.
    every: list[Prepared] = []

    def __init__(self, build: Callable[[str], ClauseElement], *, only: str | None = None) -> None:
        #: The one dialect this statement is written for, if it is not portable.
        self.only = only
        self._build = build
        self._compiled: dict[str, _Compiled] = {}
        self._converters: dict[str, tuple[Processor, ...]] = {}
        self._lock = Lock()
        Prepared.every.append(self)

    def __repr__(self) -> str:
        return f"Prepared({self._build.__qualname__})"

    def sql(self, dialect: Dialect) -> str:
        """The SQL this statement runs on ``dialect``."""
        return self._for(dialect).sql

    def run(self, session: Session, values: Mapping[str, Any]) -> Any:
        """Execute once in the session's transaction; returns the driver's cursor.

        Pending changes to model objects are flushed first, as ``session.execute`` would.
        """
        return self._execute(session, values)[0]

    def _execute(self, session: Session, values: Mapping[str, Any]) -> tuple[Any, Dialect]:
        connection = flushed_connection(session)
        compiled = self._for(connection.dialect)
        cursor = connection.connection.cursor()
        with _as_sqlalchemy_errors(connection.dialect, compiled.sql):
            cursor.execute(compiled.sql, compiled.parameters(values))
        return cursor, connection.dialect

    def rows(self, session: Session, values: Mapping[str, Any]) -> list[tuple[Any, ...]]:
        """Run a SELECT and return its rows, each value converted as an ordinary execution
        converts it (SQLAlchemy's result processors: datetimes from SQLite's text, say)."""
        cursor, dialect = self._execute(session, values)
        found = cursor.fetchall()
        if not found:
            return []
        converters = self._converters.get(dialect.name)
        if converters is None:
            converters = self._converters_for(dialect, cursor.description)
        if not converters:
            return [tuple(row) for row in found]
        return [
            tuple(
                cell if convert is None else convert(cell)
                for cell, convert in zip(row, converters, strict=True)
            )
            for row in found
        ]

    def _converters_for(self, dialect: Dialect, description: Any) -> tuple[Processor, ...]:
        """The result processor of each selected column, or none at all when no column needs
        one; the driver's description is read once per dialect, as psycopg builds it afresh
        on every read."""
        with self._lock:
            types = self._for(dialect).types
            if len(types) != len(description):
                raise ValueError(f"{self!r} returns columns it cannot convert.")
            converters = tuple(
                kind.dialect_impl(dialect).result_processor(dialect, described[1])
                for kind, described in zip(types, description, strict=True)
            )
            if not any(converters):
                converters = ()
            self._converters[dialect.name] = converters
        return converters

    def run_after(
        self, first: Prepared, session: Session, values: Mapping[str, Any]
    ) -> tuple[Any, Any]:
        """Run ``first`` then this, with the same values, in one round trip where the driver
        can: psycopg's pipeline sends both before reading either result. PostgreSQL still
        runs them one after the other, so this one sees what ``first`` waited for.

        Returns both cursors, with their rows ready to read.
        """
        connection = flushed_connection(session)
        dialect = connection.dialect
        one, two = first._for(dialect), self._for(dialect)
        cursors = (connection.connection.cursor(), connection.connection.cursor())
        pipeline = _pipeline(connection.connection.driver_connection, dialect)
        with _as_sqlalchemy_errors(dialect, f"{one.sql}; {two.sql}"), pipeline:
            cursors[0].execute(one.sql, one.parameters(values))
            cursors[1].execute(two.sql, two.parameters(values))
        return cursors

    def _for(self, dialect: Dialect) -> _Compiled:
        compiled = self._compiled.get(dialect.name)
        if compiled is None:
            if self.only not in (None, dialect.name):
                raise ValueError(f"{self!r} is for {self.only} only, not {dialect.name}.")
            with self._lock:
                compiled = self._compiled.get(dialect.name) or _compile(
                    self._build(dialect.name), dialect
                )
                self._compiled[dialect.name] = compiled
        return compiled


def _pipeline(driver: Any, dialect: Dialect) -> AbstractContextManager[Any]:
    """psycopg's pipeline where libpq supports it (14 and later); otherwise nothing, and
    the statements go one round trip each."""
    if dialect.name == "postgresql":
        from psycopg import Pipeline

        if Pipeline.is_supported():
            return driver.pipeline()
    return nullcontext()


@contextmanager
def _as_sqlalchemy_errors(dialect: Dialect, sql: str) -> Iterator[None]:
    """Raise the driver's errors as SQLAlchemy's (IntegrityError, OperationalError and so
    on), as an ordinary execution would, with the parameters left out."""
    base = dialect.loaded_dbapi.Error
    try:
        yield
    except base as error:
        raise DBAPIError.instance(
            sql, None, error, base, hide_parameters=True, dialect=dialect
        ) from error


def _compile(statement: ClauseElement, dialect: Dialect) -> _Compiled:
    compiled: Any = statement.compile(dialect=dialect)
    if compiled.literal_execute_params or compiled.post_compile_params:
        raise ValueError("A prepared statement cannot hold parameters expanded at run time.")
    if getattr(compiled, "escaped_bind_names", None):
        raise ValueError("Name prepared statement parameters with letters, digits and _ only.")
    positional = bool(compiled.positional)
    names = tuple(compiled.positiontup) if positional else tuple(compiled.binds)
    processors = tuple(
        compiled.binds[name].type.dialect_impl(dialect).bind_processor(dialect) for name in names
    )
    fixed = {
        name: bind.effective_value for name, bind in compiled.binds.items() if not bind.required
    }
    types = tuple(column.type for column in getattr(statement, "selected_columns", ()))
    return _Compiled(compiled.string, names, processors, positional, fixed, types)
