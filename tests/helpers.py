"""Helpers for tests that look at the database the way an auditor would (raw), and for
tests that start the application as a child process."""

from __future__ import annotations

import os
import re
import socket
import threading
import time
from collections.abc import Callable, Iterable
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import pytest
from sqlalchemy import inspect, text
from sqlalchemy.engine import Connection, Engine

from consent.config import Settings


@contextmanager
def triggers_disabled(conn: Connection) -> Any:
    """Step around the append-only triggers, as someone with direct database access could."""
    if conn.dialect.name == "postgresql":
        conn.execute(text("SET session_replication_role = replica"))
        try:
            yield
        finally:
            conn.execute(text("SET session_replication_role = origin"))
        return
    saved = conn.execute(text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")).all()
    for name, _ in saved:
        conn.execute(text(f"DROP TRIGGER {name}"))
    try:
        yield
    finally:
        for _, sql in saved:
            conn.execute(text(sql))


def tamper(engine: Engine, *statements: str, params: dict[str, Any] | None = None) -> None:
    """Run raw SQL against the ledger with its triggers and foreign keys out of the way."""
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()
        try:
            cursor = raw.cursor()
            cursor.execute("PRAGMA foreign_keys=OFF")
            with engine.connect() as conn:
                triggers = conn.execute(
                    text("SELECT name, sql FROM sqlite_master WHERE type = 'trigger'")
                ).all()
                conn.rollback()
            for name, _ in triggers:
                cursor.execute(f"DROP TRIGGER {name}")
            for statement in statements:
                cursor.execute(_qmark(statement), _positional(statement, params or {}))
            for _, sql in triggers:
                cursor.execute(sql)
            cursor.execute("PRAGMA foreign_keys=ON")
        finally:
            raw.close()
        return
    with engine.begin() as conn, triggers_disabled(conn):
        for statement in statements:
            conn.execute(text(statement), params or {})


def _qmark(statement: str) -> str:
    return re.sub(r":(\w+)", "?", statement)


def _positional(statement: str, params: dict[str, Any]) -> list[Any]:
    return [params[name] for name in re.findall(r":(\w+)", statement)]


def find_anywhere(engine: Engine, needles: Iterable[str]) -> list[tuple[str, str, str]]:
    """Every (table, column, needle) where any text column holds a needle, case-insensitive."""
    needles = [n.lower() for n in needles if n]
    hits: list[tuple[str, str, str]] = []
    inspector = inspect(engine)
    with engine.connect() as conn:
        for table in inspector.get_table_names():
            for column in inspector.get_columns(table):
                name = column["name"]
                cast = f"CAST({name} AS TEXT)"
                for needle in needles:
                    found = conn.execute(
                        text(f"SELECT 1 FROM {table} WHERE LOWER({cast}) LIKE :n LIMIT 1"),
                        {"n": f"%{needle}%"},
                    ).first()
                    if found:
                        hits.append((table, name, needle))
    return hits


def deliver_and_purge(database: Any) -> None:
    """Send the queue (to files nobody keeps), then purge as the keep time would: what the
    mail queue holds a week after erasure, for tests that search the raw database."""
    import tempfile
    from datetime import timedelta

    from mailers.backends import FileBackend
    from mailers.outbox import OutboxWorker

    with tempfile.TemporaryDirectory() as folder:
        OutboxWorker(database, FileBackend(Path(folder))).run_once()
    OutboxWorker(database).purge(keep=timedelta(0))


def child_environment(settings: Settings, **extra: str) -> dict[str, str]:
    """The environment for a child process of the app with these test settings, and none of
    the developer's own CONSENT_ settings."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(
        CONSENT_ENV="test",
        CONSENT_INSTANCE_PATH=str(settings.instance_path),
        CONSENT_DATABASE_URL=settings.database_url,
        CONSENT_SECRET_KEYS=",".join(settings.secret_keys),
        CONSENT_FIELD_KEYS=",".join(settings.field_keys),
        CONSENT_HASH_KEY=settings.hash_key,
    )
    env.update(extra)
    return env


def send_raw(port: int, request: bytes) -> bytes:
    """Send bytes no HTTP client would (a malformed request line) and read the answer."""
    with socket.create_connection(("127.0.0.1", port), timeout=5) as conn:
        conn.sendall(request)
        answer = b""
        while chunk := conn.recv(4096):
            answer += chunk
    return answer


class Beside(threading.Thread):
    """Runs ``work`` on another thread and keeps what it returned or raised."""

    def __init__(self, work: Callable[[], object]) -> None:
        super().__init__(daemon=True)
        self.work = work
        self.result: object = None
        self.error: BaseException | None = None

    def run(self) -> None:
        try:
            self.result = self.work()
        except BaseException as exc:
            self.error = exc


def _someone_waits_for_a_lock(engine: Engine) -> bool:
    with engine.connect() as connection:
        return bool(
            connection.execute(
                text(
                    "SELECT count(*) FROM pg_stat_activity "
                    "WHERE wait_event_type = 'Lock' AND datname = current_database()"
                )
            ).scalar_one()
        )


def until_someone_waits_for_a_lock(engine: Engine) -> None:
    """Return once another connection waits for a lock (PostgreSQL), so a test can let go."""
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        if _someone_waits_for_a_lock(engine):
            return
        time.sleep(0.02)
    raise AssertionError("Nothing waited for the lock.")


def until_done_or_waiting(engine: Engine, work: Beside) -> None:
    """Return once ``work`` has finished, or waits for a lock (PostgreSQL): a test holding
    a change open can then let it go, whichever the other did."""
    deadline = time.monotonic() + 30
    while work.is_alive() and time.monotonic() < deadline:
        if _someone_waits_for_a_lock(engine):
            return
        time.sleep(0.02)


def meanwhile(database: Any, change: Callable[[Any], object], work: Callable[[], object]) -> Beside:
    """Run ``work`` on another thread while a transaction makes ``change``, and let the
    change commit only once ``work`` waits for its lock (PostgreSQL): the two then cross."""
    with database.transaction() as session:
        change(session)
        beside = Beside(work)
        beside.start()
        until_someone_waits_for_a_lock(database.engine)
    beside.join(timeout=60)
    return beside


def meanwhile_erased(database: Any, person_id: int, work: Callable[[], object]) -> Beside:
    """``work`` crossing the erasure of the person."""
    from consent.services import people

    return meanwhile(
        database,
        lambda session: people.scrub(
            session, [person_id], reason="nothing_held", suppress_ids=set()
        ),
        work,
    )


def meanwhile_moved(
    database: Any, person_id: int, new_email: str, work: Callable[[], object]
) -> Beside:
    """``work`` crossing the person's change of email address."""
    from consent.models import Person
    from consent.services import people

    def move(session: Any) -> None:
        people.change_email(
            session, session.get(Person, person_id), new_email, channel="email_link", actor="self"
        )

    return meanwhile(database, move, work)


def crossing_writers_only(backend: str) -> None:
    """Skip a test of two writers crossing where they cannot: SQLite lets one in at a time."""
    if backend != "postgresql":
        pytest.skip("SQLite lets one writer in at a time, so the two cannot cross")
