"""Load one model object by a unique column through a prepared statement.

Loading a person through the ORM's query machinery took 0.2 to 0.5 ms here, nearly all of it
setting up the execution and the loading context; the row itself comes back from the driver
in microseconds. Every page reached by a signed link and every consent change loads a
person first, so this path takes the row from the driver, converts it with SQLAlchemy's own
result processors, and hands the object to the session as a persistent one, as a query
would have left it. Unlike a query, it fires no ``load`` events and runs no
``@reconstructor``: models loaded this way must not rely on them.
"""

from __future__ import annotations

from typing import Any, Generic, TypeVar

from sqlalchemy import UniqueConstraint, bindparam, inspect, select
from sqlalchemy.orm import configure_mappers, make_transient_to_detached
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, SQLModel

from consent.models import Person
from consent.prepared import Prepared

M = TypeVar("M", bound=SQLModel)


def built(model: type[M], values: dict[str, Any]) -> M:
    """A (transient) model object made as SQLAlchemy makes one for a loaded row: SQLModel's
    constructor validates every field and costs ten times as much."""
    mapper = inspect(model)
    if not mapper.configured:
        configure_mappers()  # what a query or a constructor would have done first
    instance: M = mapper.class_manager.new_instance()
    instance.__dict__.update(values)
    return instance


def _identifies(table: Any, column: str) -> bool:
    """True when ``column`` alone is the table's primary key or is declared unique."""
    if table.c[column].unique:
        return True
    alone = [column]
    keys = [table.primary_key.columns, *(index.columns for index in table.indexes if index.unique)]
    keys += [c.columns for c in table.constraints if isinstance(c, UniqueConstraint)]
    return any([c.name for c in key] == alone for key in keys)


class Loader(Generic[M]):
    """Finds at most one ``model`` row whose ``column`` equals a value (a unique column).

    Every column of the model's one table is loaded; the constructor refuses a model
    mapped to more than one table, and a column that could match several rows.
    """

    def __init__(self, model: type[M], column: str) -> None:
        mapper = inspect(model)
        if len(mapper.tables) != 1:
            raise ValueError(f"{model.__name__} is mapped to more than one table.")
        table = mapper.local_table
        if not _identifies(table, column):
            raise ValueError(f"{model.__name__}.{column} is not unique.")
        self.model = model
        self._mapper = mapper
        self._columns = list(table.columns)
        self._keys = [mapper.get_property_by_column(c).key for c in self._columns]
        self._primary = [mapper.get_property_by_column(c).key for c in mapper.primary_key]
        self._by_primary_key = [table.c[column]] == list(mapper.primary_key)
        self._statement = Prepared(
            lambda _dialect: select(*self._columns).where(table.c[column] == bindparam("value"))
        )

    def __repr__(self) -> str:
        return f"Loader({self.model.__name__})"

    def get(self, session: Session, value: Any) -> M | None:
        """The object, from the session if it already holds it, else from the database.

        Pending changes (a deletion too) are flushed first, and expired attributes of an
        object the session holds are filled from the row, as a query would.
        """
        if self._by_primary_key:
            if session.autoflush:
                session.flush()
            key = self._mapper.identity_key_from_primary_key([value])
            if key in session.identity_map:
                return session.get(self.model, value)
        found = self._statement.rows(session, {"value": value})
        if not found:
            return None
        values = dict(zip(self._keys, found[0], strict=True))
        key = self._mapper.identity_key_from_primary_key([values[k] for k in self._primary])
        held: M | None = session.identity_map.get(key)
        if held is not None:
            state = inspect(held)
            for name in state.expired_attributes - state.dict.keys():
                set_committed_value(held, name, values[name])
            return held
        instance = built(self.model, values)
        make_transient_to_detached(instance)
        session.add(instance)
        return instance


person_by_id: Loader[Person] = Loader(Person, "id")
person_by_public_id: Loader[Person] = Loader(Person, "public_id")
person_by_email: Loader[Person] = Loader(Person, "email")
