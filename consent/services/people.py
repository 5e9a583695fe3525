"""People: finding them by email, correcting their details, and erasing them completely."""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Mapping
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from functools import cache
from typing import Any

from sqlalchemy import and_, case, delete, func, update
from sqlalchemy.exc import IntegrityError
from sqlalchemy.orm.attributes import set_committed_value
from sqlmodel import Session, select

from consent import loading
from consent.db import among, settings_of, upsert_insert
from consent.errors import Conflict, Erased, InvalidInput, NotFound
from consent.models import (
    AddressOptOut,
    Booking,
    ConsentEvent,
    ConsentState,
    DeclinedInvitations,
    Outbox,
    PendingSignup,
    Person,
    PersonChange,
    Purpose,
    RightsRequest,
    Suppression,
)
from consent.models.outbox import OUTBOX_WAITING
from consent.services import ledger, panels, reports
from consent.timeutil import utcnow
from consent.validation import (
    NOTE_MAX,
    clean_text,
    normalise_email,
    normalise_phone,
    normalise_postcode,
)

EDITABLE = ("name", "phone", "postcode")


def email_hmac(hash_key: str, email: str) -> str:
    """The keyed hash of a normalised address: what the suppression list holds."""
    return hmac.new(hash_key.encode(), email.encode("utf-8"), hashlib.sha256).hexdigest()


def _hmac_for(session: Session, email: str) -> str:
    return email_hmac(settings_of(session).hash_key, email)


def is_suppressed(session: Session, email: str) -> bool:
    digest = _hmac_for(session, normalise_email(email))
    return (
        session.exec(select(Suppression.id).where(Suppression.email_hmac == digest)).first()
        is not None
    )


def suppress(session: Session, email: str, reason: str) -> None:
    digest = _hmac_for(session, normalise_email(email))
    if session.exec(select(Suppression).where(Suppression.email_hmac == digest)).first() is None:
        session.add(Suppression(email_hmac=digest, reason=reason))
        session.flush()


def lift_suppression(session: Session, email: str) -> None:
    """Only a fresh consent from the person themselves removes them from the list. When the
    address asked us to stop is kept, so an agreement older than that is never imported."""
    digest = _hmac_for(session, normalise_email(email))
    table = Suppression.__table__
    lifted = session.execute(
        delete(table).where(table.c.email_hmac == digest).returning(table.c.created_at)
    ).scalar_one_or_none()
    if lifted is not None:
        _remember_opt_outs(session, [(digest, lifted)])


def _remember_opt_outs(session: Session, opted_out: list[tuple[str, datetime]]) -> None:
    """Keep when each address (by its keyed hash) last asked us to stop."""
    if not opted_out:
        return
    table = AddressOptOut.__table__
    now = utcnow()
    statement = upsert_insert(session.get_bind().dialect.name, table)
    session.execute(
        statement.on_conflict_do_update(
            index_elements=["email_hmac"],
            set_={
                "opted_out_at": case(
                    (
                        statement.excluded.opted_out_at > table.c.opted_out_at,
                        statement.excluded.opted_out_at,
                    ),
                    else_=table.c.opted_out_at,
                )
            },
        ),
        [{"email_hmac": digest, "opted_out_at": at, "created_at": now} for digest, at in opted_out],
    )


def opted_out_at(session: Session, email: str) -> datetime | None:
    """When this address last asked us to stop, as kept once its suppression was lifted,
    its person was erased without one, or its person moved away; None if none is kept."""
    digest = _hmac_for(session, normalise_email(email))
    table = AddressOptOut.__table__
    found = select(table.c.opted_out_at).where(table.c.email_hmac == digest)
    return session.execute(found).scalar_one_or_none()


def declined_invitations(session: Session, person: Person) -> bool:
    """Whether the person, or someone erased who had this address, asked not to be invited
    to panels: an erased record takes its marker with it, so the address's hash keeps it."""
    if person.invitations_declined_at is not None:
        return True
    if not person.email:
        return False
    digest = _hmac_for(session, person.email)
    found = select(DeclinedInvitations.id).where(DeclinedInvitations.email_hmac == digest)
    return session.exec(found).first() is not None


def forget_declined_invitations(session: Session, person: Person) -> None:
    """The person joined a panel themselves: invitations may reach them again."""
    person.invitations_declined_at = None
    if person.email:
        digest = _hmac_for(session, person.email)
        session.execute(delete(DeclinedInvitations).where(DeclinedInvitations.email_hmac == digest))


def unconfirmed_addresses(session: Session, now: datetime) -> Any:
    """People whose new address waits for a confirmation link that has expired."""
    max_age = timedelta(seconds=settings_of(session).link_max_age["confirm_email"])
    return and_(Person.pending_email.is_not(None), Person.pending_email_at < now - max_age)


def forget_unconfirmed_addresses(session: Session, now: datetime) -> int:
    """A new address never confirmed is dropped when its link expires: whoever reads the
    old mailbox's links (a shared or an abuser's mailbox, say) must not learn it for ever."""
    table = Person.__table__
    result = session.execute(
        update(table)
        .where(unconfirmed_addresses(session, now))
        .values(pending_email=None, pending_email_at=None)
    )
    return int(result.rowcount or 0)


def find_by_email(session: Session, email: str) -> Person | None:
    """The living (not erased) person with this address, if any."""
    return loading.person_by_email.get(session, normalise_email(email))


def find_for_update(session: Session, email: str) -> Person | None:
    """The living person with this address, locked for a write that gives them a reason to
    be held (a sign-up, a booking, a request).

    The retention sweep takes the same lock before deciding to erase someone, so the two
    cannot cross: if the sweep erased them first, or they moved to another address while
    we waited, there is no one to find, and the caller starts afresh with a new record.
    """
    address = normalise_email(email)
    person = find_by_email(session, address)
    return next(iter(still_at(session, [(address, person)] if person else [])), None)


def still_at(session: Session, found: list[tuple[str, Person]]) -> list[Person]:
    """Lock the people found by these addresses (in id order) and keep those still living
    at them once the lock is held: any erased, or moved elsewhere, while we waited are
    dropped, and forgotten by the session so that nothing stale of theirs is used."""
    current = dict(
        ledger.locked_rows(
            session, sorted({p.id for _, p in found if p.id}), Person.__table__.c.email
        )
    )
    kept = [person for address, person in found if current.get(person.id) == address]
    for _, person in found:
        if person not in kept:
            session.expire(person)
    return kept


def get_by_public_id(session: Session, public_id: str) -> Person:
    person = loading.person_by_public_id.get(session, public_id)
    if person is None:
        raise NotFound("We could not find that person.")
    return person


def find_or_create(
    session: Session, email: str, *, name: str | None = None, fill_name: bool = True
) -> Person:
    """One person per mailbox: an existing record is reused, a name only fills a blank.

    A public form proves nothing about the mailbox until its link is used, so it passes
    ``fill_name=False`` and applies the name on confirmation, even to a record it creates:
    otherwise anyone could name someone else's record, and our emails would greet them by it.
    """
    normalised = normalise_email(email)
    cleaned_name = clean_text(name, field="name", label="your name")
    person = find_for_update(session, normalised)
    if person is None:
        wait = timedelta(seconds=settings_of(session).link_max_age["confirm"], hours=1)
        person = Person(
            email=normalised, name=cleaned_name if fill_name else None, review_at=utcnow() + wait
        )
        try:
            with session.begin_nested():
                session.add(person)
        except IntegrityError:
            person = _created_meanwhile(session, normalised)
        else:
            reports.count(session, "people.created")
            return person
    if cleaned_name and not person.name and fill_name:
        person.name = cleaned_name
        person.updated_at = utcnow()
    return person


def _created_meanwhile(session: Session, address: str) -> Person:
    """The record another request made for this address while we were making ours (a double
    click, or a booking beside a sign-up): there is nothing to lock before it exists, so the
    database's unique address is what tells the second request to use the first's."""
    person = find_for_update(session, address)
    if person is None:
        raise Conflict("Something else changed this address at the same moment. Try again.")
    return person


def _clean_detail(key: str, value: str | None) -> str | None:
    if key == "name":
        return clean_text(value, field="name", label="your name")
    if key == "phone":
        return normalise_phone(value)
    if key == "postcode":
        return normalise_postcode(value)
    raise InvalidInput(key, f"{key} cannot be changed here.")


def correct_details(
    session: Session,
    person: Person,
    changes: Mapping[str, str | None],
    *,
    channel: str,
    actor: str,
    note: str | None = None,
) -> list[str]:
    """Correct name, phone or postcode; records which fields changed, never their values.

    A phone number is kept only so the Family Hub team can call a panel member about
    meetings, and goes with their last membership: nobody else's is taken.
    """
    if person.is_erased:
        raise Erased("This person's details have been deleted.")
    unknown = set(changes) - set(EDITABLE)
    if unknown:
        raise InvalidInput(sorted(unknown)[0], "That detail cannot be changed here.")
    cleaned = {key: _clean_detail(key, value) for key, value in changes.items()}
    new_phone = cleaned.get("phone") and cleaned["phone"] != person.phone
    if new_phone and not panels.is_member(session, person):
        raise InvalidInput(
            "phone",
            "We only keep a phone number for members of a Parent Carer Panel, to call about "
            "meetings. Leave it blank.",
        )
    note = clean_text(note, field="note", label="a note", max_length=NOTE_MAX, multiline=True)
    changed = [key for key, value in cleaned.items() if getattr(person, key) != value]
    if not changed:
        return []
    for key in changed:
        setattr(person, key, cleaned[key])
    person.updated_at = utcnow()
    _record_change(session, person, changed, channel=channel, actor=actor, note=note)
    return changed


def _record_change(
    session: Session,
    person: Person,
    fields: list[str],
    *,
    channel: str,
    actor: str,
    note: str | None,
) -> None:
    assert person.id is not None
    session.add(
        PersonChange(
            person_id=person.id,
            fields=",".join(sorted(fields)),
            channel=channel,
            actor=actor[:100],
            note=note,
        )
    )
    session.flush()


def change_email(
    session: Session,
    person: Person,
    new_email: str,
    *,
    channel: str,
    actor: str,
    note: str | None = None,
) -> bool:
    """Change the address once it is confirmed; refuse one that belongs to someone else."""
    if person.is_erased:
        raise Erased("This person's details have been deleted.")
    normalised = normalise_email(new_email)
    if normalised == person.email:
        person.pending_email = None
        person.pending_email_at = None
        return False
    other = loading.person_by_email.get(session, normalised)
    if other is not None:
        raise Conflict("That email address is already used by someone else on our records.")
    from consent.services import mailchimp

    newsletter = ledger.states_for(session, person).get("newsletter")
    if (
        person.email
        and channel != mailchimp.CHANNEL
        and newsletter
        and newsletter.status == "given"
    ):
        mailchimp.queue_email_change(session, person, person.email, normalised, newsletter.given_at)
    _leave_opt_out_behind(session, person)
    person.email = normalised
    person.pending_email = None
    person.pending_email_at = None
    person.updated_at = utcnow()
    _move_bookings(session, person, normalised)
    _record_change(session, person, ["email"], channel=channel, actor=actor, note=note)
    return True


def _move_bookings(session: Session, person: Person, address: str) -> None:
    """A person's bookings follow them to their new address: the coordinator's list shows the
    address we now use, a second booking under the new one is known for the same person,
    and whoever is given the old address next is not taken for them. A workshop keeps one
    booking per address, so where the person has two (a place still booked first) only one
    moves."""
    theirs = session.exec(
        select(Booking)
        .where(
            Booking.person_id == person.id,
            Booking.purged_at.is_(None),
            Booking.email.is_not(None),
        )
        .order_by(Booking.cancelled_at.is_not(None), Booking.id)
    ).all()
    if not theirs:
        return
    taken = set(
        session.exec(
            select(Booking.workshop_id).where(
                Booking.email == address,
                among(Booking.workshop_id, sorted({booking.workshop_id for booking in theirs})),
            )
        ).all()
    )
    for booking in theirs:
        if booking.workshop_id not in taken:
            booking.email = address
            taken.add(booking.workshop_id)
    session.flush()


def revoke_links(person: Person) -> None:
    """Every link sent so far stops working; new links carry the new version."""
    person.token_version += 1
    person.updated_at = utcnow()


@dataclass
class ErasureReport:
    person_public_id: str
    withdrawn: list[str] = field(default_factory=list)
    memberships: int = 0
    bookings: int = 0
    messages: int = 0
    already_erased: bool = False


def erase(
    session: Session,
    person: Person,
    *,
    channel: str,
    actor: str,
    note: str | None = None,
    reason: str = "erased",
) -> ErasureReport:
    """Remove or destroy every personal field about a person, in every table, at once.

    Consents still in force are first withdrawn, so the ledger shows how they ended; the
    ledger itself is kept, pseudonymised (notes blanked, digests kept). The address joins
    the suppression list and every link already sent stops working.
    """
    report = ErasureReport(person_public_id=person.public_id)
    if person.is_erased:
        report.already_erased = True
        return report
    assert person.id is not None
    for key, state in ledger.states_for(session, person).items():
        if state.status == "given":
            ledger.withdraw(session, person, key, channel=channel, actor=actor, note=note)
            report.withdrawn.append(key)
    counts = scrub(session, [person.id], reason=reason, suppress_ids={person.id})
    report.memberships, report.bookings, report.messages = (
        counts["memberships"],
        counts["bookings"],
        counts["messages"],
    )
    return report


def scrub(
    session: Session, person_ids: list[int], *, reason: str, suppress_ids: set[int]
) -> dict[str, int]:
    """Erase many people in a few statements. Their consents must already have ended.

    ``suppress_ids`` are the people whose address joins the suppression list: those who
    opted out; anyone who asked to stop everything joins it too, unless they agreed to
    something afresh since. Someone whose consent simply ran out may be asked again later.
    Someone who declined panel invitations keeps declining them: their address's hash is
    kept for that.
    The people are locked first (on PostgreSQL), so when two sweeps pick the same person the
    one that waited finds them already erased and neither erases nor counts them again.
    """
    from consent.services import link_requests, mailchimp

    now = utcnow()
    table = Person.__table__
    living = session.execute(
        select(table.c.id, table.c.email, table.c.invitations_declined_at, table.c.stopped_all_at)
        .where(among(table.c.id, person_ids), table.c.erased_at.is_(None))
        .order_by(table.c.id)
        .with_for_update()
    ).all()
    ids = [row[0] for row in living]
    counts = {"people": len(ids), "memberships": 0, "bookings": 0, "messages": 0}
    if not ids:
        return counts
    hash_key = settings_of(session).hash_key
    dialect = session.get_bind().dialect.name
    stopped_all = _stopped_all(session, living)
    opted_out = suppress_ids | stopped_all
    _remember_opt_outs(
        session,
        [
            (email_hmac(hash_key, email), at)
            for person_id, email, _, at in living
            if email and at is not None and person_id not in opted_out
        ],
    )
    suppressed = [
        {"email_hmac": email_hmac(hash_key, email), "reason": reason, "created_at": now}
        for person_id, email, _, _ in living
        if email and person_id in opted_out
    ]
    if suppressed:
        session.execute(_hash_insert(dialect, Suppression.__table__), suppressed)
    declined = [
        {"email_hmac": email_hmac(hash_key, email), "declined_at": at, "created_at": now}
        for _, email, at, _ in living
        if email and at is not None
    ]
    if declined:
        session.execute(_hash_insert(dialect, DeclinedInvitations.__table__), declined)
    newsletter_people = set(
        session.execute(
            select(ConsentState.person_id)
            .join(Purpose, Purpose.id == ConsentState.purpose_id)
            .where(among(ConsentState.person_id, ids), Purpose.key == "newsletter")
        ).scalars()
    )
    for person_id, email, _, _ in living:
        if email and person_id in newsletter_people:
            mailchimp.queue_delete(session, person_id, email)
    link_requests.forget(session, {row[1] for row in living if row[1]})
    counts["memberships"] = panels.delete_all_for_people(session, ids)
    session.execute(delete(PendingSignup).where(among(PendingSignup.person_id, ids)))
    counts["bookings"] = int(
        session.execute(delete(Booking).where(among(Booking.person_id, ids))).rowcount or 0
    )
    counts["messages"] = int(
        session.execute(
            update(Outbox)
            .where(among(Outbox.person_id, ids))
            .values(
                to_address=None,
                body_text=None,
                body_html=None,
                headers=None,
                last_error=None,
                purged_at=now,
            )
        ).rowcount
        or 0
    )
    session.execute(
        update(Outbox)
        .where(among(Outbox.person_id, ids), Outbox.status.in_(OUTBOX_WAITING))
        .values(status="cancelled", last_error="Cancelled: the person's data was deleted.")
    )
    session.execute(
        update(ConsentEvent)
        .where(among(ConsentEvent.person_id, ids), ConsentEvent.note.is_not(None))
        .values(note=None)
    )
    session.execute(
        update(PersonChange).where(among(PersonChange.person_id, ids)).values(note=None)
    )
    session.execute(
        update(RightsRequest)
        .where(among(RightsRequest.person_id, ids))
        .values(requester=None, outcome=None, extension_reason=None)
    )
    session.execute(
        update(table)
        .where(among(table.c.id, ids))
        .values(
            email=None,
            name=None,
            name_key=None,
            phone=None,
            postcode=None,
            pending_email=None,
            pending_email_at=None,
            stopped_all_at=None,
            erased_at=now,
            updated_at=now,
            review_at=None,
            invited_until=None,
            token_version=table.c.token_version + 1,
        )
    )
    erased = set(ids)
    for person in list(session.identity_map.values()):
        if isinstance(person, Person) and person.id in erased:
            for name in (
                "email",
                "name",
                "name_key",
                "phone",
                "postcode",
                "pending_email",
                "pending_email_at",
                "stopped_all_at",
                "review_at",
                "invited_until",
            ):
                set_committed_value(person, name, None)
            set_committed_value(person, "erased_at", now)
            set_committed_value(person, "updated_at", now)
            set_committed_value(person, "token_version", person.token_version + 1)
    reports.count(session, "people.erased", dimension="reason", value=reason, by=len(ids))
    return counts


def _leave_opt_out_behind(session: Session, person: Person) -> None:
    """The address a person leaves keeps when they last asked us to stop (everything, or
    any one purpose): the record that says so moves with them, and an old spreadsheet must
    not bring the address back as agreeing."""
    if not person.email or person.id is None:
        return
    state = ConsentState.__table__
    withdrawn = session.execute(
        select(func.max(state.c.changed_at)).where(
            state.c.person_id == person.id, state.c.status == "withdrawn"
        )
    ).scalar_one_or_none()
    stops = [at for at in (withdrawn, person.stopped_all_at) if at is not None]
    if stops:
        _remember_opt_outs(session, [(_hmac_for(session, person.email), max(stops))])


def _stopped_all(session: Session, living: list[Any]) -> set[int]:
    """Of these people (id, email, declined, stopped all), those who asked to stop
    everything and have agreed to nothing since."""
    stopped = {row[0]: row[3] for row in living if row[3] is not None}
    if not stopped:
        return set()
    event = ConsentEvent.__table__
    since = session.execute(
        select(event.c.person_id, func.max(event.c.occurred_at))
        .where(among(event.c.person_id, sorted(stopped)), event.c.action.in_(("given", "renewed")))
        .group_by(event.c.person_id)
    ).all()
    agreed = {person_id: at for person_id, at in since}
    return {
        person_id
        for person_id, at in stopped.items()
        if person_id not in agreed or agreed[person_id] <= at
    }


@cache
def _hash_insert(dialect: str, table: Any) -> Any:
    """An insert into a list of address hashes that leaves a hash already listed alone."""
    return upsert_insert(dialect, table).on_conflict_do_nothing(index_elements=["email_hmac"])
