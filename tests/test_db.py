"""The database helpers the services lean on, on SQLite and PostgreSQL alike."""

from __future__ import annotations

import time

import pytest
from sqlalchemy import Engine, select, text
from sqlalchemy.exc import OperationalError

from consent.db import Database, among, make_engine
from consent.models import Person
from tests import factories


def test_among_matches_a_list_bound_as_one_parameter(db: Database) -> None:
    with db.transaction() as session:
        ids = [factories.person(session, f"p{n}@example.com").id for n in range(4)]
    chosen = [ids[0], ids[2]]
    with db.reader() as session:

        def found(*where: object) -> list[int]:
            query = select(Person.id).where(*where).order_by(Person.id)
            return list(session.execute(query).scalars())

        assert found(among(Person.id, chosen)) == chosen
        assert found(~among(Person.id, chosen)) == [ids[1], ids[3]]
        assert found(among(Person.id, [])) == []
        assert found(among(Person.email, [])) == []
        assert found(among(Person.email, ["p1@example.com", "p3@example.com"])) == [
            ids[1],
            ids[3],
        ]
        assert found(among(Person.id, range(10**6, 10**6 + 6000))) == []
        assert found(among(Person.id, [*range(10**6, 10**6 + 6000), ids[3]])) == [ids[3]]


def _drop_connection(url: str, engine: Engine) -> int:
    """Use one pooled connection, return it, then have the server end it."""
    with engine.connect() as conn:
        pid = conn.execute(text("SELECT pg_backend_pid()")).scalar_one()
    other = make_engine(url, pool=False)
    with other.connect() as conn:
        conn.execute(text("SELECT pg_terminate_backend(:pid)"), {"pid": pid})
    other.dispose()
    time.sleep(0.3)
    return pid


def test_a_pooled_connection_the_server_ended_is_replaced_after_idling(
    database_url: str, backend: str
) -> None:
    if backend != "postgresql":
        pytest.skip("the idle check is for PostgreSQL's pool")
    engine = make_engine(database_url, ping_after_idle=0.1)
    try:
        ended = _drop_connection(database_url, engine)
        with engine.connect() as conn:
            assert conn.execute(text("SELECT pg_backend_pid()")).scalar_one() != ended
    finally:
        engine.dispose()


def test_a_connection_used_a_moment_ago_is_not_checked(database_url: str, backend: str) -> None:
    """What the idle check is for: without it, the next use of an ended connection fails."""
    if backend != "postgresql":
        pytest.skip("the idle check is for PostgreSQL's pool")
    engine = make_engine(database_url, ping_after_idle=3600)
    try:
        _drop_connection(database_url, engine)
        with pytest.raises(OperationalError), engine.connect() as conn:
            conn.execute(text("SELECT 1"))
        with engine.connect() as conn:
            assert conn.execute(text("SELECT 1")).scalar_one() == 1
    finally:
        engine.dispose()
