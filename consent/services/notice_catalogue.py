"""Purposes and every published notice version, kept in memory for the pages that list them.

The preferences page shows each purpose with its current wording and the wording a person
agreed to. Purposes change only when the seed file is synced and notices are never edited
once published, yet loading them on every request cost more than the rest of the page's
queries. A process keeps one copy per database: a publish or sync in this process drops it
when it commits, and a copy older than ``MAX_AGE`` seconds is loaded again so another
process's publish shows within that time. A consent given from a page that showed an older
version records that older version, which is what the person read.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from dataclasses import dataclass

from sqlmodel import Session, select

from consent.db import after_commit, flushed_connection
from consent.models import Notice, Purpose

#: Seconds a copy is trusted before it is loaded again.
MAX_AGE = 60.0

_CHANGING = "catalogue_changing"


@dataclass(frozen=True)
class Catalogue:
    """Every purpose in page order, with its notices by id and its newest notice."""

    purposes: tuple[Purpose, ...]
    notices: dict[int, Notice]
    newest: dict[int, Notice]

    def knows(self, notice_ids: set[int]) -> bool:
        return notice_ids <= self.notices.keys()


class CatalogueCache:
    """One process's copy of the catalogue for one database."""

    def __init__(
        self, max_age: float = MAX_AGE, clock: Callable[[], float] = time.monotonic
    ) -> None:
        self.max_age = max_age
        self.clock = clock
        self._copy: Catalogue | None = None
        self._loaded_at = 0.0
        self._generation = 0

    def get(self, session: Session, *, fresh: bool = False) -> Catalogue:
        """The kept copy, or a new one; a copy loaded while a publish committed is not kept."""
        copy = self._copy
        if fresh or copy is None or self.clock() - self._loaded_at >= self.max_age:
            generation, loaded_at = self._generation, self.clock()
            copy = load(session)
            if generation == self._generation:
                self._copy, self._loaded_at = copy, loaded_at
        return copy

    def forget(self) -> None:
        self._generation += 1
        self._copy = None


def load(session: Session) -> Catalogue:
    """Read the catalogue as objects of its own, belonging to no session.

    The copy is shared by every request in the process, so it must not be the session's own
    objects, which a write in that session could change or detach.
    """
    connection = flushed_connection(session)
    purpose_rows = connection.execute(
        select(Purpose.__table__).order_by(Purpose.sort_order, Purpose.id)
    ).all()
    notice_rows = connection.execute(select(Notice.__table__).order_by(Notice.version)).all()
    purposes = {row.id: Purpose(**row._mapping) for row in purpose_rows}
    notices: dict[int, Notice] = {}
    newest: dict[int, Notice] = {}
    for row in notice_rows:
        if row.purpose_id in purposes:
            notices[row.id] = newest[row.purpose_id] = Notice(**row._mapping)
    listed = tuple(purpose for purpose in purposes.values() if purpose.id in newest)
    return Catalogue(listed, notices, newest)


def _cache(session: Session) -> CatalogueCache | None:
    shared = session.info.get("shared")
    if shared is None:
        return None
    cache = shared.get("catalogue")
    if cache is None:
        cache = shared.setdefault("catalogue", CatalogueCache())
    return cache


def current(session: Session, *, needs: set[int] | None = None, fresh: bool = False) -> Catalogue:
    """The catalogue, from memory when the copy is recent and holds the ``needs`` notices;
    ``fresh`` reads it again, for a page whose wording must be the newest this moment."""
    cache = _cache(session)
    if cache is None or session.info.get(_CHANGING):
        return load(session)
    catalogue = cache.get(session, fresh=fresh)
    if needs and not catalogue.knows(needs):
        catalogue = cache.get(session, fresh=True)
    return catalogue


def changed(session: Session) -> None:
    """Drop this process's copy once the transaction that changed the catalogue commits.

    Until then this session reads the catalogue afresh, so a copy holding changes that may
    yet roll back is never kept.
    """
    if session.info.get(_CHANGING):
        return
    session.info[_CHANGING] = True
    cache = _cache(session)
    if cache is not None:
        after_commit(session, cache.forget)
