"""Loaders: an object loaded through a prepared statement behaves as one the ORM loaded."""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from contextlib import contextmanager
from datetime import UTC, datetime
from typing import Any

import pytest
from sqlalchemy import event, text
from sqlalchemy.orm import object_session
from sqlmodel import Session

from consent import loading
from consent.db import Database
from consent.models import Person
from consent.prepared import Prepared
from tests import factories

COLUMNS = [column.key for column in Person.__table__.columns]


@contextmanager
def statements(db: Database) -> Iterator[list[str]]:
    """Every statement run, through SQLAlchemy or as a prepared statement."""
    seen: list[str] = []

    def record(_conn: object, _cursor: object, sql: str, *_args: object) -> None:
        seen.append(sql)

    def run_prepared(self: Prepared, session: Session, values: Mapping[str, Any]) -> Any:
        seen.append(self.sql(db.engine.dialect))
        return original(self, session, values)

    original = Prepared._execute
    event.listen(db.engine, "before_cursor_execute", record)
    Prepared._execute = run_prepared  # type: ignore[method-assign]
    try:
        yield seen
    finally:
        Prepared._execute = original  # type: ignore[method-assign]
        event.remove(db.engine, "before_cursor_execute", record)


def _someone(db: Database) -> Person:
    with db.transaction() as session:
        person = factories.person(session, "loaded@example.com", name="Ada <Lovelace>")
        person.phone = "+44 7700 900123"
        person.erased_at = datetime(2026, 3, 29, 1, 30, 5, 250, tzinfo=UTC)
        session.flush()
        session.expunge(person)
    return person


@pytest.mark.parametrize(
    ("loader", "column"),
    [
        (loading.person_by_id, "id"),
        (loading.person_by_public_id, "public_id"),
        (loading.person_by_email, "email"),
    ],
)
def test_every_attribute_equals_what_the_orm_loads(
    db: Database, loader: loading.Loader[Person], column: str
) -> None:
    stored = _someone(db)
    with db.reader() as session:
        loaded = loader.get(session, getattr(stored, column))
        assert loaded is not None
        fast = {key: getattr(loaded, key) for key in COLUMNS}
    with db.reader() as session:
        by_orm = session.get(Person, stored.id)
        assert by_orm is not None
        orm = {key: getattr(by_orm, key) for key in COLUMNS}
    assert fast == orm
    assert fast["erased_at"] == stored.erased_at and fast["erased_at"].tzinfo is not None
    assert fast["postcode"] is None


def test_a_column_that_could_match_several_rows_is_refused() -> None:
    with pytest.raises(ValueError, match="not unique"):
        loading.Loader(Person, "name")


def test_nothing_found_is_none(session: Session) -> None:
    assert loading.person_by_id.get(session, 10**9) is None
    assert loading.person_by_email.get(session, "nobody@example.com") is None


def test_the_session_holds_one_object_per_row(db: Database) -> None:
    person_id = _someone(db).id
    with db.reader() as session:
        first = loading.person_by_public_id.get(session, session.get(Person, person_id).public_id)
        assert first is session.get(Person, person_id)
        assert loading.person_by_id.get(session, person_id) is first
        assert loading.person_by_email.get(session, "loaded@example.com") is first
        assert object_session(first) is session and first in session


def test_a_loaded_object_found_again_by_id_costs_no_statement(db: Database) -> None:
    person_id = _someone(db).id
    with db.reader() as session:
        held = loading.person_by_id.get(session, person_id)
        with statements(db) as seen:
            assert session.get(Person, person_id) is held
            assert loading.person_by_id.get(session, person_id) is held
        assert seen == []
        with statements(db) as seen:
            assert loading.person_by_email.get(session, "loaded@example.com") is held
        assert len(seen) == 1


def test_an_untouched_object_writes_nothing_and_a_changed_one_writes_its_change(
    db: Database,
) -> None:
    person_id = _someone(db).id
    with db.transaction() as session:
        person = loading.person_by_id.get(session, person_id)
        assert person is not None
        with statements(db) as seen:
            session.flush()
        assert seen == []
        person.name = "Ada King"
    with db.reader() as session:
        assert session.scalar(text(f"SELECT name FROM person WHERE id = {person_id}")) == (
            "Ada King"
        )
        assert session.scalar(text(f"SELECT phone FROM person WHERE id = {person_id}")) == (
            "+44 7700 900123"
        )


def test_pending_changes_are_flushed_before_the_search(session: Session) -> None:
    added = Person(email="new@example.com")
    session.add(added)
    assert loading.person_by_email.get(session, "new@example.com") is added


def test_an_object_deleted_in_the_session_is_not_found(db: Database) -> None:
    """A query flushes the deletion first and finds nothing; so must a loader, by any column."""
    person_id = _someone(db).id
    with db.reader() as session:
        session.delete(session.get(Person, person_id))
        assert loading.person_by_id.get(session, person_id) is None
        assert loading.person_by_email.get(session, "loaded@example.com") is None
        session.rollback()


def test_an_object_the_session_holds_is_returned_as_it_is_not_reloaded(db: Database) -> None:
    stored = _someone(db)
    with db.transaction() as session:
        held = session.get(Person, stored.id)
        with session.no_autoflush:
            held.name = "Not yet flushed"
            again = loading.person_by_public_id.get(session, stored.public_id)
        assert again is held and again.name == "Not yet flushed"
        session.rollback()


def test_an_expired_object_is_refreshed_on_use(db: Database) -> None:
    person_id = _someone(db).id
    with db.transaction() as session:
        person = loading.person_by_id.get(session, person_id)
        session.execute(
            text(f"UPDATE person SET name = 'Changed elsewhere' WHERE id = {person_id}")
        )
        session.expire(person)
        assert loading.person_by_id.get(session, person_id).name == "Changed elsewhere"


@pytest.mark.parametrize("expired", [["name"], None])
def test_an_expired_object_found_by_another_column_is_filled_from_the_row(
    db: Database, expired: list[str] | None
) -> None:
    stored = _someone(db)
    with db.reader() as session:
        held = loading.person_by_id.get(session, stored.id)
        session.expire(held, expired)
        with statements(db) as seen:
            assert loading.person_by_public_id.get(session, stored.public_id) is held
            assert held.name == "Ada <Lovelace>" and held.erased_at == stored.erased_at
        assert len(seen) == 1
    assert held.email == "loaded@example.com"
