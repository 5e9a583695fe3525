"""The mail queue: services add messages here, in the same transaction as their cause.

Nothing in the service layer sends mail. A message is rendered when it is queued (so it
says what was true when the decision was made), claimed atomically by one worker, and
marked sent, retried with backoff, or failed. Bodies are purged a while after sending.

A claim is a lease: a worker renews it as it works through a batch and records an outcome
only while it still holds it, so a batch that outlasts the lease cannot send twice what
``requeue_stale`` has already handed to another worker.
"""

from __future__ import annotations

import json
import random
from collections.abc import Collection
from dataclasses import dataclass
from datetime import datetime, timedelta
from email.utils import make_msgid
from functools import cache
from typing import Any, NamedTuple
from urllib.parse import urlsplit

from sqlalchemy import String, and_, bindparam, case, cast, func, select, update
from sqlmodel import Session

from consent import emails, links
from consent.db import after_commit, among, is_postgres, settings_of, upsert_insert
from consent.errors import InvalidInput
from consent.models import Outbox, Person
from consent.models.outbox import OUTBOX_WAITING
from consent.services import people
from consent.timeutil import utcnow
from consent.validation import without_addresses

MAX_ATTEMPTS = 8
BACKOFF_BASE = timedelta(seconds=30)
BACKOFF_CAP = timedelta(hours=6)
CONNECTION_RETRY = timedelta(seconds=60)
LEASE = timedelta(minutes=10)
ERROR_MAX = 1000
#: Why a message waiting to be sent was cancelled when the agreement it needed was withdrawn.
ENDED = "they stopped agreeing before it was sent."


def queue(
    session: Session,
    template: str,
    *,
    person: Person,
    context: dict[str, Any] | None = None,
    to: str | None = None,
    dedupe_key: str | None = None,
    purge_on_send: bool = False,
    detach: bool = False,
    not_before: datetime | None = None,
    unsubscribe_purpose: str | None = None,
    membership_id: int | None = None,
    booking_id: int | None = None,
) -> int | None:
    """Queue one email to a person; returns its id, or None when it was already queued.

    ``dedupe_key`` makes a message once-only for ever (reminders survive retries and
    restarts without a second copy). Mail the person did not ask for is never queued to
    an address on the suppression list. Mail to any address but the person's own (a new
    address not yet confirmed) carries none of their links: whoever holds that mailbox
    has proved nothing yet. ``detach`` leaves the message unlinked from the person, so
    erasing them (which cancels their queued mail) does not cancel it; nor does it carry
    their links, which erasing them revokes.
    ``unsubscribe_purpose`` names what its unsubscribe link stops, where the template's
    own purpose is not specific enough. ``membership_id`` or ``booking_id`` names what the
    message is about, so that leaving the panel or cancelling the booking cancels it.
    """
    spec = emails.EMAILS[template]
    settings = settings_of(session)
    address = to or person.email
    if not address:
        raise InvalidInput("email", "There is no email address to send to.")
    if not spec.requested and people.is_suppressed(session, address):
        return None
    base: dict[str, Any] = {
        "council_name": settings.council_name,
        "service_name": settings.service_name,
        "manage_url": None,
        "unsubscribe_url": None,
    }
    headers: dict[str, str] = {}
    if not detach and person.erased_at is None and address == person.email:
        base["manage_url"] = links.link_url(settings, person, "manage")
        unsubscribe = links.link_url(
            settings, person, "unsubscribe", purpose=unsubscribe_purpose or spec.unsubscribe_purpose
        )
        base["unsubscribe_url"] = unsubscribe
        headers = {
            "List-Unsubscribe": f"<{unsubscribe}>",
            "List-Unsubscribe-Post": "List-Unsubscribe=One-Click",
        }
    rendered = emails.render(template, context or {}, base)
    domain = urlsplit(settings.base_url).hostname or "localhost"
    values = {
        "person_id": None if detach else person.id,
        "template": template,
        "dedupe_key": dedupe_key,
        "to_address": address,
        "subject": rendered.subject,
        "body_text": rendered.text,
        "body_html": rendered.html,
        "headers": json.dumps(headers),
        "message_id": make_msgid(idstring=template.replace("_", "-"), domain=domain),
        "status": "queued",
        "attempts": 0,
        "next_attempt_at": not_before or utcnow(),
        "created_at": utcnow(),
        "purge_on_send": purge_on_send,
        "membership_id": membership_id,
        "booking_id": booking_id,
    }
    statement = _insert(session.get_bind().dialect.name)
    new_id = session.execute(statement, values).scalar_one_or_none()
    if new_id is not None:
        wake_after_commit(session)
    return new_id


def wake_after_commit(session: Session) -> None:
    """Have this process's mailer look at the queue as soon as the transaction commits."""
    wake = session.info.get("wake_mailer")
    if wake is not None:
        after_commit(session, wake)


@cache
def _insert(dialect: str) -> Any:
    """Built once per dialect; a repeated ``dedupe_key`` inserts nothing and returns no id."""
    table = Outbox.__table__
    statement = upsert_insert(dialect, table).on_conflict_do_nothing(index_elements=["dedupe_key"])
    return statement.returning(table.c.id)


def sent_only_with(purpose_key: str) -> tuple[str, ...]:
    """The mail sent only while the person agrees to this purpose, or has not said no to
    it: withdrawing it makes any such message still waiting unwanted."""
    return tuple(
        name
        for name, spec in emails.EMAILS.items()
        if spec.unsubscribe_purpose == purpose_key and not spec.requested
    )


def cancel_unsent(
    session: Session,
    person_ids: list[int],
    templates: tuple[str, ...],
    *,
    reason: str,
    membership_ids: Collection[int] | None = None,
    booking_ids: Collection[int] | None = None,
) -> int:
    """Cancel these people's messages that have not gone yet and that a change made unwanted.

    The relay may be down for hours: a message queued before someone opted out must not
    reach them after it. ``membership_ids`` or ``booking_ids`` keep to the messages about
    those. A worker sending one of them finds it no longer held, as after an erasure.
    The dedupe key is kept with the row's id added, which frees it: someone who comes back
    (rejoins, books again) is sent the message afresh.
    """
    if not person_ids or not templates:
        return 0
    if membership_ids is None and booking_ids is None:
        result = session.connection().execute(
            _cancel(),
            {
                "person_ids": person_ids,
                "templates": list(templates),
                "reason": f"Cancelled: {reason}",
            },
        )
        return int(result.rowcount or 0)
    table = Outbox.__table__
    about = []
    if membership_ids is not None:
        about.append(among(table.c.membership_id, sorted(membership_ids)))
    if booking_ids is not None:
        about.append(among(table.c.booking_id, sorted(booking_ids)))
    result = session.execute(
        update(table)
        .where(
            among(table.c.person_id, person_ids),
            table.c.template.in_(templates),
            table.c.status.in_(OUTBOX_WAITING),
            *about,
        )
        .values(_cancelled(table, f"Cancelled: {reason}"))
    )
    return int(result.rowcount or 0)


#: Put before the reason a message was cancelled, when the relay had already taken it.
SENT_BEFORE_CANCELLED = "Sent before it could be cancelled. "


@cache
def _cancel() -> Any:
    """Built once: withdrawing is a hot path, and this runs on every withdrawal."""
    table = Outbox.__table__
    return (
        update(table)
        .where(
            table.c.person_id.in_(bindparam("person_ids", expanding=True)),
            table.c.template.in_(bindparam("templates", expanding=True)),
            table.c.status.in_(OUTBOX_WAITING),
        )
        .values(_cancelled(table, bindparam("reason")))
    )


def _cancelled(table: Any, reason: Any) -> dict[str, Any]:
    """The worker's claim is kept, so that if the relay was already taking the message,
    ``mark_sent`` can still record that it went."""
    return {
        "status": "cancelled",
        "last_error": reason,
        "dedupe_key": table.c.dedupe_key + ":cancelled:" + cast(table.c.id, String),
    }


def claim(session: Session, worker: str, limit: int, now: datetime | None = None) -> list[int]:
    """Atomically take up to ``limit`` due messages; two workers never get the same one."""
    now = now or utcnow()
    table = Outbox.__table__
    due = (
        select(table.c.id)
        .where(table.c.status == "queued", table.c.next_attempt_at <= now)
        .order_by(table.c.next_attempt_at, table.c.id)
        .limit(limit)
    )
    if is_postgres(session):
        due = due.with_for_update(skip_locked=True)
    result = session.execute(
        update(table)
        .where(table.c.id.in_(due.scalar_subquery()))
        .values(
            status="sending",
            claimed_by=worker,
            claimed_at=now,
            attempts=table.c.attempts + 1,
        )
        .returning(table.c.id)
    )
    return sorted(result.scalars().all())


def load(session: Session, ids: list[int], *, worker: str) -> list[Outbox]:
    """The claimed messages ``worker`` still holds: erasure may have cancelled some since."""
    return list(
        session.execute(
            select(Outbox)
            .where(Outbox.id.in_(ids), _held_by(Outbox.__table__, worker))
            .order_by(Outbox.id)
        ).scalars()
    )


def renew(
    session: Session, ids: list[int], *, worker: str, now: datetime | None = None
) -> set[int]:
    """Restart the lease on those of ``ids`` that ``worker`` still holds; returns them.

    A worker calls this before a send once half the lease has passed since it last did, so
    the messages of a slow batch never go stale while it is working through them, and it
    skips any it no longer holds: after a stall, ``requeue_stale`` may have handed them to
    another worker. A message whose own send outlasts half the lease can still go twice;
    delivery is at least once, not exactly once.
    """
    if not ids:
        return set()
    table = Outbox.__table__
    result = session.execute(
        update(table)
        .where(table.c.id.in_(ids), _held_by(table, worker))
        .values(claimed_at=now or utcnow())
        .returning(table.c.id)
    )
    return set(result.scalars())


def still_held(session: Session, outbox_id: int | None, *, worker: str) -> bool:
    """Whether ``worker`` may still send this message; false for None, the end of a batch.

    Asked before every send, so the statement is built once, as ``_mark_sent`` is.
    """
    if outbox_id is None:
        return False
    found = session.connection().execute(_still_held(), {"row_id": outbox_id, "worker": worker})
    return found.first() is not None


@cache
def _still_held() -> Any:
    table = Outbox.__table__
    return select(table.c.id).where(
        table.c.id == bindparam("row_id"), _held_by(table, bindparam("worker"))
    )


def _held_by(table: Any, worker: Any) -> Any:
    """Messages still being sent under this worker's claim."""
    return and_(table.c.status == "sending", table.c.claimed_by == worker)


def mark_sent(
    session: Session, outbox_id: int, *, worker: str, now: datetime | None = None
) -> None:
    """One statement, right after the relay says yes; a worker that lost the claim records
    nothing, so it cannot overwrite the outcome of the worker that took the message over."""
    session.connection().execute(
        _mark_sent(), {"row_id": outbox_id, "worker": worker, "now": now or utcnow()}
    )


@cache
def _mark_sent() -> Any:
    """A message cancelled while the relay was taking it went all the same: it is recorded
    as sent, with why it was cancelled, not as never sent."""
    table = Outbox.__table__
    purge = table.c.purge_on_send.is_(True)
    too_late = table.c.status == "cancelled"
    return (
        update(table)
        .where(
            table.c.id == bindparam("row_id"),
            table.c.claimed_by == bindparam("worker"),
            table.c.status.in_(("sending", "cancelled")),
        )
        .values(
            status="sent",
            sent_at=bindparam("now"),
            claimed_by=None,
            last_error=case((too_late, SENT_BEFORE_CANCELLED + table.c.last_error), else_=None),
            to_address=case((purge, None), else_=table.c.to_address),
            body_text=case((purge, None), else_=table.c.body_text),
            body_html=case((purge, None), else_=table.c.body_html),
            headers=case((purge, None), else_=table.c.headers),
            purged_at=case((purge, bindparam("now")), else_=table.c.purged_at),
        )
    )


def backoff(attempts: int) -> timedelta:
    """Exponential with full jitter, so a relay that comes back is not hit all at once."""
    ceiling = min(BACKOFF_CAP, BACKOFF_BASE * (2 ** max(0, attempts - 1)))
    return ceiling * (0.5 + random.random() / 2)  # noqa: S311 (jitter, not security)


def mark_failed_attempt(
    session: Session,
    outbox_id: int,
    error: str,
    *,
    permanent: bool,
    worker: str,
    now: datetime | None = None,
) -> str:
    """Retry later, or give up after a permanent refusal or too many attempts; "gone" when
    ``worker`` no longer holds the message, whose outcome is then its new holder's to record."""
    now = now or utcnow()
    row = session.get(Outbox, outbox_id)
    if row is None or row.status != "sending" or row.claimed_by != worker:
        return "gone"
    row.claimed_by = None
    row.last_error = without_addresses(error)[:ERROR_MAX]
    if permanent or row.attempts >= MAX_ATTEMPTS:
        row.status = "failed"
        return "failed"
    row.status = "queued"
    row.next_attempt_at = now + backoff(row.attempts)
    return "retry"


def release(
    session: Session, ids: list[int], error: str, *, worker: str, now: datetime | None = None
) -> None:
    """Give claimed messages back when the relay could not be reached: not their fault,
    so the attempt is not counted and they wait for the relay to come back. Only those
    ``worker`` still holds: the others, and their attempt counts, belong to another worker."""
    if not ids:
        return
    now = now or utcnow()
    table = Outbox.__table__
    session.execute(
        update(table)
        .where(table.c.id.in_(ids), _held_by(table, worker))
        .values(
            status="queued",
            claimed_by=None,
            attempts=table.c.attempts - 1,
            last_error=without_addresses(error)[:ERROR_MAX],
            next_attempt_at=now + CONNECTION_RETRY,
        )
    )


class Stale(NamedTuple):
    requeued: int
    failed: int


def requeue_stale(session: Session, now: datetime | None = None) -> Stale:
    """Messages whose claim ran out (the worker died or stalled): queue them again, or fail
    those that have used every attempt, since each claim counts one and a message that
    kills its worker would otherwise be retried for ever. A working worker renews its
    claims, so only a stalled or dead one's messages are found here."""
    now = now or utcnow()
    table = Outbox.__table__
    stale = and_(table.c.status == "sending", table.c.claimed_at < now - LEASE)
    failed = session.execute(
        update(table)
        .where(stale, table.c.attempts >= MAX_ATTEMPTS)
        .values(
            status="failed",
            claimed_by=None,
            last_error="No answer from the worker sending it, and no attempts left.",
        )
    )
    requeued = session.execute(
        update(table).where(stale).values(status="queued", claimed_by=None, next_attempt_at=now)
    )
    return Stale(requeued=int(requeued.rowcount or 0), failed=int(failed.rowcount or 0))


def _bodies_due(keep: timedelta, now: datetime) -> tuple[Any, Any]:
    """Messages sent, and those failed or cancelled, longer ago than ``keep``, not yet purged."""
    table = Outbox.__table__
    sent = select(table.c.id).where(
        table.c.purged_at.is_(None), table.c.status == "sent", table.c.sent_at < now - keep
    )
    unsent = select(table.c.id).where(
        table.c.purged_at.is_(None),
        table.c.status.in_(("failed", "cancelled")),
        table.c.created_at < now - keep,
    )
    return sent, unsent


def bodies_to_purge(session: Session, *, keep: timedelta, now: datetime) -> int:
    """How many messages ``purge_bodies`` would blank, for a dry run."""
    return sum(
        session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
        for query in _bodies_due(keep, now)
    )


def purge_bodies(
    session: Session, *, keep: timedelta, now: datetime | None = None, limit: int = 1000
) -> int:
    """Blank bodies, address and headers of messages sent (or failed) longer ago than ``keep``."""
    now = now or utcnow()
    table = Outbox.__table__
    sent, unsent = _bodies_due(keep, now)
    ids = list(session.execute(sent.limit(limit)).scalars())
    ids += list(session.execute(unsent.limit(limit)).scalars())
    if not ids:
        return 0
    purged = session.execute(
        update(table)
        .where(table.c.id.in_(ids), table.c.purged_at.is_(None))
        .values(to_address=None, body_text=None, body_html=None, headers=None, purged_at=now)
        .returning(table.c.id)
    )
    return len(purged.all())


@dataclass(frozen=True)
class QueueHealth:
    queued: int
    due: int
    sending: int
    failed: int
    sent_last_day: int
    oldest_due_at: datetime | None


def health(session: Session, now: datetime | None = None) -> QueueHealth:
    now = now or utcnow()
    table = Outbox.__table__
    counts = dict(
        session.execute(select(table.c.status, func.count()).group_by(table.c.status)).all()
    )
    due = session.execute(
        select(func.count(), func.min(table.c.next_attempt_at)).where(
            table.c.status == "queued", table.c.next_attempt_at <= now
        )
    ).one()
    sent_day = session.execute(
        select(func.count()).where(
            table.c.status == "sent", table.c.sent_at >= now - timedelta(days=1)
        )
    ).scalar_one()
    return QueueHealth(
        queued=counts.get("queued", 0),
        due=due[0],
        sending=counts.get("sending", 0),
        failed=counts.get("failed", 0),
        sent_last_day=sent_day,
        oldest_due_at=due[1],
    )
