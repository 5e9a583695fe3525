"""Engine, session handling and the SQLite/PostgreSQL differences the rest of the code ignores.

Every write path runs inside :meth:`Database.transaction`: it commits once at the end and
rolls everything back on any exception, so a failure half-way leaves the database as it was.
"""

from __future__ import annotations

import json
import math
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

from sqlalchemy import Boolean, Integer, String, Text, bindparam, event, text
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.engine import Connection, Dialect, Engine, make_url
from sqlalchemy.exc import DisconnectionError
from sqlalchemy.ext.compiler import compiles
from sqlalchemy.pool import NullPool
from sqlalchemy.sql.elements import ColumnElement
from sqlalchemy.sql.visitors import InternalTraversal
from sqlalchemy.types import TypeDecorator
from sqlmodel import Session, create_engine

from consent.config import Settings

AFTER_COMMIT = "after_commit_callbacks"


def _configure_sqlite(engine: Engine) -> None:
    """Make pysqlite transactional in the way SQLAlchemy expects and safe for erasure.

    ``secure_delete`` overwrites freed pages so an erased person's details do not linger in
    the file; writers ``BEGIN IMMEDIATE`` so two writers queue instead of failing mid-way.
    """

    @event.listens_for(engine, "connect")
    def _on_connect(dbapi_conn: Any, _record: Any) -> None:
        dbapi_conn.isolation_level = None
        cursor = dbapi_conn.cursor()
        cursor.execute("PRAGMA foreign_keys=ON")
        cursor.execute("PRAGMA busy_timeout=30000")
        cursor.execute("PRAGMA secure_delete=ON")
        cursor.execute("PRAGMA journal_mode=WAL")
        cursor.execute("PRAGMA synchronous=FULL")
        cursor.close()

    @event.listens_for(engine, "begin")
    def _on_begin(conn: Any) -> None:
        mode = conn.get_execution_options().get("sqlite_begin", "DEFERRED")
        conn.connection.driver_connection.execute(_BEGIN[mode])


_BEGIN = {mode: f"BEGIN {mode}" for mode in ("DEFERRED", "IMMEDIATE", "EXCLUSIVE")}


#: Seconds a pooled PostgreSQL connection may sit unused before it is checked on next use.
PING_AFTER_IDLE = 1.0


def _ping_when_idle(engine: Engine, idle: float) -> None:
    """Check a pooled connection before use, as ``pool_pre_ping`` does, but only when it
    has been idle: a server restart or a dropped link shows up on idle connections, and
    a connection returned a moment ago saves the round trip on every busy transaction."""

    @event.listens_for(engine, "connect")
    def _connected(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkin")
    def _returned(_dbapi_connection: Any, record: Any) -> None:
        record.info["returned_at"] = time.monotonic()

    @event.listens_for(engine, "checkout")
    def _taken(dbapi_connection: Any, record: Any, _proxy: Any) -> None:
        if time.monotonic() - record.info.get("returned_at", -math.inf) <= idle:
            return
        try:
            engine.dialect.do_ping(dbapi_connection)
        except engine.dialect.loaded_dbapi.Error as error:
            raise DisconnectionError("The database connection was lost.") from error


def make_engine(url: str, *, pool: bool = True, ping_after_idle: float = PING_AFTER_IDLE) -> Engine:
    """Create an engine with the pragmas and pool settings each backend needs."""
    parsed = make_url(url)
    if parsed.get_backend_name() == "sqlite":
        database = parsed.database
        if database and database != ":memory:":
            Path(database).parent.mkdir(parents=True, exist_ok=True)
        engine = create_engine(
            url,
            connect_args={"check_same_thread": False, "timeout": 30},
            hide_parameters=True,
            poolclass=None if pool else NullPool,
        )
        _configure_sqlite(engine)
        return engine
    if not pool:
        return create_engine(url, hide_parameters=True, poolclass=NullPool)
    engine = create_engine(url, hide_parameters=True, pool_size=5, max_overflow=10)
    _ping_when_idle(engine, ping_after_idle)
    return engine


class Database:
    """One engine and the two kinds of session the application uses: read and write."""

    def __init__(self, settings: Settings, engine: Engine | None = None) -> None:
        self.settings = settings
        self.engine = engine or make_engine(settings.database_url)
        self.write_engine = self.engine.execution_options(sqlite_begin="IMMEDIATE")
        #: Called after a commit that queued mail, so delivery starts at once.
        self.wake_mailer: Callable[[], None] | None = None
        #: What services keep in memory for this database, shared by all its sessions.
        self.shared: dict[str, Any] = {}

    @property
    def dialect(self) -> str:
        return self.engine.dialect.name

    def _session(self, engine: Engine) -> Session:
        return Session(
            engine,
            expire_on_commit=False,
            info={
                "settings": self.settings,
                "wake_mailer": self.wake_mailer,
                "shared": self.shared,
                AFTER_COMMIT: [],
            },
        )

    @contextmanager
    def transaction(self) -> Iterator[Session]:
        """One unit of work: commit at the end, roll back everything on any exception."""
        session = self._session(self.write_engine)
        try:
            with session.begin():
                yield session
            callbacks: list[Callable[[], None]] = session.info.get(AFTER_COMMIT, [])
            for callback in callbacks:
                callback()
        finally:
            session.close()

    @contextmanager
    def reader(self) -> Iterator[Session]:
        """A session for pages and reports that only read; nothing it does is committed.

        Closing (not rolling back) keeps loaded objects readable after the block ends.
        """
        session = self._session(self.engine)
        try:
            yield session
        finally:
            session.close()

    def ping(self) -> bool:
        """True when the database answers a trivial query."""
        try:
            with self.engine.connect() as conn:
                conn.execute(text("SELECT 1"))
            return True
        except Exception:
            return False

    def dispose(self) -> None:
        self.engine.dispose()


def settings_of(session: Session) -> Settings:
    """The settings a session was opened with: services read configuration through this."""
    settings = session.info.get("settings")
    if settings is None:
        raise RuntimeError("This session was not opened through consent.db.Database.")
    return settings


def flushed_connection(session: Session) -> Connection:
    """The session's connection, for Core statements run on it directly, after writing the
    session's pending changes as ``session.execute`` would (unless autoflush is off)."""
    if session.autoflush:
        session.flush()
    return session.connection()


def after_commit(session: Session, callback: Callable[[], None]) -> None:
    """Run ``callback`` once the surrounding transaction has committed, never before."""
    session.info.setdefault(AFTER_COMMIT, []).append(callback)


def upsert_insert(dialect: str, table: Any) -> Any:
    """An INSERT on ``table`` that can say what to do on conflict, for this dialect: SQLite
    and PostgreSQL each have their own, with the same methods."""
    return (postgresql.insert if dialect == "postgresql" else sqlite.insert)(table)


def is_postgres(session: Session) -> bool:
    bind = session.get_bind()
    return bind.dialect.name == "postgresql"


class _Among(ColumnElement[bool]):
    """``column IN`` a list given as one parameter; compiled per dialect below."""

    type = Boolean()
    inherit_cache = True
    #: A predicate in its own right: without this SQLite would get ``... = 1``, unindexed.
    _is_implicitly_boolean = True
    _traverse_internals = [
        ("column", InternalTraversal.dp_clauseelement),
        ("values", InternalTraversal.dp_clauseelement),
    ]

    def __init__(self, column: Any, values: Any) -> None:
        self.column = column
        self.values = values


class _ListParameter(TypeDecorator[list[Any]]):
    """A whole Python list as one parameter: JSON text for SQLite, an array for PostgreSQL."""

    impl = Text
    cache_ok = True
    item: Any = Integer

    def load_dialect_impl(self, dialect: Dialect) -> Any:
        if dialect.name == "postgresql":
            return dialect.type_descriptor(postgresql.ARRAY(self.item))
        return dialect.type_descriptor(Text())

    def process_bind_param(self, value: list[Any] | None, dialect: Dialect) -> Any:
        if value is None or dialect.name == "postgresql":
            return value
        return json.dumps(value)


class _IntList(_ListParameter):
    cache_ok = True
    item = Integer


class _TextList(_ListParameter):
    cache_ok = True
    item = Text


@compiles(_Among)
def _among_sqlite(element: _Among, compiler: Any, **kw: Any) -> str:
    column = compiler.process(element.column, **kw)
    values = compiler.process(element.values, **kw)
    return f"({column} IN (SELECT value FROM json_each({values})))"  # noqa: S608 (placeholders)


@compiles(_Among, "postgresql")
def _among_postgresql(element: _Among, compiler: Any, **kw: Any) -> str:
    values = compiler.process(element.values, **kw)
    return f"({compiler.process(element.column, **kw)} = ANY({values}))"


def among(column: Any, values: Any) -> Any:
    """``column IN (values)`` for a long Python list, bound as a single parameter.

    An expanding ``IN`` renders one placeholder per element on every execution, which
    for a sweep's batch of thousands costs more than the query; one JSON or array
    parameter keeps the statement cached and the binding cheap.
    """
    kind = _TextList if _holds_text(column) else _IntList
    return _Among(column, bindparam(None, list(values), type_=kind()))


def _holds_text(column: Any) -> bool:
    kind = getattr(column.type, "impl_instance", column.type)
    return isinstance(kind, String)
