"""Sign-ups with double opt-in: nothing is agreed until the person confirms from their inbox.

A form records what was asked for and exactly which notice versions were on screen, and
emails a link. Opening the link shows a button; only pressing it (a POST) records the
consents, against the wording the person saw on the form. Mail scanners that open links
therefore change nothing.
"""

from __future__ import annotations

import json
from dataclasses import asdict
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import delete
from sqlmodel import Session, select

from consent import links
from consent.crypto import cipher_for
from consent.db import settings_of
from consent.errors import Conflict, DomainError, InvalidInput, NotFound, UnknownWording
from consent.models import Notice, Panel, PendingSignup, Person, Purpose
from consent.services import ledger, notices, outbox, panels, people
from consent.timeutil import utcnow
from consent.validation import normalise_phone

#: What the newsletter form (and the workshop form's opt-ins) can ask for.
SUBSCRIBABLE = ("newsletter", "family_hub_events", "workshops")
ORDER = (*SUBSCRIBABLE, "panel_contact", "panel_recordings")


class LinkUsed(DomainError):
    """This confirmation was already used; everything it asked for is in place."""


def _check_shown(session: Session, shown: dict[str, int]) -> dict[str, int]:
    """The notice versions the form displayed, checked to belong to their purposes."""
    checked: dict[str, int] = {}
    for key, notice_id in shown.items():
        purpose = notices.get_purpose(session, key)
        notice = session.get(Notice, notice_id) if isinstance(notice_id, int) else None
        if notice is None or notice.purpose_id != purpose.id:
            raise UnknownWording(key)
        checked[key] = notice_id
    return checked


def _expiry(session: Session) -> datetime:
    return utcnow() + timedelta(seconds=settings_of(session).link_max_age["confirm"])


def request_subscription(
    session: Session,
    *,
    email: str,
    name: str | None,
    shown: dict[str, int],
    template: str = "confirm_newsletter",
) -> PendingSignup:
    """Someone ticked one or more boxes on a form: email them a confirmation link."""
    if not shown:
        raise InvalidInput("consent", "Select at least one thing you want us to email you about.")
    unknown = set(shown) - set(SUBSCRIBABLE)
    if unknown:
        raise InvalidInput("consent", "That cannot be signed up to here.")
    person = people.find_or_create(session, email, name=name, fill_name=False)
    pending = PendingSignup(
        person_id=person.id,
        kind="subscribe",
        notices=json.dumps(_check_shown(session, shown), sort_keys=True),
        payload=cipher_for(session).encrypt_json({"name": name}) if name else None,
        expires_at=_expiry(session),
    )
    session.add(pending)
    session.flush()
    confirm_url = links.url_for_session(session, person, "confirm", ref=pending.id)
    context: dict[str, object] = {"name": person.name, "confirm_url": confirm_url}
    asked = [key for key in SUBSCRIBABLE if key in shown]
    if template == "confirm_newsletter" and asked != ["newsletter"]:
        template = "confirm_subscription"
        context["asked_for"] = [notices.get_purpose(session, key).title for key in asked]
    outbox.queue(session, template, person=person, context=context, unsubscribe_purpose=asked[0])
    return pending


def request_panel(
    session: Session,
    panel: Panel,
    *,
    email: str,
    name: str | None,
    phone: str | None,
    profile: panels.ProfileInput,
    recordings: bool,
    shown: dict[str, int],
) -> PendingSignup:
    """Someone filled in the join form: check it all now, keep it encrypted, email a link."""
    if panel.status != "open":
        raise Conflict("This panel is not taking new members.")
    if "panel_contact" not in shown:
        raise InvalidInput("panel_contact", "Select the box to agree to join the panel.")
    if recordings and "panel_recordings" not in shown:
        raise UnknownWording("panel_recordings")
    if not recordings:
        shown = {k: v for k, v in shown.items() if k != "panel_recordings"}
    panels.clean_profile(profile)
    cleaned_phone = normalise_phone(phone)
    person = people.find_or_create(session, email, name=name, fill_name=False)
    payload = {
        "profile": asdict(profile),
        "recordings": recordings,
        "phone": cleaned_phone,
        "name": name,
    }
    pending = PendingSignup(
        person_id=person.id,
        kind="panel",
        notices=json.dumps(_check_shown(session, shown), sort_keys=True),
        panel_id=panel.id,
        payload=cipher_for(session).encrypt_json(payload),
        expires_at=_expiry(session),
    )
    session.add(pending)
    session.flush()
    confirm_url = links.url_for_session(session, person, "confirm", ref=pending.id)
    outbox.queue(
        session,
        "confirm_panel",
        person=person,
        context={"name": person.name, "panel_name": panel.name, "confirm_url": confirm_url},
    )
    return pending


def pending_for(session: Session, person: Person, ref: int | None) -> PendingSignup:
    """The sign-up a confirmation link points at, if it is this person's and still open."""
    pending = session.get(PendingSignup, ref) if isinstance(ref, int) else None
    if pending is None or pending.person_id != person.id:
        raise NotFound("We could not find what this link confirms. It may have expired.")
    if pending.confirmed_at is not None:
        raise LinkUsed("You have already confirmed this.")
    return pending


def describe(session: Session, pending: PendingSignup) -> dict[str, Any]:
    """What the confirmation page shows: the purposes and the exact wording agreed to."""
    shown: dict[str, int] = json.loads(pending.notices)
    items = []
    for key, notice_id in shown.items():
        purpose = session.exec(select(Purpose).where(Purpose.key == key)).one()
        notice = session.get(Notice, notice_id)
        items.append(
            {"key": key, "title": purpose.title, "statement": notice.statement if notice else ""}
        )
    items.sort(key=lambda item: ORDER.index(item["key"]))
    panel = session.get(Panel, pending.panel_id) if pending.panel_id else None
    return {"items": items, "panel": panel}


def confirm(session: Session, person: Person, pending: PendingSignup) -> list[str]:
    """Record every consent asked for, on the notice versions shown. Returns their keys."""
    if pending.confirmed_at is not None:
        raise LinkUsed("You have already confirmed this.")
    shown: dict[str, int] = json.loads(pending.notices)
    given: list[str] = []
    data = cipher_for(session).decrypt_json(pending.payload) if pending.payload else {}
    if data.get("name") and not person.name:
        people.correct_details(
            session, person, {"name": data["name"]}, channel="web_form", actor="self"
        )
    if pending.kind == "panel":
        panel = panels.get_panel(session, pending.panel_id or 0)
        profile = panels.ProfileInput(**data["profile"])
        panel_notice = session.get(Notice, shown["panel_contact"])
        recordings_notice = (
            session.get(Notice, shown["panel_recordings"]) if "panel_recordings" in shown else None
        )
        panels.join(
            session,
            panel,
            person,
            profile,
            channel="web_form",
            actor="self",
            recordings=bool(data.get("recordings")),
            shown={"panel_contact": panel_notice, "panel_recordings": recordings_notice},
        )
        if data.get("phone"):
            _keep_phone(session, person, data["phone"])
        given = list(shown)
    else:
        newly_subscribed = False
        for key, notice_id in shown.items():
            notice = session.get(Notice, notice_id)
            event = ledger.give(
                session, person, key, channel="web_form", actor="self", notice=notice
            )
            if event is not None:
                given.append(key)
                newly_subscribed |= key == "newsletter"
        if newly_subscribed:
            outbox.queue(session, "welcome", person=person, context={"name": person.name})
    pending.confirmed_at = utcnow()
    pending.payload = None
    session.flush()
    return given


def _keep_phone(session: Session, person: Person, phone: str) -> None:
    """The number given with a join form, checked again now: one that passed an older,
    looser check is left out rather than stopping the person joining."""
    try:
        people.correct_details(session, person, {"phone": phone}, channel="web_form", actor="self")
    except InvalidInput:
        return


def purge_expired(session: Session, now: datetime | None = None, limit: int = 1000) -> int:
    """Unconfirmed sign-ups past their link's life: their answers are not kept, and whoever
    they held is looked at again by the sweep, which may have waited for them."""
    now = now or utcnow()
    table = PendingSignup.__table__
    due = list(
        session.execute(select(table.c.id).where(table.c.expires_at < now).limit(limit)).scalars()
    )
    if not due:
        return 0
    rows = session.execute(
        delete(table).where(table.c.id.in_(due)).returning(table.c.id, table.c.person_id)
    ).all()
    ledger.queue_review(session, {row.person_id for row in rows}, now)
    return len(rows)
