"""Requests for a new preferences link, answered by the mailer rather than the page.

Looking the address up and queueing an email while the person waits took about twice as
long as finding no one, so the page's timing told anyone whether an address was on our
records. The page now only notes the request, the same work for any address, and the
mailer sends a link to those we know moments later.
"""

from __future__ import annotations

from sqlalchemy import delete, select
from sqlmodel import Session

from consent.crypto import UndecryptableField, cipher_for
from consent.db import is_postgres
from consent.models import LinkRequest
from consent.services import outbox, people
from consent.validation import normalise_email


def ask(session: Session, email: str) -> None:
    """Note that someone asked for a link for this address; raises InvalidInput if it is not
    an email address."""
    address = normalise_email(email)
    session.add(LinkRequest(address=cipher_for(session).encrypt(address)))
    session.flush()
    outbox.wake_after_commit(session)


def answer(session: Session, limit: int = 200) -> int:
    """Queue a preferences link for each waiting request whose address is someone's, and
    forget every request read. Returns how many were read: none means the wait is over."""
    query = select(LinkRequest.id, LinkRequest.address).order_by(LinkRequest.id).limit(limit)
    if is_postgres(session):
        query = query.with_for_update(skip_locked=True)
    rows = session.execute(query).all()
    if not rows:
        return 0
    cipher = cipher_for(session)
    for _, token in rows:
        try:
            address = cipher.decrypt(token)
        except UndecryptableField:
            continue
        person = people.find_by_email(session, address)
        if person is not None:
            outbox.queue(session, "preferences_link", person=person, context={"name": person.name})
    session.execute(delete(LinkRequest).where(LinkRequest.id.in_([row[0] for row in rows])))
    return len(rows)
