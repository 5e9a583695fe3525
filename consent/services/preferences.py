"""What a person can do for themselves from a signed link: see and change every consent,
withdraw from everything, correct details, cancel bookings, unsubscribe, delete it all.

The link proves they hold the mailbox; there is no account and no password. Withdrawing
is one step and asks for no reason.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from datetime import datetime
from typing import Any

from sqlalchemy import bindparam, func, select, update
from sqlmodel import Session

from consent import links
from consent.db import settings_of
from consent.errors import (
    Conflict,
    Erased,
    InvalidInput,
    NotConsented,
    NotFound,
    UnknownWording,
)
from consent.models import (
    Booking,
    ConsentState,
    Notice,
    Panel,
    PanelMembership,
    Person,
    Purpose,
    Workshop,
)
from consent.prepared import Prepared
from consent.services import (
    ledger,
    notice_catalogue,
    notices,
    outbox,
    panels,
    people,
    reports,
    retention,
    workshops,
)
from consent.timeutil import utcnow
from consent.validation import normalise_email


@dataclass(frozen=True, slots=True)
class ConsentNow:
    """What the page shows of one consent state."""

    purpose_id: int
    notice_id: int
    status: str
    channel: str
    given_at: datetime | None
    changed_at: datetime
    expires_at: datetime | None


@dataclass(frozen=True, slots=True)
class PanelPlace:
    """A panel the person is on, and until when."""

    panel_id: int
    panel_name: str
    family_hub: str
    panel_status: str
    joined_at: datetime
    expires_at: datetime


@dataclass(frozen=True, slots=True)
class UpcomingBooking:
    """A workshop place the person has not cancelled, for a workshop that is still going
    ahead and not yet over."""

    booking_id: int
    title: str
    starts_at: datetime


@dataclass(frozen=True)
class PurposeView:
    purpose: Purpose
    notice: Notice
    state: ConsentNow | None
    agreed_notice: Notice | None

    @property
    def given(self) -> bool:
        return self.state is not None and self.state.status == "given"

    #: Expired because the panel closed, not because two years passed.
    panel_closed: bool = False


@dataclass(frozen=True)
class Overview:
    person: Person
    purposes: list[PurposeView]
    memberships: list[PanelPlace]
    bookings: list[UpcomingBooking]

    def purpose(self, key: str) -> PurposeView:
        return next(view for view in self.purposes if view.purpose.key == key)


def _filling(record: type, statement: Any) -> Any:
    """``statement``, once it is checked to select ``record``'s fields in order, as the page
    fills each record from a row by position."""
    selected = [column.key for column in statement.selected_columns]
    if selected != [field.name for field in fields(record)]:
        raise TypeError(f"The query selects {selected}, not the fields of {record.__name__}.")
    return statement


def _states(_dialect: str) -> Any:
    state = ConsentState.__table__.c
    return _filling(
        ConsentNow,
        select(*(state[field.name] for field in fields(ConsentNow))).where(
            state.person_id == bindparam("person_id")
        ),
    )


def _memberships(_dialect: str) -> Any:
    membership = PanelMembership.__table__.c
    panel = Panel.__table__.c
    return _filling(
        PanelPlace,
        select(
            panel.id.label("panel_id"),
            panel.name.label("panel_name"),
            panel.family_hub,
            panel.status.label("panel_status"),
            membership.joined_at,
            membership.expires_at,
        )
        .join_from(PanelMembership.__table__, Panel.__table__, panel.id == membership.panel_id)
        .where(membership.person_id == bindparam("person_id"), membership.left_at.is_(None))
        .order_by(membership.joined_at, membership.id),
    )


def _bookings(_dialect: str) -> Any:
    booking = Booking.__table__.c
    workshop = Workshop.__table__.c
    return _filling(
        UpcomingBooking,
        select(booking.id.label("booking_id"), workshop.title, workshop.starts_at)
        .join_from(Booking.__table__, Workshop.__table__, workshop.id == booking.workshop_id)
        .where(
            booking.person_id == bindparam("person_id"),
            booking.cancelled_at.is_(None),
            booking.purged_at.is_(None),
            workshop.status == "scheduled",
            workshop.ends_at > bindparam("now"),
        )
        .order_by(workshop.starts_at, booking.id),
    )


#: The page's queries, run on the driver's cursor: SQLAlchemy's set-up for each execution
#: cost more than the three queries themselves. Each selects the fields of its record, in
#: order, and nothing on the page is written back.
_STATES = Prepared(_states)
_MEMBERSHIPS = Prepared(_memberships)
_BOOKINGS = Prepared(_bookings)


def overview(session: Session, person: Person, *, fresh: bool = False) -> Overview:
    """Everything the preferences page shows: three queries, the purposes kept in memory
    (read again if ``fresh``: staff read the wording out, and the newest is recorded)."""
    params = {"person_id": person.id, "now": utcnow()}
    states = {
        state.purpose_id: state
        for state in (ConsentNow(*row) for row in _STATES.rows(session, params))
    }
    catalogue = notice_catalogue.current(
        session, needs={state.notice_id for state in states.values()}, fresh=fresh
    )
    closed = _panel_closed_at(session, person, catalogue.purposes, states)
    views = []
    for purpose in catalogue.purposes:
        state = states.get(purpose.id)
        agreed = catalogue.notices.get(state.notice_id) if state else None
        ended = state is not None and state.status == "expired" and state.changed_at in closed
        views.append(PurposeView(purpose, catalogue.newest[purpose.id], state, agreed, ended))
    memberships = [PanelPlace(*row) for row in _MEMBERSHIPS.rows(session, params)]
    bookings = [UpcomingBooking(*row) for row in _BOOKINGS.rows(session, params)]
    return Overview(person, views, memberships, bookings)


def _panel_closed_at(
    session: Session, person: Person, purposes: list[Purpose], states: dict[int, ConsentNow]
) -> set[datetime]:
    """When the sweep ended this person's memberships because a panel concluded; it expires
    their panel consents at that same moment. Asked only once panel contact has expired."""
    contact = next((p.id for p in purposes if p.key == ledger.PANEL_CONTACT), None)
    state = states.get(contact) if contact is not None else None
    if state is None or state.status != "expired":
        return set()
    return set(
        session.execute(
            select(PanelMembership.left_at).where(
                PanelMembership.person_id == person.id,
                PanelMembership.left_reason == "panel_concluded",
            )
        ).scalars()
    )


def _titles(session: Session, keys: list[str]) -> list[str]:
    return [notices.get_purpose(session, key).title for key in keys]


def confirm_withdrawal(session: Session, person: Person, keys: list[str]) -> None:
    """Confirm by email what stopped: the person asked, so it goes even when suppressed.

    When nothing else is held for them, the next sweep erases the person and revokes their
    links, which would also cancel this email if it were still waiting. So it is sent
    apart from them, with no links and no name, and says their details will be deleted.
    """
    if not keys or not person.email:
        return
    assert person.id is not None
    erasing = person.id not in retention.holders(session, [person.id], utcnow())
    outbox.queue(
        session,
        "consent_withdrawn",
        person=person,
        context={
            "name": None if erasing else person.name,
            "withdrawn": _titles(session, keys),
            "erasing": erasing,
        },
        detach=erasing,
        purge_on_send=erasing,
    )


def _notice_shown(session: Session, purpose_key: str, notice_id: int | None) -> Notice:
    """The notice version a form says it showed for this purpose; consent must point at it."""
    notice = session.get(Notice, notice_id) if isinstance(notice_id, int) else None
    if notice is None or notice.purpose_id != notices.get_purpose(session, purpose_key).id:
        raise UnknownWording(purpose_key)
    return notice


def set_consent(
    session: Session, person: Person, purpose_key: str, *, agree: bool, notice_id: int | None
) -> bool:
    """Give (on the notice version the page showed) or withdraw one purpose."""
    if agree:
        notice = _notice_shown(session, purpose_key, notice_id)
        if purpose_key == "panel_contact":
            raise InvalidInput(purpose_key, "To join a panel, use the panel's join page.")
        return (
            ledger.give(
                session, person, purpose_key, channel="email_link", actor="self", notice=notice
            )
            is not None
        )
    stops = withdrawal_scope(session, person, purpose_key)
    try:
        event = ledger.withdraw(session, person, purpose_key, channel="email_link", actor="self")
    except NotConsented:
        return False
    if event is not None:
        confirm_withdrawal(session, person, stops)
    return event is not None


def leave_panel(session: Session, person: Person, panel_id: int) -> str | None:
    """Leave one panel, destroying the panel information held for it at once.

    Leaving the only panel is withdrawing panel contact, which ends recordings too. Leaving
    one of several keeps the others, and the agreement to be contacted that they need.
    Returns the panel's name, or None when the person is no longer on it (a second press).
    """
    assert person.id is not None
    if not ledger.lock_people(session, [person.id]):
        raise Erased("This person's details have been deleted.")
    member = PanelMembership.__table__.c
    live = session.execute(
        select(member.panel_id, Panel.name)
        .join(Panel, Panel.id == member.panel_id)
        .where(member.person_id == person.id, member.left_at.is_(None))
    ).all()
    name = next((name for place, name in live if place == panel_id), None)
    if name is None:
        return None
    if len(live) == 1:
        set_consent(session, person, ledger.PANEL_CONTACT, agree=False, notice_id=None)
        return name
    panels.end_memberships_of(
        session, [person.id], reason="withdrawn", at=utcnow(), panel_id=panel_id
    )
    staying = [other for place, other in live if place != panel_id]
    outbox.queue(
        session,
        "panel_left",
        person=person,
        context={"name": person.name, "panel_name": name, "staying": staying},
    )
    return name


@dataclass(frozen=True)
class Stopping:
    """What an unsubscribe link (or 'stop everything') stops: shown on the page before, and
    what was done after. Booking mail and invitations are not consents, so they are
    counted beside the purposes."""

    purposes: list[str]
    bookings: int = 0
    invitations: bool = False
    #: A link for no one purpose leaves a panel member on their panel.
    keeps_panel: bool = False

    def __bool__(self) -> bool:
        return bool(self.purposes or self.bookings or self.invitations)


#: What a link for no one purpose never stops: leaving a panel destroys the member's panel
#: information at once, which a mail app's one-click button must not do unseen.
_PANEL_KEYS = (ledger.PANEL_CONTACT, ledger.RECORDINGS)
#: Links that also stop booking reminders and feedback requests: booking emails carry a
#: workshops link, and someone who booked without asking for news of workshops would
#: otherwise press it and stop nothing. The places stay booked.
_STOPS_BOOKING_MAIL = (None, "workshops")


def _given(session: Session, person: Person) -> list[str]:
    return [
        key for key, state in ledger.states_for(session, person).items() if state.status == "given"
    ]


def _withdrawn_by(given: list[str], purpose_key: str | None) -> list[str]:
    if purpose_key is None:
        return [key for key in given if key not in _PANEL_KEYS]
    follows = (ledger.RECORDINGS,) if purpose_key == ledger.PANEL_CONTACT else ()
    return [key for key in given if key == purpose_key or (key in follows and purpose_key in given)]


def _declines(person: Person, purpose_key: str | None, purposes: list[str]) -> bool:
    """A panel link pressed by someone on no panel (invited only) has no consent to
    withdraw, yet 'stop' must stop the next coordinator's invitation."""
    return (
        purpose_key == ledger.PANEL_CONTACT
        and not purposes
        and person.invitations_declined_at is None
    )


def _mail_to_stop(person: Person) -> Any:
    booking = Booking.__table__.c
    return (
        booking.person_id == person.id,
        booking.cancelled_at.is_(None),
        booking.purged_at.is_(None),
        booking.mail_stopped_at.is_(None),
    )


def _stop_booking_mail(session: Session, person: Person) -> int:
    """No more reminders or feedback requests for any of the person's bookings."""
    table = Booking.__table__
    result = session.execute(
        update(table).where(*_mail_to_stop(person)).values(mail_stopped_at=utcnow())
    )
    assert person.id is not None
    workshops.cancel_booking_mail(
        session, [person.id], None, reason="they asked for no more emails before it was sent."
    )
    return int(result.rowcount or 0)


def withdrawal_scope(session: Session, person: Person, purpose_key: str | None) -> list[str]:
    """What withdrawing one purpose stops (panel contact takes recordings with it), or, with
    no purpose, every consent in force but panel membership."""
    return _withdrawn_by(_given(session, person), purpose_key)


def unsubscribe_scope(session: Session, person: Person, purpose_key: str | None) -> Stopping:
    """What pressing an unsubscribe link's button would stop; changes nothing."""
    given = _given(session, person)
    purposes = _withdrawn_by(given, purpose_key)
    bookings = 0
    if purpose_key in _STOPS_BOOKING_MAIL:
        count = select(func.count()).where(*_mail_to_stop(person))
        bookings = int(session.execute(count).scalar_one())
    return Stopping(
        purposes,
        bookings,
        _declines(person, purpose_key, purposes),
        keeps_panel=purpose_key is None and ledger.PANEL_CONTACT in given,
    )


def unsubscribe(
    session: Session, person: Person, purpose_key: str | None, *, one_click: bool
) -> Stopping:
    """Stop what the link covers. Idempotent: a second press finds nothing left to stop."""
    channel = "one_click_unsubscribe" if one_click else "email_link"
    purposes = withdrawal_scope(session, person, purpose_key)
    for key in purposes:
        ledger.withdraw(session, person, key, channel=channel, actor="self")
    bookings = _stop_booking_mail(session, person) if purpose_key in _STOPS_BOOKING_MAIL else 0
    if purpose_key is None:
        person.stopped_all_at = utcnow()
    declines = _declines(person, purpose_key, purposes)
    if declines:
        _decline_invitations(session, person)
    if not one_click:
        confirm_withdrawal(session, person, purposes)
    return Stopping(purposes, bookings, declines)


def _decline_invitations(session: Session, person: Person) -> None:
    """No more invitations, and an invitation already sent (or still waiting to be) no longer
    keeps them."""
    person.invitations_declined_at = utcnow()
    person.invited_until = None
    assert person.id is not None
    outbox.cancel_unsent(
        session,
        [person.id],
        ("panel_invitation",),
        reason="they asked for no more invitations before it was sent.",
    )
    session.flush()


def withdraw_all(
    session: Session, person: Person, *, channel: str = "email_link", notify: bool = True
) -> Stopping:
    """Withdraw every consent in force, stop every booking's reminders and decline panel
    invitations, in one step: the page promises no more emails, and an invitation is one."""
    withdrawn = _given(session, person)
    for key in withdrawn:
        ledger.withdraw(session, person, key, channel=channel, actor="self")
    person.stopped_all_at = utcnow()
    declines = person.invitations_declined_at is None
    if declines:
        _decline_invitations(session, person)
    if notify:
        confirm_withdrawal(session, person, withdrawn)
    return Stopping(withdrawn, _stop_booking_mail(session, person), declines)


def request_email_change(session: Session, person: Person, new_email: str) -> None:
    """Send a confirmation link to the new address; nothing changes until it is used.

    Whether the address is already on our records is only checked when the link is used,
    so this page cannot be used to find out who else has signed up.
    """
    address = normalise_email(new_email, field="new_email")
    if address == person.email:
        raise InvalidInput("new_email", "That is the email address we already have.")
    person.pending_email = address
    person.pending_email_at = utcnow()
    person.updated_at = utcnow()
    url = links.url_for_session(
        session, person, "confirm_email", ref=_address_ref(session, address)
    )
    outbox.queue(session, "confirm_email", person=person, to=address, context={"confirm_url": url})


def _address_ref(session: Session, address: str) -> int:
    """A keyed fingerprint of the address a confirmation link was sent to, kept in the link.

    Without it, a link would confirm whichever address was asked for last, which may be a
    later typo that nobody has proved they own.
    """
    digest = people.email_hmac(settings_of(session).hash_key, "confirm-email:" + address)
    return int(digest[:12], 16)


def pending_email_for(session: Session, person: Person, ref: int | None) -> str:
    """The new address this confirmation link is for, if it is still the one waiting."""
    if not person.pending_email:
        raise NotFound("There is no change of email address waiting to be confirmed.")
    if ref != _address_ref(session, person.pending_email):
        raise Conflict(
            "You asked for a different email address after this link was sent. "
            "Use the link in the newest email we sent."
        )
    return person.pending_email


def confirm_email_change(session: Session, person: Person, ref: int | None) -> str:
    """Move to the confirmed address. Someone who once had their details deleted under it
    left it on the suppression list; confirming it from that mailbox while agreeing to
    something now is agreeing afresh there, or all the mail they agreed to would stop."""
    new = pending_email_for(session, person, ref)
    people.change_email(session, person, new, channel="email_link", actor="self")
    people.revoke_links(person)
    now = utcnow()
    states = ledger.states_for(session, person).values()
    if any(ledger.in_force(state.status, state.expires_at, now) for state in states):
        people.lift_suppression(session, new)
    return new


def cancel_booking(session: Session, person: Person, booking_id: int) -> Booking:
    booking = session.get(Booking, booking_id) if isinstance(booking_id, int) else None
    if booking is None or booking.person_id != person.id or booking.cancelled_at is not None:
        raise NotFound("We could not find that booking.")
    workshop = session.get(Workshop, booking.workshop_id)
    if workshop is not None and workshop.status == "cancelled":
        raise Conflict("We cancelled this workshop, so there is no place to cancel.")
    if workshop is not None and workshop.starts_at <= utcnow():
        raise Conflict("This workshop has already started, so the booking cannot be cancelled.")
    booking.cancelled_at = utcnow()
    reports.count(session, "workshop.cancelled", scope=f"workshop:{booking.workshop_id}")
    assert person.id is not None
    workshops.cancel_booking_mail(
        session,
        [person.id],
        [booking_id],
        reason="they cancelled the booking before it was sent.",
        templates=workshops.ENDED_BOOKING_MAIL,
    )
    session.flush()
    return booking


def delete_everything(session: Session, person: Person) -> datetime:
    """Erase the person now; a last email (kept only until it is sent) says it is done.

    It is queued after the erasure, so it carries no preferences or unsubscribe link: the
    erasure has revoked them, and a link that answers 'gone' would only confuse.
    """
    address = person.email
    people.erase(session, person, channel="email_link", actor="self")
    if address:
        outbox.queue(
            session,
            "data_deleted",
            person=person,
            to=address,
            context={},
            detach=True,
            purge_on_send=True,
        )
    return person.erased_at or utcnow()


def renew_panel(
    session: Session,
    person: Person,
    *,
    contact_notice: int | None,
    recordings: bool = False,
    recordings_notice: int | None = None,
) -> list[str]:
    """The member wants to stay: renew panel contact on the wording the page showed, which
    restarts the two-year clock on every membership.

    Recordings are a purpose of their own: renewed only when the member ticks that box,
    never by the button alone.
    """
    if not ledger.has_consent(session, person, "panel_contact"):
        raise NotConsented(
            "Your panel membership has already ended, so it cannot be renewed. "
            "You can join again from the panels page."
        )
    shown = _notice_shown(session, "panel_contact", contact_notice)
    ledger.renew(session, person, "panel_contact", channel="email_link", actor="self", notice=shown)
    renewed = ["panel_contact"]
    if recordings and ledger.has_consent(session, person, "panel_recordings"):
        shown = _notice_shown(session, "panel_recordings", recordings_notice)
        ledger.renew(
            session, person, "panel_recordings", channel="email_link", actor="self", notice=shown
        )
        renewed.append("panel_recordings")
    return renewed
