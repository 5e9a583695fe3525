"""Prepared statements: stored exactly as SQLAlchemy stores values, and with sound plans."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

import pytest
from sqlalchemy import bindparam, func, insert, select, text, update
from sqlalchemy.exc import IntegrityError

import consent.services.ledger
import consent.services.panels
import consent.services.preferences  # noqa: F401 - these define prepared statements
from consent.db import Database
from consent.models import PersonChange, StatCounter
from consent.prepared import Prepared
from tests import factories

CHANGE = PersonChange.__table__
COUNTER = StatCounter.__table__


def _insert_change(dialect: str) -> object:
    names = ("person_id", "fields", "channel", "actor", "note", "changed_at")
    return insert(CHANGE).values(
        {name: bindparam(name, type_=CHANGE.c[name].type) for name in names}
    )


INSERT_CHANGE = Prepared(_insert_change)


def test_values_are_stored_exactly_as_an_ordinary_execution_stores_them(db: Database) -> None:
    at = datetime(2026, 3, 29, 0, 30, 15, 120, tzinfo=UTC) + timedelta(hours=1)
    with db.transaction() as session:
        person_id = factories.person(session).id
        values = {
            "person_id": person_id,
            "fields": "name",
            "channel": "admin",
            "actor": "Caseworker <b>",
            "note": None,
            "changed_at": at,
        }
        INSERT_CHANGE.run(session, values)
        session.execute(_insert_change(db.dialect), values)
    with db.reader() as session:
        raw = session.execute(
            text(
                "SELECT person_id, fields, channel, actor, note, changed_at FROM person_change "
                "WHERE person_id = :p ORDER BY id"
            ),
            {"p": person_id},
        ).all()
        assert len(raw) == 2 and raw[0] == raw[1]
        loaded = session.execute(
            select(PersonChange).where(PersonChange.person_id == person_id)
        ).scalars()
        assert [change.changed_at for change in loaded] == [at, at]


def test_a_refused_write_raises_sqlalchemy_error_and_leaves_nothing(db: Database) -> None:
    values = {
        "person_id": 10**9,
        "fields": "name",
        "channel": "admin",
        "actor": "Caseworker",
        "note": None,
        "changed_at": datetime.now(UTC),
    }
    with db.transaction() as session:
        person_id = factories.person(session).id
    with pytest.raises(IntegrityError), db.transaction() as session:
        INSERT_CHANGE.run(session, {**values, "person_id": person_id})
        INSERT_CHANGE.run(session, values)
    with db.reader() as session:
        assert session.scalar(select(func.count()).select_from(CHANGE)) == 0


def test_values_fixed_in_the_statement_are_used(db: Database) -> None:
    def statement(dialect: str) -> object:
        return update(COUNTER).where(COUNTER.c.metric == bindparam("b_metric")).values(count=41)

    fixed = Prepared(statement)
    with db.transaction() as session:
        session.add(StatCounter(period="2026-11", metric="test.fixed", count=1))
        session.flush()
        fixed.run(session, {"b_metric": "test.fixed"})
        assert session.scalar(select(COUNTER.c.count).where(COUNTER.c.metric == "test.fixed")) == 41


def test_a_list_expanded_at_run_time_is_refused(db: Database) -> None:
    def statement(dialect: str) -> object:
        return select(COUNTER.c.id).where(COUNTER.c.id.in_(bindparam("ids", expanding=True)))

    refused = Prepared(statement)
    Prepared.every.remove(refused)
    with db.reader() as session, pytest.raises(ValueError, match="expanded at run time"):
        refused.run(session, {"ids": [1, 2]})


def _select_changes(dialect: str) -> object:
    return (
        select(CHANGE.c.id, CHANGE.c.person_id, CHANGE.c.note, CHANGE.c.changed_at)
        .where(CHANGE.c.person_id == bindparam("person_id"))
        .order_by(CHANGE.c.id)
    )


SELECT_CHANGES = Prepared(_select_changes)


def test_rows_come_back_as_an_ordinary_execution_gives_them(db: Database) -> None:
    """Timezone-aware datetimes (text in SQLite) and NULLs, converted as SQLAlchemy does."""
    at = datetime(2026, 10, 25, 1, 30, 0, 5, tzinfo=UTC)
    with db.transaction() as session:
        person_id = factories.person(session).id
        for note in (None, "Phoned in"):
            INSERT_CHANGE.run(
                session,
                {
                    "person_id": person_id,
                    "fields": "name",
                    "channel": "admin",
                    "actor": "Caseworker",
                    "note": note,
                    "changed_at": at,
                },
            )
    with db.reader() as session:
        rows = SELECT_CHANGES.rows(session, {"person_id": person_id})
        expected = session.execute(_select_changes(db.dialect), {"person_id": person_id}).all()
        assert rows == [tuple(row) for row in expected]
        assert [row[3] for row in rows] == [at, at]
        assert SELECT_CHANGES.rows(session, {"person_id": -1}) == []


@pytest.mark.parametrize("pipelined", [True, False], ids=["pipelined", "one-by-one"])
def test_run_after_runs_the_first_statement_first(
    db: Database, backend: str, pipelined: bool, monkeypatch: pytest.MonkeyPatch
) -> None:
    """The ledger relies on this: the second statement must see what the first did, with
    or without psycopg's pipeline (libpq before 14 has none)."""
    if backend == "postgresql" and not pipelined:
        import psycopg

        monkeypatch.setattr(psycopg.Pipeline, "is_supported", classmethod(lambda cls: False))

    def bump(dialect: str) -> object:
        return update(COUNTER).where(COUNTER.c.metric == bindparam("metric")).values(count=7)

    def read(dialect: str) -> object:
        return select(func.sum(COUNTER.c.count)).where(COUNTER.c.metric == bindparam("metric"))

    first, second = Prepared(bump), Prepared(read)
    with db.transaction() as session:
        session.add(StatCounter(period="2026-11", metric="test.order", count=1))
        session.flush()
        _, summed = second.run_after(first, session, {"metric": "test.order"})
        assert summed.fetchone()[0] == 7


def test_every_prepared_statement_that_finds_rows_uses_indexes(db: Database, backend: str) -> None:
    """Inserts are left out: their plans show the foreign-key check SQLite makes of child
    tables, which it skips unless a violation is already pending (``FkIfZero``)."""
    if backend != "sqlite":
        pytest.skip("query plans are checked on SQLite")
    big = {"person", "consent_state", "consent_event", "panel_membership", "suppression"}
    assert {repr(statement) for statement in Prepared.every} >= {
        "Prepared(_context_query)",
        "Prepared(_event_insert)",
        "Prepared(_state_upsert)",
        "Prepared(_extend_statement)",
        "Prepared(_states)",
        "Prepared(_memberships)",
        "Prepared(_bookings)",
    }
    scans = []
    with db.reader() as session:
        connection = session.connection()
        for statement in Prepared.every:
            if statement.only not in (None, "sqlite"):
                continue
            sql = statement.sql(connection.dialect)
            if sql.lstrip().upper().startswith("INSERT"):
                continue
            marks = sql.count("?")
            plan = connection.exec_driver_sql("EXPLAIN QUERY PLAN " + sql, (None,) * marks)
            for row in plan:
                detail = row[-1]
                if detail.startswith("SCAN ") and detail.split()[1] in big:
                    scans.append((statement, detail))
    assert scans == []


def test_pending_changes_are_flushed_first_unless_autoflush_is_off(db: Database) -> None:
    def read(dialect: str) -> object:
        return select(func.count()).where(COUNTER.c.metric == bindparam("metric"))

    count = Prepared(read)
    with db.transaction() as session:
        session.add(StatCounter(period="2026-11", metric="test.pending", count=1))
        with session.no_autoflush:
            assert count.run(session, {"metric": "test.pending"}).fetchone()[0] == 0
        assert count.run(session, {"metric": "test.pending"}).fetchone()[0] == 1
