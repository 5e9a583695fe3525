"""Keeping the Mailchimp audience in step: the queue of changes, and what Mailchimp tells us.

Newsletter consent given puts a ``subscribe`` in the queue, withdrawn an ``unsubscribe``,
erasure a ``delete``; a later change for the same member supersedes an earlier one not
yet pushed, whether or not an audience is configured now. While none is, nothing is queued
but what a member Mailchimp may already hold needs when sync resumes: an unsubscribe, a
delete or an address change. What Mailchimp reports (webhook or reconciliation) is
recorded in the ledger as a withdrawal.
"""

from __future__ import annotations

import hashlib
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, case, func, or_, select, text, update
from sqlmodel import Session

from consent.db import is_postgres, settings_of
from consent.errors import NotConsented
from consent.models import MailchimpChange, Person
from consent.prepared import Prepared
from consent.services import ledger, notices, people
from consent.timeutil import utcnow
from consent.validation import without_addresses

LEASE = timedelta(minutes=15)
MAX_ATTEMPTS = 10
CHANNEL = "mailchimp_webhook"
#: Changes that stop mail: they are retried for as long as it takes, never given up.
STOPPING = ("unsubscribe", "delete")
#: The longest wait between two tries of one change.
LONGEST_WAIT = timedelta(hours=6)
#: A change in these states reached Mailchimp, or may have: Mailchimp may hold the member.
REACHED = ("done", "pushing")
#: The PostgreSQL advisory lock that makes two pushers' claims take turns ("mchp").
_CLAIM_LOCK = 0x6D636870


def subscriber_hash(email: str) -> str:
    """Mailchimp's member id: the MD5 of the lower-cased address."""
    return hashlib.md5(email.lower().encode("utf-8"), usedforsecurity=False).hexdigest()


def enabled(session: Session) -> bool:
    settings = settings_of(session)
    return bool(settings.mailchimp_list_id and settings.mailchimp_api_key)


def _supersede(session: Session, *where: Any, now: datetime | None = None) -> None:
    """Drop the pending changes that match: a superseded change is never pushed, so it
    keeps nothing that points to the person."""
    table = MailchimpChange.__table__
    session.execute(
        update(table)
        .where(table.c.status == "pending", *where)
        .values(
            status="superseded",
            email=None,
            name=None,
            subscriber_hash=None,
            done_at=now or utcnow(),
        )
    )


def _supersede_member(session: Session, digest: str) -> None:
    """``_supersede`` for one member, run on the driver's cursor: every newsletter agreement
    runs it, whether or not sync is on, and SQLAlchemy's own execution cost more than it."""
    _SUPERSEDING.run(session, {"digest": digest, "now": utcnow()})


def _superseding(_dialect: str) -> Any:
    table = MailchimpChange.__table__
    return (
        update(table)
        .where(table.c.status == "pending", table.c.subscriber_hash == bindparam("digest"))
        .values(
            status="superseded",
            email=None,
            name=None,
            subscriber_hash=None,
            done_at=bindparam("now"),
        )
    )


_SUPERSEDING = Prepared(_superseding)


def _theirs(person_id: int | None, email: str | None) -> Any:
    """The changes of a person, or to the member Mailchimp has at their address."""
    table = MailchimpChange.__table__
    theirs = [table.c.person_id == person_id] if person_id is not None else []
    if email:
        theirs.append(table.c.subscriber_hash == subscriber_hash(email))
    return or_(*theirs)


def _may_hold(session: Session, theirs: Any) -> bool:
    """Whether Mailchimp may hold the person: a push of theirs went through, or is on its
    way. While sync is off, only such a member is worth a change queued for later."""
    table = MailchimpChange.__table__
    reached = select(table.c.id).where(theirs, table.c.status.in_(REACHED))
    return session.execute(reached.limit(1)).first() is not None


def _queue(
    session: Session, action: str, digest: str, person_id: int | None, **values: object
) -> MailchimpChange:
    """Queue a change to the member Mailchimp knows by ``digest`` (its hash of the address)."""
    _supersede_member(session, digest)
    change = MailchimpChange(action=action, subscriber_hash=digest, person_id=person_id, **values)
    session.add(change)
    session.flush()
    return change


def queue_subscribe(session: Session, person: Person, opt_in_at: datetime) -> None:
    """With no audience configured nothing is queued, but a change waiting from before
    still gives way: an unsubscribe pushed when sync resumes would undo this agreement."""
    if not person.email:
        return
    if not enabled(session):
        _supersede_member(session, subscriber_hash(person.email))
    else:
        _queue(
            session,
            "subscribe",
            subscriber_hash(person.email),
            person.id,
            email=person.email,
            name=person.name,
            opt_in_at=opt_in_at,
        )


def queue_unsubscribe(session: Session, person: Person) -> None:
    """With no audience configured, a subscribe waiting from before is dropped, or it would
    be pushed when sync resumes; the unsubscribe (only a hash) is still queued if Mailchimp
    may hold them, since reconciliation reads only members changed since its last run."""
    if not person.email:
        return
    if enabled(session) or _may_hold(session, _theirs(person.id, None)):
        _queue(session, "unsubscribe", subscriber_hash(person.email), person.id)
    else:
        _supersede(session, _theirs(person.id, person.email))


def queue_delete(session: Session, person_id: int, email: str) -> None:
    """Erasure: Mailchimp must forget the person too, under whichever address it has them.

    An address change not yet pushed, or refused for good, leaves them under the old one,
    so that is deleted as well (a change keeps its hash until it is pushed). Every earlier
    change of theirs keeps no name, address or hash (an unsalted MD5 of the address); one
    being pushed is superseded, since the delete settles the member, so its late outcome
    changes nothing. Only the deletes keep their hash, until pushed. With no audience
    configured they are queued only if Mailchimp may hold the person: otherwise there is
    nothing there to delete, and a hash kept for a sync that may never resume is not.
    """
    table = MailchimpChange.__table__
    ours = _theirs(person_id, email)
    found = session.execute(select(table.c.subscriber_hash, table.c.status).where(ours)).all()
    digests = {subscriber_hash(email)} | {digest for digest, _ in found if digest}
    deletes = []
    if enabled(session) or any(status in REACHED for _, status in found):
        deletes = [_queue(session, "delete", digest, person_id).id for digest in sorted(digests)]
    elif not found:
        return
    unsettled = table.c.status.in_(("pending", "pushing"))
    session.execute(
        update(table)
        .where(or_(ours, table.c.subscriber_hash.in_(digests)), table.c.id.not_in(deletes))
        .values(
            email=None,
            name=None,
            subscriber_hash=None,
            status=case((unsettled, "superseded"), else_=table.c.status),
            done_at=case((unsettled, utcnow()), else_=table.c.done_at),
        )
    )


def drop_subscribes(session: Session, person: Person) -> None:
    """Mailchimp itself unsubscribed the person: a subscribe of theirs not yet pushed must
    not undo that. Nothing is queued, since Mailchimp already holds them as unsubscribed."""
    _supersede(
        session,
        _theirs(person.id, person.email),
        MailchimpChange.__table__.c.action == "subscribe",
    )


def follow_address(session: Session, old_email: str, new_email: str) -> None:
    """Mailchimp moved a member to a new address: changes waiting for the old one go to
    the new one, where Mailchimp now has the member."""
    table = MailchimpChange.__table__
    session.execute(
        update(table)
        .where(table.c.subscriber_hash == subscriber_hash(old_email), table.c.status == "pending")
        .values(
            subscriber_hash=subscriber_hash(new_email),
            email=case((table.c.action == "subscribe", new_email), else_=table.c.email),
        )
    )


def queue_email_change(
    session: Session, person: Person, old_email: str, new_email: str, opt_in_at: datetime | None
) -> None:
    """Move the member to the new address, keeping whatever status Mailchimp holds: one who
    unsubscribed there stays unsubscribed. If Mailchimp never had them (the first subscribe
    had not been pushed), the pusher subscribes the new address. With no audience configured
    the move is still queued if Mailchimp may hold them, so a later unsubscribe finds them;
    otherwise a subscribe of the old address waiting from before is dropped."""
    if not enabled(session) and not _may_hold(session, _theirs(person.id, None)):
        _supersede(
            session, MailchimpChange.__table__.c.subscriber_hash == subscriber_hash(old_email)
        )
    else:
        _queue(
            session,
            "update_email",
            subscriber_hash(old_email),
            person.id,
            email=new_email,
            name=person.name,
            opt_in_at=opt_in_at,
        )


def claim(session: Session, limit: int, now: datetime | None = None) -> list[MailchimpChange]:
    """Take due changes in order; a pusher that died leaves them to be retaken after a lease.

    Only the changes this call's update won are returned: another pusher may take some of
    the same rows between the read and the update. A change waits while an earlier one for
    the same member is being pushed (by a command-line push beside the scheduler's, say):
    an unsubscribe pushed first would be undone by the subscribe still on its way. On
    PostgreSQL claims take turns, so each sees what the one before it took. A change
    still waiting behind a newer one for the same member is dropped.
    """
    now = now or utcnow()
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:key)"), {"key": _CLAIM_LOCK})
    table = MailchimpChange.__table__
    stale = session.execute(
        update(table)
        .where(table.c.status == "pushing", table.c.claimed_at < now - LEASE)
        .values(status="pending")
        .returning(table.c.id)
    )
    _supersede_overtaken(session, list(stale.scalars()), now)
    pushing = table.alias("pushing")
    behind = (
        select(pushing.c.id)
        .where(
            pushing.c.status == "pushing",
            pushing.c.subscriber_hash == table.c.subscriber_hash,
            pushing.c.id < table.c.id,
        )
        .exists()
    )
    due = (
        select(table.c.id)
        .where(table.c.status == "pending", table.c.next_attempt_at <= now, ~behind)
        .order_by(table.c.id)
        .limit(limit)
    )
    ids = list(session.execute(due).scalars())
    if not ids:
        return []
    _supersede_overtaken_by(session, ids, now)
    won = session.execute(
        update(table)
        .where(table.c.id.in_(ids), table.c.status == "pending")
        .values(status="pushing", claimed_at=now, attempts=table.c.attempts + 1)
        .returning(table.c.id)
    )
    ids = list(won.scalars())
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


def _supersede_overtaken(session: Session, ids: list[int], now: datetime) -> None:
    """A change going back to the queue is dropped if a later one for the same member (the
    same address) was queued meanwhile: pushed after it, the old change would undo the
    newer one (a subscribe retried after the person withdrew)."""
    if not ids:
        return
    table = MailchimpChange.__table__
    later = table.alias("later")
    newer = (
        select(later.c.id)
        .where(later.c.id > table.c.id, later.c.subscriber_hash == table.c.subscriber_hash)
        .exists()
    )
    _supersede(session, table.c.id.in_(ids), newer, now=now)


def _supersede_overtaken_by(session: Session, ids: list[int], now: datetime) -> None:
    """Drop the waiting changes that these newer ones overtook. Queuing a change drops the
    one waiting before it, but on PostgreSQL a change sent back to wait (Mailchimp was busy)
    at the moment a newer one is queued is seen by neither, and would be pushed after it.
    The older ones are found from the newer, by member, so a long queue is not scanned on
    every claim; ``_supersede`` keeps to those still waiting."""
    table = MailchimpChange.__table__
    newer, older = table.alias("newer"), table.alias("older")
    overtaken = list(
        session.execute(
            select(older.c.id)
            .join(
                newer,
                (newer.c.subscriber_hash == older.c.subscriber_hash) & (newer.c.id > older.c.id),
            )
            .where(newer.c.id.in_(ids))
        ).scalars()
    )
    if overtaken:
        _supersede(session, table.c.id.in_(overtaken), now=now)


def wait_before(attempts: int, first: timedelta) -> timedelta:
    """Each failed try doubles the wait, up to a few hours, so a long outage is ridden out
    without hammering Mailchimp."""
    return min(first * 2 ** max(attempts - 1, 0), LONGEST_WAIT)


def mark_retry(
    session: Session, ids: list[int], error: str, delay: timedelta, now: datetime | None = None
) -> None:
    """Try again later. A subscribe or address change that keeps failing shows as failed for
    a person to see; an unsubscribe or delete is retried until it goes, since giving up
    would leave Mailchimp mailing someone who asked it to stop."""
    now = now or utcnow()
    for change in session.execute(
        select(MailchimpChange).where(
            MailchimpChange.id.in_(ids), MailchimpChange.status != "superseded"
        )
    ).scalars():
        change.last_error = without_addresses(error)[:1000]
        gives_up = change.attempts >= MAX_ATTEMPTS and change.action not in STOPPING
        change.status = "failed" if gives_up else "pending"
        change.next_attempt_at = now + wait_before(change.attempts, delay)
        if change.status == "failed":
            change.email = change.name = None
    session.flush()
    _supersede_overtaken(session, list(ids), now)


def release(
    session: Session, ids: list[int], error: str, delay: timedelta, now: datetime | None = None
) -> None:
    """Changes not tried because Mailchimp asked us to wait: back in the queue, and the
    attempt they were charged when claimed is given back."""
    if not ids:
        return
    now = now or utcnow()
    table = MailchimpChange.__table__
    session.execute(
        update(table)
        .where(table.c.id.in_(ids), table.c.status == "pushing")
        .values(
            status="pending",
            attempts=table.c.attempts - 1,
            last_error=error,
            next_attempt_at=now + delay,
        )
    )
    _supersede_overtaken(session, list(ids), now)


def mark_failed(session: Session, ids: list[int], error: str) -> None:
    """Refused for good (a subscribe or address change: an unsubscribe or delete is retried
    instead): never sent again, so it keeps no name or address, only the hash by which staff
    can look the member up in Mailchimp."""
    table = MailchimpChange.__table__
    session.execute(
        update(table)
        .where(table.c.id.in_(ids), table.c.status != "superseded")
        .values(status="failed", email=None, name=None, last_error=without_addresses(error)[:1000])
    )


def mark_moved_missing(session: Session, ids: list[int], now: datetime | None = None) -> None:
    """Mailchimp had no member at the old address of an address change: subscribe the new
    address instead, unless a later change of the person's (a withdrawal, say) is queued."""
    now = now or utcnow()
    table = MailchimpChange.__table__
    for change in session.execute(
        select(MailchimpChange).where(
            MailchimpChange.id.in_(ids), MailchimpChange.status != "superseded"
        )
    ).scalars():
        later = session.execute(
            select(table.c.id).where(
                table.c.id > change.id,
                table.c.person_id == change.person_id
                if change.person_id is not None
                else table.c.subscriber_hash == subscriber_hash(change.email or ""),
            )
        ).first()
        if change.email and later is None:
            change.action, change.status = "subscribe", "pending"
            change.subscriber_hash = subscriber_hash(change.email)
            change.next_attempt_at = now
        else:
            change.status, change.done_at = "done", now
            change.email = change.name = change.subscriber_hash = None
    session.flush()


def record_unsubscribe(
    session: Session,
    email: str,
    *,
    reason: str,
    actor: str,
    changed_at: datetime | None = None,
) -> bool:
    """Mailchimp says this address unsubscribed or was cleaned: withdraw the newsletter.

    ``changed_at`` is when Mailchimp last changed the member. Someone who agreed again here
    after that has changed their mind since, so an older unsubscribe (a first reconciliation
    reads them all) does not undo it. Mailchimp gives whole seconds, hence the margin.
    """
    person = people.find_by_email(session, email)
    if person is None:
        return False
    if changed_at is not None:
        state = ledger.get_state(session, person, notices.get_purpose(session, "newsletter"))
        given = state.given_at if state is not None and state.status == "given" else None
        if given is not None and given - timedelta(seconds=1) >= changed_at:
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


def recheck_subscribed(session: Session, email: str) -> bool:
    """Mailchimp holds this address as subscribed (someone imported it there, or it came in
    through Mailchimp's own form). If the person opted out here, or was erased after opting
    out, unsubscribe them again: nobody is mailed after opting out unless they agree here.
    An address nobody here holds now counts as opted out if it is suppressed, or if it ever
    asked us to stop (kept when its person was erased, or moved, without suppression)."""
    if not enabled(session):
        return False
    person = people.find_by_email(session, email)
    if person is None:
        if not people.is_suppressed(session, email) and people.opted_out_at(session, email) is None:
            return False
        _queue(session, "unsubscribe", subscriber_hash(email), None)
        return True
    state = ledger.get_state(session, person, notices.get_purpose(session, "newsletter"))
    if state is None or state.status not in ("withdrawn", "expired"):
        return False
    queue_unsubscribe(session, person)
    return True


def record_email_change(session: Session, old_email: str, new_email: str, *, actor: str) -> bool:
    """The person changed their address in Mailchimp: correct it here too. Links sent to
    the old address stop working, as when they change it on their preferences page."""
    person = people.find_by_email(session, old_email)
    if person is None:
        return False
    changed = people.change_email(
        session,
        person,
        new_email,
        channel=CHANNEL,
        actor=actor,
        note="Address changed in Mailchimp",
    )
    if changed:
        people.revoke_links(person)
        follow_address(session, old_email, new_email)
    return changed


#: How the dashboard names unsubscribes and deletes still waiting after many tries.
STUCK = f"unsubscribes or deletes still retried after {MAX_ATTEMPTS} tries"


def sync_state(session: Session) -> dict[str, int]:
    """Counts by status, for the admin dashboard, and the unsubscribes and deletes tried as
    often as a subscribe is before it is given up: they are never given up, so without this
    one Mailchimp keeps refusing would wait among the pending unseen."""
    table = MailchimpChange.__table__
    counts = dict(
        session.execute(select(table.c.status, func.count()).group_by(table.c.status)).all()
    )
    stuck = session.execute(
        select(func.count()).where(
            table.c.status.in_(("pending", "pushing")),
            table.c.action.in_(STOPPING),
            table.c.attempts >= MAX_ATTEMPTS,
        )
    ).scalar_one()
    if stuck:
        counts[STUCK] = stuck
    return counts
