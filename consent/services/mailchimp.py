"""Keeping the Mailchimp audience in step: the queue of changes, and what Mailchimp tells us.

Newsletter consent given puts a ``subscribe`` in the queue, withdrawn an ``unsubscribe``,
erasure a ``delete``; a later change for the same member supersedes an earlier one not
yet pushed. Nothing is queued when no audience is configured. What Mailchimp reports
(webhook or reconciliation) is recorded in the ledger as a withdrawal.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta

from sqlalchemy import case, func, select, update
from sqlmodel import Session

from consent.db import settings_of
from consent.errors import NotConsented
from consent.models import MailchimpChange, Person
from consent.services import ledger, people
from consent.timeutil import utcnow
from consent.validation import without_addresses

LEASE = timedelta(minutes=15)
MAX_ATTEMPTS = 10
CHANNEL = "mailchimp_webhook"


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 of the lower-cased address."""
    return hashlib.md5(email.lower().encode("utf-8"), usedforsecurity=False).hexdigest()


def enabled(session: Session) -> bool:
    settings = settings_of(session)
    return bool(settings.mailchimp_list_id and settings.mailchimp_api_key)


def _supersede(session: Session, digest: str) -> None:
    """A superseded change is never pushed, so it keeps nothing that points to the person."""
    table = MailchimpChange.__table__
    session.execute(
        update(table)
        .where(table.c.subscriber_hash == digest, table.c.status == "pending")
        .values(status="superseded", email=None, name=None, subscriber_hash=None, done_at=utcnow())
    )


def _forget(session: Session, digest: str) -> None:
    """Erasure: older changes to this member keep no name, address or Mailchimp's hash of it
    (an unsalted MD5 of the address). One being pushed is superseded too: the delete queued
    after it settles the member, so its outcome no longer matters and it is never retried."""
    table = MailchimpChange.__table__
    session.execute(
        update(table)
        .where(table.c.subscriber_hash == digest, table.c.status != "pending")
        .values(
            email=None,
            name=None,
            subscriber_hash=None,
            status=case((table.c.status == "pushing", "superseded"), else_=table.c.status),
            done_at=case((table.c.status == "pushing", utcnow()), else_=table.c.done_at),
        )
    )


def _queue(session: Session, action: str, member: str, **values: object) -> None:
    """Queue a change to the member whose current address is ``member``."""
    if not enabled(session):
        return
    digest = subscriber_hash(member)
    _supersede(session, digest)
    session.add(MailchimpChange(action=action, subscriber_hash=digest, **values))
    session.flush()


def queue_subscribe(session: Session, person: Person, opt_in_at: datetime) -> None:
    if person.email:
        _queue(
            session,
            "subscribe",
            person.email,
            email=person.email,
            name=person.name,
            opt_in_at=opt_in_at,
        )


def queue_unsubscribe(session: Session, person: Person) -> None:
    if person.email:
        _queue(session, "unsubscribe", person.email)


def queue_delete(session: Session, email: str) -> None:
    """Erasure: Mailchimp must forget the address too; only its hash is kept, until pushed."""
    _queue(session, "delete", email)
    _forget(session, subscriber_hash(email))


def queue_email_change(session: Session, old_email: str, new_email: str) -> None:
    _queue(session, "update_email", old_email, email=new_email)


def claim(session: Session, limit: int, now: datetime | None = None) -> list[MailchimpChange]:
    """Take due changes in order; a pusher that died leaves them to be retaken after a lease."""
    now = now or utcnow()
    table = MailchimpChange.__table__
    session.execute(
        update(table)
        .where(table.c.status == "pushing", table.c.claimed_at < now - LEASE)
        .values(status="pending")
    )
    due = (
        select(table.c.id)
        .where(table.c.status == "pending", table.c.next_attempt_at <= now)
        .order_by(table.c.id)
        .limit(limit)
    )
    ids = list(session.execute(due).scalars())
    if not ids:
        return []
    session.execute(
        update(table)
        .where(table.c.id.in_(ids), table.c.status == "pending")
        .values(status="pushing", claimed_at=now, attempts=table.c.attempts + 1)
    )
    return list(
        session.execute(
            select(MailchimpChange).where(MailchimpChange.id.in_(ids)).order_by(MailchimpChange.id)
        ).scalars()
    )


def mark_done(session: Session, ids: list[int], now: datetime | None = None) -> None:
    """Pushed: keep the row for the sync history, without the address or its hash."""
    if not ids:
        return
    table = MailchimpChange.__table__
    session.execute(
        update(table)
        .where(table.c.id.in_(ids), table.c.status != "superseded")
        .values(
            status="done",
            done_at=now or utcnow(),
            email=None,
            name=None,
            subscriber_hash=None,
            last_error=None,
        )
    )


def mark_retry(
    session: Session, ids: list[int], error: str, delay: timedelta, now: datetime | None = None
) -> None:
    """Try again later; after too many attempts the change shows as failed for a person to see."""
    now = now or utcnow()
    for change in session.execute(
        select(MailchimpChange).where(
            MailchimpChange.id.in_(ids), MailchimpChange.status != "superseded"
        )
    ).scalars():
        change.last_error = without_addresses(error)[:1000]
        change.status = "failed" if change.attempts >= MAX_ATTEMPTS else "pending"
        change.next_attempt_at = now + delay
    session.flush()


def mark_failed(session: Session, ids: list[int], error: str) -> None:
    table = MailchimpChange.__table__
    session.execute(
        update(table)
        .where(table.c.id.in_(ids), table.c.status != "superseded")
        .values(status="failed", last_error=without_addresses(error)[:1000])
    )


def record_unsubscribe(session: Session, email: str, *, reason: str, actor: str) -> bool:
    """Mailchimp says this address unsubscribed or was cleaned: withdraw the newsletter."""
    person = people.find_by_email(session, email)
    if person is None:
        return False
    try:
        event = ledger.withdraw(
            session,
            person,
            "newsletter",
            channel=CHANNEL,
            actor=actor,
            note=f"Mailchimp reported: {reason}",
        )
    except NotConsented:
        return False
    return event is not None


def record_email_change(session: Session, old_email: str, new_email: str, *, actor: str) -> bool:
    """The person changed their address in Mailchimp: correct it here too."""
    person = people.find_by_email(session, old_email)
    if person is None:
        return False
    return people.change_email(
        session,
        person,
        new_email,
        channel=CHANNEL,
        actor=actor,
        note="Address changed in Mailchimp",
    )


def sync_state(session: Session) -> dict[str, int]:
    """Counts by status, for the admin dashboard."""
    table = MailchimpChange.__table__
    return dict(
        session.execute(select(table.c.status, func.count()).group_by(table.c.status)).all()
    )
