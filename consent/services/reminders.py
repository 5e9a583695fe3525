"""Emails sent on a timetable: renew before the two-year limit, workshop reminders, and
evaluation requests. Each is queued with a dedupe key, so it is sent once and never
again, whatever the retries and restarts.

Each job holds the membership or booking rows it reads until it commits, and passes over
rows a change holds: a parent leaving or cancelling at that moment then either finds the
reminder waiting and cancels it, or is passed over. Without that, on PostgreSQL, the job
could queue a reminder from what it read before the change, after the change had looked
for waiting mail to cancel. The next run reaches anyone passed over who is still due.
"""

from __future__ import annotations

from datetime import datetime, timedelta

from sqlalchemy import and_, select
from sqlmodel import Session

from consent import links
from consent.db import settings_of
from consent.models import (
    Booking,
    ConsentState,
    Outbox,
    Panel,
    PanelMembership,
    Person,
    Purpose,
    Workshop,
)
from consent.services import outbox, workshops
from consent.timeutil import london_date, london_datetime, to_london, utcnow

RENEWAL_NOTICES = (30, 7)
EVALUATION_WINDOW = timedelta(days=7)


def renewal_reminders(session: Session, now: datetime | None = None) -> int:
    """30 and 7 days before a membership's limit, ask the member whether to stay.

    Each notice goes to every membership whose limit falls inside its window (the 30-day
    notice up to 7 days before) and has not had it for that limit yet. So a membership
    that starts close to its limit (an import of an old agreement), or a scheduler that
    was down, still gets a late notice rather than none. A concluded panel's members are
    not asked to stay on it: the sweep is about to end their memberships.
    """
    now = now or utcnow()
    settings = settings_of(session)
    queued = 0
    member = PanelMembership.__table__
    for days, after in zip(RENEWAL_NOTICES, (*RENEWAL_NOTICES[1:], 0), strict=True):
        window = and_(
            member.c.left_at.is_(None),
            member.c.expires_at > now + timedelta(days=after),
            member.c.expires_at <= now + timedelta(days=days),
        )
        rows = session.execute(
            select(PanelMembership, Panel, Person, ConsentState.given_at)
            .join(Panel, Panel.id == PanelMembership.panel_id)
            .join(Person, Person.id == PanelMembership.person_id)
            .join(Purpose, Purpose.key == "panel_contact")
            .join(
                ConsentState,
                and_(
                    ConsentState.person_id == Person.id,
                    ConsentState.purpose_id == Purpose.id,
                ),
            )
            .where(
                window,
                Panel.status != "concluded",
                Person.erased_at.is_(None),
                ConsentState.status == "given",
            )
            .with_for_update(read=True, skip_locked=True, of=PanelMembership)
        ).all()
        keys = {row[0].id: f"renewal:{row[0].id}:{row[0].expires_at:%Y%m%d}:{days}" for row in rows}
        sent = set(
            session.execute(
                select(Outbox.dedupe_key).where(Outbox.dedupe_key.in_(list(keys.values())))
            ).scalars()
        )
        for membership, panel, person, given_at in rows:
            key = keys[membership.id]
            if key in sent:
                continue
            renew_url = links.link_url(settings, person, "renew", purpose="panel_contact")
            queued += (
                outbox.queue(
                    session,
                    "reconsent_reminder",
                    person=person,
                    dedupe_key=key,
                    membership_id=membership.id,
                    context={
                        "name": person.name,
                        "panel_name": panel.name,
                        "given_on": london_date(given_at or membership.joined_at),
                        "expires_on": london_date(membership.expires_at),
                        "renew_url": renew_url,
                    },
                )
                is not None
            )
    return queued


def workshop_reminders(session: Session, now: datetime | None = None) -> int:
    """The day before a workshop, remind everyone booked on it.

    The reminder is once per booking and day, so a workshop moved to another day after its
    reminder went is reminded again before the new day; a move within the day is not.
    Someone who booked in the last 12 hours before it starts has just had the booking
    email, so gets no reminder.
    """
    now = now or utcnow()
    rows = session.execute(
        select(Booking, Workshop, Person)
        .join(Workshop, Workshop.id == Booking.workshop_id)
        .join(Person, Person.id == Booking.person_id)
        .where(
            Workshop.status == "scheduled",
            Workshop.starts_at > now,
            Workshop.starts_at <= now + timedelta(days=1),
            Booking.cancelled_at.is_(None),
            Booking.mail_stopped_at.is_(None),
            Booking.purged_at.is_(None),
            Person.erased_at.is_(None),
        )
        .with_for_update(read=True, skip_locked=True, of=(Booking, Workshop))
    ).all()
    queued = 0
    today = to_london(now).date()
    for booking, workshop, person in rows:
        if not workshops.reminded(booking.booked_at, workshop.starts_at):
            continue
        queued += (
            outbox.queue(
                session,
                "workshop_reminder",
                person=person,
                dedupe_key=f"workshop-reminder:{booking.id}:{to_london(workshop.starts_at):%Y-%m-%d}",
                booking_id=booking.id,
                context={
                    "name": person.name,
                    "workshop_title": workshop.title,
                    "workshop_when": london_datetime(workshop.starts_at),
                    "workshop_location": workshop.location,
                    "workshop_day": (
                        "today" if to_london(workshop.starts_at).date() == today else "tomorrow"
                    ),
                },
            )
            is not None
        )
    return queued


def evaluation_requests(
    session: Session,
    now: datetime | None = None,
    *,
    workshop_id: int | None = None,
    any_age: bool = False,
) -> int:
    """After a workshop, ask those who booked (and did not miss it) what they thought.

    The scheduler asks for workshops that ended in the last week; a coordinator can ask
    for one workshop at any time after it ends.
    """
    now = now or utcnow()
    settings = settings_of(session)
    window = [Workshop.ends_at <= now]
    if not any_age:
        window.append(Workshop.ends_at > now - EVALUATION_WINDOW)
    if workshop_id is not None:
        window.append(Workshop.id == workshop_id)
    rows = session.execute(
        select(Booking, Workshop, Person)
        .join(Workshop, Workshop.id == Booking.workshop_id)
        .join(Person, Person.id == Booking.person_id)
        .where(
            Workshop.status == "scheduled",
            *window,
            Workshop.evaluation_closed_at.is_(None),
            Booking.cancelled_at.is_(None),
            Booking.mail_stopped_at.is_(None),
            Booking.purged_at.is_(None),
            Booking.attended.is_not(False),
            Person.erased_at.is_(None),
        )
        .with_for_update(read=True, skip_locked=workshop_id is None, of=(Booking, Workshop))
    ).all()
    queued = 0
    for booking, workshop, person in rows:
        url = links.link_url(settings, person, "feedback", ref=booking.id)
        queued += (
            outbox.queue(
                session,
                "workshop_evaluation",
                person=person,
                dedupe_key=f"workshop-evaluation:{booking.id}",
                booking_id=booking.id,
                context={
                    "name": person.name,
                    "workshop_title": workshop.title,
                    "evaluation_url": url,
                },
            )
            is not None
        )
    return queued
