"""Data protection rights: everything held about a person, in a form they can take away."""

from __future__ import annotations

import json
from datetime import UTC, date, datetime, timedelta
from typing import Any

from holidays import country_holidays
from sqlmodel import Session, select

from consent import loading
from consent.crypto import cipher_for
from consent.errors import Conflict, InvalidInput, NotFound
from consent.models import (
    Attendance,
    AuditEvent,
    Booking,
    ConsentEvent,
    MailchimpChange,
    Notice,
    Outbox,
    Panel,
    PanelMembership,
    PanelProfile,
    PanelSession,
    PendingSignup,
    Person,
    PersonChange,
    Purpose,
    RightsRequest,
    SessionNote,
    Workshop,
)
from consent.models.rights import REQUEST_KINDS, REQUEST_STATUSES
from consent.services import audit, ledger, people
from consent.timeutil import LONDON, add_months_dt, to_london, utcnow
from consent.validation import clean_text

EXPORT_FORMAT = "consent-export/1"


def _iso(value: datetime | None) -> str | None:
    return value.isoformat() if value else None


def _json_list(value: str | None) -> Any:
    if not value:
        return []
    try:
        return json.loads(value)
    except ValueError:
        return value


def export_person(session: Session, person: Person) -> dict[str, Any]:
    """Everything held about one person, machine-readable (the right of access and portability).

    Special category answers are included decrypted: this goes to the person themselves or
    to the DPO answering their request, and the caller audits it.
    """
    purposes = {p.id: p for p in session.exec(select(Purpose))}
    notices = {n.id: n for n in session.exec(select(Notice))}
    states = ledger.states_for(session, person)
    cipher = cipher_for(session)

    memberships = []
    for membership, panel in session.exec(
        select(PanelMembership, Panel)
        .join(Panel, Panel.id == PanelMembership.panel_id)
        .where(PanelMembership.person_id == person.id)
        .order_by(PanelMembership.id)
    ).all():
        profile = session.exec(
            select(PanelProfile).where(PanelProfile.membership_id == membership.id)
        ).first()
        attendance = session.exec(
            select(Attendance, PanelSession)
            .join(PanelSession, PanelSession.id == Attendance.session_id)
            .where(Attendance.membership_id == membership.id)
            .order_by(PanelSession.starts_at)
        ).all()
        memberships.append(
            {
                "panel": panel.name,
                "family_hub": panel.family_hub,
                "joined_at": _iso(membership.joined_at),
                "renewed_at": _iso(membership.renewed_at),
                "expires_at": _iso(membership.expires_at),
                "left_at": _iso(membership.left_at),
                "left_reason": membership.left_reason,
                "profile": None
                if profile is None
                else {
                    "postcode": profile.postcode,
                    "age_band": profile.age_band,
                    "children_count": profile.children_count,
                    "children_ages": profile.children_ages,
                    "services_used": _json_list(profile.services_used),
                    "special_category": cipher.decrypt_json(profile.special_category)
                    if profile.special_category
                    else None,
                },
                "sessions": [
                    {
                        "title": s.title,
                        "starts_at": _iso(s.starts_at),
                        "attended": a.attended,
                        "recording_consent": a.recording_consent,
                    }
                    for a, s in attendance
                ],
                "notes": [
                    {
                        "session": s.title,
                        "written_at": _iso(note.created_at),
                        "text": cipher.decrypt(note.text),
                    }
                    for note, s in session.exec(
                        select(SessionNote, PanelSession)
                        .join(PanelSession, PanelSession.id == SessionNote.session_id)
                        .where(SessionNote.membership_id == membership.id)
                        .order_by(SessionNote.id)
                    ).all()
                ],
            }
        )

    bookings = [
        {
            "workshop": workshop.title,
            "starts_at": _iso(workshop.starts_at),
            "name": booking.name,
            "email": booking.email,
            "setting": booking.setting,
            "district": booking.district,
            "job_role": booking.job_role,
            "attended": booking.attended,
            "evaluation": booking.evaluation,
            "booked_at": _iso(booking.booked_at),
            "cancelled_at": _iso(booking.cancelled_at),
        }
        for booking, workshop in session.exec(
            select(Booking, Workshop)
            .join(Workshop, Workshop.id == Booking.workshop_id)
            .where(Booking.person_id == person.id)
            .order_by(Booking.id)
        ).all()
    ]

    return {
        "format": EXPORT_FORMAT,
        "person": {
            "reference": person.public_id,
            "email": person.email,
            "name": person.name,
            "phone": person.phone,
            "postcode": person.postcode,
            "created_at": _iso(person.created_at),
            "updated_at": _iso(person.updated_at),
            "erased_at": _iso(person.erased_at),
            "new_email_waiting_to_be_confirmed": person.pending_email,
            "declined_panel_invitations_at": _iso(person.invitations_declined_at),
            "panel_invitation_link_works_until": _iso(person.invited_until),
            "stopped_everything_at": _iso(person.stopped_all_at),
            "address_not_to_be_contacted": bool(
                person.email and people.is_suppressed(session, person.email)
            ),
            "address_not_to_be_invited_to_panels": people.declined_invitations(session, person),
            "address_asked_not_to_be_contacted_at": _iso(
                people.opted_out_at(session, person.email) if person.email else None
            ),
        },
        "consents": [
            {
                "purpose": key,
                "title": purposes[state.purpose_id].title,
                "status": state.status,
                "given_at": _iso(state.given_at),
                "changed_at": _iso(state.changed_at),
                "expires_at": _iso(state.expires_at),
                "notice_version": notices[state.notice_id].version,
            }
            for key, state in sorted(states.items())
        ],
        "consent_events": [
            _event(e, purposes, notices) for e in ledger.events_for(session, person)
        ],
        "panel_memberships": memberships,
        "workshop_bookings": bookings,
        "emails": [
            {
                "subject": o.subject,
                "to": o.to_address,
                "template": o.template,
                "status": o.status,
                "queued_at": _iso(o.created_at),
                "sent_at": _iso(o.sent_at),
            }
            for o in session.exec(
                select(Outbox).where(Outbox.person_id == person.id).order_by(Outbox.id)
            )
        ],
        "detail_changes": [
            {
                "fields": c.fields.split(","),
                "channel": c.channel,
                "by": c.actor,
                "note": c.note,
                "changed_at": _iso(c.changed_at),
            }
            for c in session.exec(
                select(PersonChange)
                .where(PersonChange.person_id == person.id)
                .order_by(PersonChange.id)
            )
        ],
        "unconfirmed_signups": [
            {
                "kind": pending.kind,
                "panel": panel.name if panel else None,
                "asked_at": _iso(pending.created_at),
                "link_expires_at": _iso(pending.expires_at),
                "answers": cipher.decrypt_json(pending.payload) if pending.payload else None,
            }
            for pending, panel in session.exec(
                select(PendingSignup, Panel)
                .join(Panel, Panel.id == PendingSignup.panel_id, isouter=True)
                .where(PendingSignup.person_id == person.id, PendingSignup.confirmed_at.is_(None))
                .order_by(PendingSignup.id)
            ).all()
        ],
        "rights_requests": [
            {
                "kind": r.kind,
                "requester": r.requester,
                "channel": r.channel,
                "received_at": _iso(r.received_at),
                "due_at": _iso(r.due_at),
                "extended_at": _iso(r.extended_at),
                "extension_reason": r.extension_reason,
                "status": r.status,
                "outcome": r.outcome,
            }
            for r in session.exec(
                select(RightsRequest)
                .where(RightsRequest.person_id == person.id)
                .order_by(RightsRequest.id)
            )
        ],
        "newsletter_mailing_list_changes": [
            {
                "change": c.action,
                "status": c.status,
                "asked_at": _iso(c.created_at),
                "done_at": _iso(c.done_at),
            }
            for c in session.exec(
                select(MailchimpChange)
                .where(MailchimpChange.person_id == person.id)
                .order_by(MailchimpChange.id)
            )
        ],
        "uses_of_your_record": [
            {
                "what": USES.get(a.action, f"Your record was used ({a.action})"),
                "by": _who(a.actor),
                "action": a.action,
                "at": _iso(a.occurred_at),
            }
            for a in session.exec(
                select(AuditEvent)
                .where(AuditEvent.object_type == "person", AuditEvent.object_id == person.public_id)
                .order_by(AuditEvent.seq)
            )
        ],
    }


#: What each logged use of a person's record means, in words for the person.
USES = {
    "person.downloaded": "A copy of your record was downloaded from your preferences page",
    "person.exported": "A copy of your record was made, to answer a request about your data",
    "person.link_sent": "A member of staff emailed you a link to your preferences page",
    "special_category.viewed": (
        "A member of staff looked at the answers you gave about yourself to join a panel"
    ),
    "consent.recorded_on_behalf": (
        "A member of staff recorded what you told them you agree to, or want to stop"
    ),
    "person.erased": "A member of staff deleted your details",
    "api.consent_lookup": "Another council system checked what you have agreed to",
}


def _who(actor: str) -> str:
    """Who a logged use was by, as the person would put it."""
    if actor == "self":
        return "you"
    if actor.startswith("admin:"):
        return "our staff"
    if actor.startswith("api:"):
        return "another council system"
    return "our system"


def _event(
    event: ConsentEvent, purposes: dict[int | None, Purpose], notices: dict[int | None, Notice]
) -> dict[str, Any]:
    notice = notices[event.notice_id]
    return {
        "number": event.seq,
        "purpose": purposes[event.purpose_id].key,
        "action": event.action,
        "channel": event.channel,
        "actor": event.actor,
        "occurred_at": _iso(event.occurred_at),
        "notice_version": notice.version,
        "wording": event.wording,
        "note": event.note,
        "hash": event.hash,
    }


# ---- requests that arrive by post, phone or email -------------------------------------------


def overdue_cutoff(now: datetime | None = None) -> datetime:
    """A request is overdue once its due day has ended in London, not at the hour it was
    logged on that day: due before the start of today means overdue."""
    today = (now or utcnow()).astimezone(LONDON).date()
    return datetime.combine(today, datetime.min.time(), tzinfo=LONDON).astimezone(UTC)


#: Bank holidays in England, where Family Hubs are.
_BANK_HOLIDAYS = country_holidays("GB", subdiv="ENG")
#: Rights requests are logged under the data protection law in force since this day; an
#: earlier date is a mistyped year, and would be logged as long overdue.
LAW_IN_FORCE = date(2018, 5, 25)


def due_date(received: datetime, months: int = 1) -> datetime:
    """One calendar month from receipt, as the ICO counts it: received 31 January, due the
    last day of February; a day at a weekend or on a bank holiday moves to the next working
    day. An extended request has three months, counted the same way."""
    due = add_months_dt(received, months).astimezone(LONDON)
    day = due.date()
    while day.weekday() >= 5 or day in _BANK_HOLIDAYS:
        day += timedelta(days=1)
    return datetime.combine(day, due.time(), tzinfo=LONDON).astimezone(UTC)


def log_request(
    session: Session,
    *,
    kind: str,
    channel: str,
    received: str,
    requester: str,
    email: str | None,
    actor_id: int,
    actor: str,
) -> RightsRequest:
    """Log a rights request and its statutory deadline; link it to the person if we know them."""
    if kind not in REQUEST_KINDS:
        raise InvalidInput("kind", "Select the type of request.")
    if channel not in ("post", "phone", "email", "in person"):
        raise InvalidInput("channel", "Select how the request arrived.")
    try:
        day = date.fromisoformat((received or "").strip())
    except ValueError:
        raise InvalidInput("received", "Enter the date received, like 2027-03-05.") from None
    if day > to_london(utcnow()).date():
        raise InvalidInput("received", "The date received must be today or in the past.")
    if day < LAW_IN_FORCE:
        raise InvalidInput(
            "received",
            f"The date received must be on or after {LAW_IN_FORCE:%-d %B %Y}. Check the year.",
        )
    received_at = datetime(day.year, day.month, day.day, 12, tzinfo=LONDON).astimezone(UTC)
    who = clean_text(
        requester, field="requester", label="who made the request", max_length=300, required=True
    )
    person = None
    if email and email.strip():
        person = people.find_for_update(session, email)
        if person is None:
            raise InvalidInput(
                "email",
                "No one with that email address is on our records. "
                "Leave it blank to log the request without linking it.",
            )
    request = RightsRequest(
        person_id=person.id if person else None,
        kind=kind,
        channel=channel,
        requester=who,
        received_at=received_at,
        due_at=due_date(received_at),
        created_by=actor_id,
    )
    session.add(request)
    session.flush()
    audit.record(
        session,
        "rights_request.logged",
        actor=actor,
        actor_id=actor_id,
        object_type="rights_request",
        object_id=request.id,
        detail={"kind": kind},
    )
    return request


#: The outcome kept for a request whose person has been erased: free text about them would
#: outlive the erasure, which blanked every outcome there was when it ran.
ERASED_OUTCOME = "Closed after their details were deleted, so no other outcome is kept."


def update_request(
    session: Session,
    request: RightsRequest,
    *,
    status: str,
    outcome: str | None,
    actor_id: int,
    actor: str,
) -> RightsRequest:
    """Save a request's status and outcome. Closing it records when; correcting a closed
    request's outcome keeps that date, which shows the statutory deadline was met. Once
    its person is erased, a request keeps no outcome text of its own."""
    if status not in REQUEST_STATUSES:
        raise InvalidInput("status", "Select a status.")
    person = loading.person_by_id.get(session, request.person_id) if request.person_id else None
    cleaned = clean_text(
        outcome, field="outcome", label="the outcome", max_length=5000, multiline=True
    )
    if person is not None and person.is_erased:
        cleaned = ERASED_OUTCOME if status != "open" else None
    if status != "open" and not cleaned:
        raise InvalidInput("outcome", "Enter the outcome before closing the request.")
    if status == "open":
        request.closed_at = None
    elif request.status == "open" or request.closed_at is None:
        request.closed_at = utcnow()
    request.status = status
    request.outcome = cleaned
    if status != "open" and person is not None and not person.is_erased:
        person.review_at = utcnow()
    audit.record(
        session,
        "rights_request.updated",
        actor=actor,
        actor_id=actor_id,
        object_type="rights_request",
        object_id=request.id,
        detail={"status": status},
    )
    return request


#: The ICO allows two months more than the first, for a complex request or many at once.
EXTENDED_MONTHS = 3


def _why_not_extend(request: RightsRequest, now: datetime | None = None) -> str | None:
    """Why this request cannot be given more time, or None if it can: the person must be
    told of an extension, and why, within the first month."""
    if request.status != "open":
        return "Only an open request can be given more time."
    if request.extended_at is not None:
        return "This request has already been given two more months."
    if request.due_at < overdue_cutoff(now):
        return (
            "This request is past its first deadline, so it cannot be given more time: the "
            "person must be told of an extension within the first month."
        )
    return None


def can_extend(request: RightsRequest, now: datetime | None = None) -> bool:
    return _why_not_extend(request, now) is None


def extend_request(
    session: Session, request: RightsRequest, *, reason: str, actor_id: int, actor: str
) -> RightsRequest:
    """Give a complex request two more months, recording why, as the person was told."""
    refused = _why_not_extend(request)
    if refused is not None:
        raise Conflict(refused)
    cleaned = clean_text(
        reason,
        field="reason",
        label="why the request needs more time",
        max_length=2000,
        multiline=True,
        required=True,
    )
    request.extended_at = utcnow()
    request.extension_reason = cleaned
    request.due_at = due_date(request.received_at, EXTENDED_MONTHS)
    audit.record(
        session,
        "rights_request.extended",
        actor=actor,
        actor_id=actor_id,
        object_type="rights_request",
        object_id=request.id,
        detail={"due_at": _iso(request.due_at)},
    )
    return request


def get_request(session: Session, request_id: int) -> RightsRequest:
    if not isinstance(request_id, int) or not 0 < request_id <= 2**31 - 1:
        raise NotFound("We could not find that request.")
    request = session.get(RightsRequest, request_id)
    if request is None:
        raise NotFound("We could not find that request.")
    return request


def list_requests(session: Session, *, open_only: bool = False) -> list[RightsRequest]:
    query = select(RightsRequest).order_by(RightsRequest.due_at)
    if open_only:
        query = query.where(RightsRequest.status == "open")
    return list(session.exec(query))
