"""Requests for a new preferences link, answered by the mailer rather than the page.

Looking the address up and queueing an email while the person waits took about twice as
long as finding no one, so the page's timing told anyone whether an address was on our
records. The page now only notes the request, the same work for any address, and the
mailer sends a link to those we know moments later.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete, select
from sqlmodel import Session

from consent.crypto import UndecryptableField, cipher_for
from consent.db import is_postgres
from consent.models import LinkRequest
from consent.services import outbox, people
from consent.validation import normalise_email

#: How long a request may wait for the mailer before the retention sweep drops it.
STALE = timedelta(hours=1)


def ask(session: Session, email: str) -> None:
    """Note that someone asked for a link for this address; raises InvalidInput if it is not
    an email address."""
    address = normalise_email(email)
    session.add(LinkRequest(address=cipher_for(session).encrypt(address)))
    session.flush()
    outbox.wake_after_commit(session)


def answer(session: Session, limit: int = 200) -> int:
    """Queue a preferences link for each waiting request whose address is someone's, and
    forget every request read. Returns how many were read: none means the wait is over.

    The people are locked first, then read again: someone erased, or moved to another
    address, while we waited gets nothing, and never a link sent to an address they left.
    """
    query = select(LinkRequest.id, LinkRequest.address).order_by(LinkRequest.id).limit(limit)
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    rows = session.execute(query).all()
    if not rows:
        return 0
    found = [
        (address, people.find_by_email(session, address)) for _, address in _readable(session, rows)
    ]
    known = [(address, person) for address, person in found if person is not None]
    for person in people.still_at(session, known):
        outbox.queue(session, "preferences_link", person=person, context={"name": person.name})
    session.execute(delete(LinkRequest).where(LinkRequest.id.in_([row[0] for row in rows])))
    return len(rows)


def forget(session: Session, addresses: set[str]) -> int:
    """Drop waiting requests for these addresses: their owners are being erased, and no
    table may keep an erased person's address in any form.

    Requests the mailer is answering at this moment are left to it: it waits for the
    erasure, finds no one, and drops them. Waiting for it instead could deadlock.
    """
    if not addresses:
        return 0
    query = select(LinkRequest.id, LinkRequest.address)
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    rows = session.execute(query).all()
    gone = [row_id for row_id, address in _readable(session, rows) if address in addresses]
    if gone:
        session.execute(delete(LinkRequest).where(LinkRequest.id.in_(gone)))
    return len(gone)


def stale(now: datetime) -> Any:
    """Requests the mailer has not answered within an hour: whoever asked will ask again."""
    return LinkRequest.requested_at < now - STALE


def purge_stale(session: Session, now: datetime) -> int:
    return int(session.execute(delete(LinkRequest).where(stale(now))).rowcount or 0)


def _readable(session: Session, rows: Sequence[Any]) -> list[tuple[int, str]]:
    """(id, address) of each request whose address can still be read."""
    cipher, readable = cipher_for(session), []
    for row_id, token in rows:
        try:
            readable.append((row_id, cipher.decrypt(token)))
        except UndecryptableField:
            continue
    return readable
