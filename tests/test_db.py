"""The database helpers the services lean on, on SQLite and PostgreSQL alike."""

from __future__ import annotations

from sqlalchemy import select

from consent.db import Database, among
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
