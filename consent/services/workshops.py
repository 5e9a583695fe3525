"""Free online workshops: scheduling them, booking places, and attendee details."""

from __future__ import annotations

import json
from datetime import datetime, timedelta

from sqlalchemy import func, or_
from sqlmodel import Session, select

from consent import loading
from consent.errors import Conflict, InvalidInput, NotFound
from consent.models import Booking, Outbox, Person, Workshop
from consent.models.outbox import OUTBOX_WAITING
from consent.options import options
from consent.services import people, reports
from consent.timeutil import london_datetime, utcnow
from consent.validation import TEXT_MAX, check_meeting_date, clean_text, normalise_email

#: The once-only key of each booker's cancellation email is this and the booking id.
CANCELLED_ONCE = "workshop-cancelled"

#: A workshop is one sitting; bookers' details are kept for a set time after it ends, so a
#: mistyped end date must not stretch that by months or years.
LONGEST = timedelta(hours=24)


def _check_times(starts_at: datetime, ends_at: datetime, *, upcoming: bool) -> None:
    """Refuse times a coordinator cannot have meant; ``upcoming`` if it must start later."""
    if starts_at.tzinfo is None or ends_at.tzinfo is None:
        raise InvalidInput("starts_at", "Enter the date and time of the workshop.")
    if upcoming and starts_at <= utcnow():
        raise InvalidInput("starts_at", "The start time must be in the future.")
    check_meeting_date(starts_at)
    if ends_at <= starts_at:
        raise InvalidInput("ends_at", "The workshop must end after it starts.")
    if ends_at - starts_at > LONGEST:
        raise InvalidInput(
            "ends_at",
            "The workshop must end within 24 hours of when it starts. "
            "For a course over several days, add each day as its own workshop.",
        )


def create_workshop(
    session: Session,
    *,
    title: str,
    description: str,
    starts_at: datetime,
    ends_at: datetime,
    capacity: int,
    location: str,
) -> Workshop:
    _check_times(starts_at, ends_at, upcoming=True)
    if not isinstance(capacity, int) or not 1 <= capacity <= 10000:
        raise InvalidInput("capacity", "Number of places must be between 1 and 10,000.")
    workshop = Workshop(
        title=clean_text(title, field="title", label="a title", required=True),
        description=clean_text(
            description,
            field="description",
            label="a description",
            max_length=TEXT_MAX,
            required=True,
            multiline=True,
        ),
        starts_at=starts_at,
        ends_at=ends_at,
        capacity=capacity,
        location=clean_text(
            location, field="location", label="where it happens", max_length=300, required=True
        ),
    )
    session.add(workshop)
    session.flush()
    return workshop


MAX_ID = 2**31 - 1


def get_workshop(session: Session, workshop_id: int) -> Workshop:
    if not isinstance(workshop_id, int) or not 0 < workshop_id <= MAX_ID:
        raise NotFound("We could not find that workshop.")
    workshop = session.get(Workshop, workshop_id)
    if workshop is None:
        raise NotFound("We could not find that workshop.")
    return workshop


def places_taken(session: Session, workshop: Workshop) -> int:
    return session.exec(
        select(func.count())
        .select_from(Booking)
        .where(Booking.workshop_id == workshop.id, Booking.cancelled_at.is_(None))
    ).one()


def book(
    session: Session,
    workshop: Workshop,
    *,
    name: str,
    email: str,
    setting: str | None,
    district: str,
    job_role: str,
) -> tuple[Booking, bool]:
    """Book a place; booking again, with the same address or as the same person under an
    address they have since changed to, returns the existing booking. Booking again after
    cancelling is a new request, so its reminders come even if the old booking's had stopped."""
    cleaned_name = clean_text(name, field="name", label="your full name", required=True)
    address = normalise_email(email)
    cleaned_setting = clean_text(setting, field="setting", label="your setting or workplace")
    if district not in options().districts:
        raise InvalidInput("district", "Select the district you live or work in.")
    if job_role not in options().job_roles:
        raise InvalidInput("job_role", "Select your job role.")
    # Read again under the lock: a cancellation or a cut in places made meanwhile counts.
    session.flush()
    session.refresh(workshop, with_for_update=True)
    if workshop.status != "scheduled":
        raise Conflict("This workshop has been cancelled.")
    if workshop.starts_at <= utcnow():
        raise Conflict("This workshop has already started, so it cannot be booked.")
    known = people.find_for_update(session, address)
    theirs = Booking.email == address
    if known is not None:
        theirs = or_(theirs, Booking.person_id == known.id)
    found = session.exec(select(Booking).where(Booking.workshop_id == workshop.id, theirs)).all()
    live = next((booking for booking in found if booking.cancelled_at is None), None)
    if live is not None:
        return live, False
    if places_taken(session, workshop) >= workshop.capacity:
        raise Conflict("This workshop is full.")
    person: Person = known or people.find_or_create(
        session, address, name=cleaned_name, fill_name=False
    )
    existing = next((b for b in found if b.email == address), found[0] if found else None)
    if existing is None:
        existing = Booking(workshop_id=workshop.id, email=address)
        session.add(existing)
    existing.email = address
    existing.person_id = person.id
    existing.name = cleaned_name
    existing.setting = cleaned_setting
    existing.district = district
    existing.job_role = job_role
    existing.booked_at = utcnow()
    existing.cancelled_at = None
    existing.mail_stopped_at = None
    session.flush()
    scope = f"workshop:{workshop.id}"
    reports.count(session, "workshop.booked", scope=scope)
    reports.count(session, "workshop.booked", scope=scope, dimension="district", value=district)
    reports.count(session, "workshop.booked", scope=scope, dimension="job_role", value=job_role)
    return existing, True


def book_and_confirm(
    session: Session,
    workshop: Workshop,
    *,
    name: str,
    email: str,
    setting: str | None,
    district: str,
    job_role: str,
    opt_ins: dict[str, int],
) -> tuple[Booking, bool]:
    """Book from the public form: confirm by email, and ask to confirm any opt-ins ticked.

    Booking again with the same address books nothing new; the confirmation is sent again,
    so the page never reveals whether an address had already booked. The confirmation names
    its booking, so cancelling the place or the workshop stops it if it has not gone yet.
    """
    from consent.services import outbox, signups

    booking, created = book(
        session,
        workshop,
        name=name,
        email=email,
        setting=setting,
        district=district,
        job_role=job_role,
    )
    person = loading.person_by_id.get(session, booking.person_id)
    assert person is not None
    outbox.queue(
        session,
        "workshop_booked",
        person=person,
        booking_id=booking.id,
        context={
            "name": person.name,
            "workshop_title": workshop.title,
            "workshop_when": london_datetime(workshop.starts_at),
            "workshop_location": workshop.location,
            "reminder": reminded(booking.booked_at, workshop.starts_at),
        },
    )
    if opt_ins:
        signups.request_subscription(session, email=email, name=name, shown=opt_ins)
    return booking, created


#: A booking made this close to the start gets no reminder: its booking email is fresh.
LATE_BOOKING = timedelta(hours=12)


def reminded(booked_at: datetime, starts_at: datetime) -> bool:
    """Whether a booking made then is reminded the day before: the booking page and email
    promise a reminder only to those who will get one."""
    return booked_at <= starts_at - LATE_BOOKING


RATINGS = ("Very useful", "Useful", "Not very useful", "Not useful at all")


def open_for_feedback(
    session: Session, person: Person, booking_id: int | None
) -> tuple[Booking, Workshop]:
    """The booking and workshop a feedback link is for, if feedback can be given on it now.
    The page asks this before showing the form, so nobody fills it in only to be refused."""
    booking = session.get(Booking, booking_id) if isinstance(booking_id, int) else None
    if booking is None or booking.person_id != person.id or booking.purged_at is not None:
        raise NotFound("We could not find that booking. Feedback may have closed.")
    workshop = session.get(Workshop, booking.workshop_id)
    if workshop is None or workshop.evaluation_closed_at is not None:
        raise Conflict("Feedback for this workshop has closed. Thank you all the same.")
    if booking.cancelled_at is not None or workshop.status == "cancelled":
        raise Conflict("This booking was cancelled, so there is no workshop to give feedback on.")
    if workshop.starts_at > utcnow():
        raise Conflict("You can tell us how the workshop went once it has taken place.")
    return booking, workshop


def record_evaluation(
    session: Session, person: Person, booking_id: int | None, *, rating: str, comments: str | None
) -> Booking:
    """Keep a booker's feedback with the booking; the rating is also counted anonymously."""
    booking, workshop = open_for_feedback(session, person, booking_id)
    if rating not in RATINGS:
        raise InvalidInput("rating", "Select how useful the workshop was.")
    cleaned = clean_text(
        comments, field="comments", label="your comments", max_length=TEXT_MAX, multiline=True
    )
    earlier = json.loads(booking.evaluation) if booking.evaluation else None
    given_at = earlier.get("given_at") if earlier else utcnow().isoformat()
    booking.evaluation = json.dumps(
        {"rating": rating, "comments": cleaned, "given_at": given_at}, ensure_ascii=False
    )
    if earlier is None:
        _count_rating(session, workshop, rating)
    elif earlier.get("rating") != rating and given_at:
        counted = datetime.fromisoformat(given_at)
        _count_rating(session, workshop, earlier["rating"], at=counted, by=-1)
        _count_rating(session, workshop, rating, at=counted)
    session.flush()
    return booking


def _count_rating(
    session: Session, workshop: Workshop, rating: str, at: datetime | None = None, by: int = 1
) -> None:
    """A changed rating moves within the month the first was counted in, so that month's
    figures stay whole; feedback given before the time was kept stays where it was."""
    reports.count(
        session,
        "workshop.evaluated",
        scope=f"workshop:{workshop.id}",
        dimension="rating",
        value=rating,
        at=at,
        by=by,
    )


def close_evaluation(session: Session, workshop: Workshop) -> Workshop:
    """No more feedback; attendee details go once the keep time has passed. A request for
    feedback still waiting to be sent is cancelled: its link would only say it has closed."""
    if workshop.evaluation_closed_at is None:
        workshop.evaluation_closed_at = utcnow()
        _cancel_workshop_mail(
            session,
            workshop,
            _FEEDBACK_MAIL,
            reason="feedback for the workshop closed before it was sent.",
        )
        session.flush()
    return workshop


def all_workshops(session: Session) -> list[Workshop]:
    return list(session.exec(select(Workshop).order_by(Workshop.starts_at.desc())))


def update_workshop(
    session: Session,
    workshop: Workshop,
    *,
    title: str,
    description: str,
    starts_at: datetime,
    ends_at: datetime,
    capacity: int,
    location: str,
) -> tuple[Workshop, int]:
    """Save a coordinator's changes. A workshop still to come cannot be moved into the past;
    if its time or place changed, everyone booked is emailed the new details; returns how
    many were told. A workshop that has started can still be corrected, until its bookers'
    details are deleted: moved to a new date then, its new bookings would never be. It is
    never moved to a time still to come: it would open for booking again, keep its bookers'
    details until then, and could be cancelled with its attendance already counted."""
    session.refresh(workshop, with_for_update=True)
    if workshop.status == "cancelled":
        raise Conflict("A cancelled workshop cannot be changed.")
    if workshop.details_purged_at is not None:
        raise Conflict(
            "This workshop has finished and the details of those who booked have been "
            "deleted, so it cannot be changed. Add a new workshop instead."
        )
    upcoming = workshop.starts_at > utcnow()
    _check_times(starts_at, ends_at, upcoming=upcoming)
    if not upcoming and starts_at > utcnow():
        raise InvalidInput(
            "starts_at",
            "This workshop has already started, so it cannot be moved to a time still to "
            "come. To run it again, add a new workshop.",
        )
    if not 1 <= capacity <= 10000:
        raise InvalidInput("capacity", "Number of places must be between 1 and 10,000.")
    if capacity < places_taken(session, workshop):
        raise InvalidInput("capacity", "There are already more bookings than that.")
    before = (workshop.starts_at, workshop.ends_at, workshop.location)
    workshop.title = (
        clean_text(title, field="title", label="a title", required=True) or workshop.title
    )
    workshop.description = (
        clean_text(
            description,
            field="description",
            label="a description",
            max_length=TEXT_MAX,
            required=True,
            multiline=True,
        )
        or workshop.description
    )
    workshop.location = (
        clean_text(
            location, field="location", label="where it happens", max_length=300, required=True
        )
        or workshop.location
    )
    _move_attendance(session, workshop, starts_at)
    workshop.starts_at, workshop.ends_at, workshop.capacity = starts_at, ends_at, capacity
    session.flush()
    told = 0
    if upcoming and (workshop.starts_at, workshop.ends_at, workshop.location) != before:
        told = _tell_bookers(
            session, workshop, "workshop_changed", workshop_location=workshop.location
        )
    return workshop, told


def _move_attendance(session: Session, workshop: Workshop, starts_at: datetime) -> None:
    """Attendance is counted in the workshop's month: a corrected date takes the count to
    the new month, so a later correction there never leaves the old month counting it."""
    came = session.execute(
        select(func.count())
        .select_from(Booking)
        .where(Booking.workshop_id == workshop.id, Booking.attended.is_(True))
    ).scalar_one()
    moved = reports.period_of(starts_at) != reports.period_of(workshop.starts_at)
    if came and moved:
        scope = f"workshop:{workshop.id}"
        reports.count(session, "workshop.attended", scope=scope, at=workshop.starts_at, by=-came)
        reports.count(session, "workshop.attended", scope=scope, at=starts_at, by=came)


def bookings_of(session: Session, workshop: Workshop) -> list[Booking]:
    return list(
        session.exec(
            select(Booking).where(Booking.workshop_id == workshop.id).order_by(Booking.booked_at)
        )
    )


def cancel_workshop(session: Session, workshop: Workshop) -> int:
    """Cancel, and tell everyone booked by email. Returns how many were told.

    Once it has started it has happened: telling people it is cancelled would be wrong,
    and it would stop the requests for their feedback.
    """
    if workshop.status == "cancelled":
        raise Conflict("This workshop is already cancelled.")
    if workshop.starts_at <= utcnow():
        raise Conflict("This workshop has already started, so it cannot be cancelled.")
    workshop.status = "cancelled"
    told = _tell_bookers(session, workshop, "workshop_cancelled", once=CANCELLED_ONCE)
    _cancel_workshop_mail(
        session,
        workshop,
        ENDED_BOOKING_MAIL,
        reason="the workshop was cancelled before it was sent.",
    )
    session.flush()
    return told


#: Asking what a booker thought of the workshop.
_FEEDBACK_MAIL = ("workshop_evaluation",)
#: Mail about one booking that the booker can ask to stop.
_BOOKING_MAIL = ("workshop_reminder", *_FEEDBACK_MAIL)
#: Mail about one booking that has no point once the place or the workshop is cancelled:
#: a confirmation still waiting would arrive after, and contradict, news of the cancellation.
ENDED_BOOKING_MAIL = (*_BOOKING_MAIL, "workshop_changed", "workshop_booked")


def cancel_booking_mail(
    session: Session,
    person_ids: list[int],
    booking_ids: list[int] | None,
    *,
    reason: str,
    templates: tuple[str, ...] = _BOOKING_MAIL,
) -> int:
    """Reminders and feedback requests still waiting for these bookings (or for all of these
    people's): they must not arrive after the booking, the workshop or the wish for them
    has ended. News of a changed time goes too once the place itself has gone."""
    from consent.services import outbox

    return outbox.cancel_unsent(
        session, person_ids, templates, reason=reason, booking_ids=booking_ids
    )


def _cancel_workshop_mail(
    session: Session, workshop: Workshop, templates: tuple[str, ...], *, reason: str
) -> None:
    """``cancel_booking_mail`` for every booking on the workshop."""
    booked = session.exec(
        select(Booking.id, Booking.person_id).where(Booking.workshop_id == workshop.id)
    ).all()
    cancel_booking_mail(
        session,
        sorted({person_id for _, person_id in booked if person_id is not None}),
        [booking_id for booking_id, _ in booked],
        reason=reason,
        templates=templates,
    )


def cancellations_waiting(session: Session) -> set[int]:
    """Cancelled workshops with a cancellation email still to go. Their bookers' details
    are kept until it has: erasing a booker held for nothing else cancels their queued mail."""
    return set(
        session.exec(
            select(Booking.workshop_id)
            .join(Outbox, Outbox.booking_id == Booking.id)
            .where(Outbox.template == "workshop_cancelled", Outbox.status.in_(OUTBOX_WAITING))
            .distinct()
        ).all()
    )


def _tell_bookers(
    session: Session, workshop: Workshop, template: str, *, once: str | None = None, **context: str
) -> int:
    """Email everyone still booked on a workshop; ``once`` makes it once-only per booking.

    The bookings are held (shared) until the news is committed, as the reminder jobs hold
    theirs: a place being cancelled at that moment is waited for and left out, and one
    cancelled just after waits, then finds the news and cancels it."""
    from consent.services import outbox

    booked = session.exec(
        select(Booking, Person)
        .join(Person, Person.id == Booking.person_id)
        .where(
            Booking.workshop_id == workshop.id,
            Booking.cancelled_at.is_(None),
            Person.erased_at.is_(None),
        )
        .order_by(Booking.booked_at)
        .with_for_update(read=True, of=Booking)
    ).all()
    told = 0
    for booking, person in booked:
        queued = outbox.queue(
            session,
            template,
            person=person,
            dedupe_key=f"{once}:{booking.id}" if once else None,
            booking_id=booking.id,
            context={
                "name": person.name,
                "workshop_title": workshop.title,
                "workshop_when": london_datetime(workshop.starts_at),
                **context,
            },
        )
        told += queued is not None
    return told


def set_attended(session: Session, workshop: Workshop, booking_id: int, attended: bool) -> Booking:
    """Record whether a booker came. Counted in the workshop's own month, so a correction
    (came, then did not come, or the other way) moves the same count back; a cancelled
    place or workshop is never counted as attended. Someone who did not come is not asked
    what they thought: a feedback request still waiting for them is cancelled."""
    booking = session.get(Booking, booking_id) if isinstance(booking_id, int) else None
    if booking is None or booking.workshop_id != workshop.id or booking.purged_at is not None:
        raise NotFound("We could not find that booking.")
    if workshop.status == "cancelled":
        raise Conflict("This workshop was cancelled, so no one attended it.")
    if booking.cancelled_at is not None:
        raise Conflict("That booking was cancelled, so attendance cannot be recorded for it.")
    if workshop.starts_at > utcnow():
        raise Conflict("You can record who came once the workshop has started.")
    if bool(booking.attended) != attended:
        reports.count(
            session,
            "workshop.attended",
            scope=f"workshop:{workshop.id}",
            at=workshop.starts_at,
            by=1 if attended else -1,
        )
    booking.attended = attended
    session.flush()
    if not attended:
        cancel_booking_mail(
            session,
            [booking.person_id],
            [booking_id],
            reason="they were marked as not having come before it was sent.",
            templates=_FEEDBACK_MAIL,
        )
    return booking
