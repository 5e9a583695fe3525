"""What staff do for one person: find them, record what they said by phone or in person,
send them a link, export or erase their data, and (the DPO only) see special category
answers. Every action is written to the audit log."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from sqlalchemy import or_, select
from sqlmodel import Session

from consent.crypto import cipher_for
from consent.errors import DomainError, Erased, InvalidInput, NotFound
from consent.models import Outbox, PanelMembership, PanelProfile, Person
from consent.models.people import name_key
from consent.services import audit, ledger, notices, outbox, people, rights
from consent.services.preferences import confirm_withdrawal, withdrawal_scope
from consent.validation import clean_text

SEARCH_LIMIT = 50


class NotAllowed(DomainError):
    """This role may not do that."""


@dataclass(frozen=True)
class Actor:
    """The member of staff acting, as services need them."""

    user_id: int
    label: str
    role: str


def search(session: Session, text: str, limit: int = SEARCH_LIMIT) -> list[Person]:
    """People whose email address or name starts with the text (indexed, case-insensitive)."""
    query = clean_text(text, field="q", label="a search", max_length=254)
    if not query:
        return []
    table = Person.__table__
    condition = _starts_with(table.c.email, query.lower())
    if "@" not in query:
        condition = or_(_starts_with(table.c.name_key, name_key(query)), condition)
    return list(
        session.execute(
            select(Person)
            .where(condition, table.c.erased_at.is_(None))
            .order_by(table.c.email)
            .limit(limit)
        ).scalars()
    )


def _starts_with(column: Any, prefix: str) -> Any:
    """A prefix as a range, so the column's index is used on SQLite and PostgreSQL alike."""
    upper = prefix[:-1] + chr(ord(prefix[-1]) + 1)
    return (column >= prefix) & (column < upper)


def get_person(session: Session, public_id: str) -> Person:
    if not isinstance(public_id, str) or len(public_id) > 32:
        raise NotFound("We could not find that person.")
    return people.get_by_public_id(session, public_id)


def _audit(session: Session, actor: Actor, action: str, person: Person, **detail: Any) -> None:
    audit.record(
        session,
        action,
        actor=actor.label,
        actor_id=actor.user_id,
        object_type="person",
        object_id=person.public_id,
        detail=detail,
    )


def record_on_behalf(
    session: Session,
    person: Person,
    purpose_key: str,
    *,
    agree: bool,
    note: str,
    actor: Actor,
    shown: int | None = None,
) -> bool:
    """Consent or a withdrawal given by phone or in person; a note saying how is required.

    ``shown`` is the notice the page showed staff to read out: consent points at it, and
    is refused if a newer one was published since, which the person has not heard. Agreeing
    to a time-limited consent already in force renews it: a member phoning to stay on a
    panel restarts the two-year clock.
    """
    change = "given" if agree else "withdrawn"
    if agree:
        purpose = notices.get_purpose(session, purpose_key)
        current = notices.current_notice(session, purpose)
        if shown != current.id:
            raise InvalidInput(
                "purpose",
                "The wording for this has changed since the page was opened. "
                "Read the new wording to them, then record it again.",
            )
        record = ledger.give
        if purpose.max_age_days and ledger.has_consent(session, person, purpose_key):
            record, change = ledger.renew, "renewed"
        event = record(
            session,
            person,
            purpose_key,
            channel="admin",
            actor=actor.label,
            note=note,
            notice=current,
            wording=f"Read out to them: {current.statement}",
        )
    else:
        stops = withdrawal_scope(session, person, purpose_key)
        event = ledger.withdraw(
            session, person, purpose_key, channel="admin", actor=actor.label, note=note
        )
        if event is not None:
            confirm_withdrawal(session, person, stops)
    if event is not None:
        _audit(
            session,
            actor,
            "consent.recorded_on_behalf",
            person,
            purpose=purpose_key,
            change=change,
        )
    return event is not None


def send_link(session: Session, person: Person, actor: Actor) -> None:
    if person.is_erased:
        raise InvalidInput(
            "person", "Their details have been deleted, so there is no one to email."
        )
    outbox.queue(session, "preferences_link", person=person, context={"name": person.name})
    _audit(session, actor, "person.link_sent", person)


WITHHELD = "withheld: only the DPO can see this"


def export(session: Session, person: Person, actor: Actor) -> dict[str, Any]:
    """Everything held, as the person would get it, less what only the DPO may see: special
    category answers, in a membership or in a panel sign-up not yet confirmed."""
    data = rights.export_person(session, person)
    if actor.role != "dpo":
        profiles = [membership["profile"] for membership in data["panel_memberships"]]
        profiles += [
            (signup["answers"] or {}).get("profile") for signup in data["unconfirmed_signups"]
        ]
        for profile in profiles:
            if profile and "special_category" in profile:
                profile["special_category"] = WITHHELD
        data["rights_requests"] = WITHHELD
    _audit(session, actor, "person.exported", person)
    return data


def reveal_special_category(session: Session, person: Person, actor: Actor) -> list[dict[str, str]]:
    """The DPO sees a member's special category answers; the view is audited."""
    if actor.role != "dpo":
        raise NotAllowed("Only the data protection officer can see special category answers.")
    cipher = cipher_for(session)
    answers = []
    for profile in session.execute(
        select(PanelProfile)
        .join(PanelMembership, PanelMembership.id == PanelProfile.membership_id)
        .where(PanelMembership.person_id == person.id)
    ).scalars():
        if profile.special_category:
            answers.append(cipher.decrypt_json(profile.special_category))
    _audit(session, actor, "special_category.viewed", person)
    return answers


def erase(session: Session, person: Person, *, note: str, actor: Actor) -> people.ErasureReport:
    """The DPO erases someone. The person is locked before the audit log is written, the
    order every other writer takes them in: the other order could deadlock with them."""
    if actor.role != "dpo":
        raise NotAllowed("Only the data protection officer can erase a person's data.")
    cleaned = clean_text(note, field="note", label="a note", max_length=5000, multiline=True)
    if not cleaned:
        raise InvalidInput("note", "Enter a note saying why, for example the request reference.")
    if person.id is None or not ledger.lock_people(session, [person.id]):
        raise Erased("This person's details have been deleted.")
    _audit(session, actor, "person.erased", person)
    return people.erase(session, person, channel="admin", actor=actor.label, note=cleaned)


def mail_history(session: Session, person: Person) -> list[Outbox]:
    return list(
        session.execute(
            select(Outbox).where(Outbox.person_id == person.id).order_by(Outbox.id.desc()).limit(50)
        ).scalars()
    )
