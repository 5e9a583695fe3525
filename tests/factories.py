"""Small builders for test data, going through the real services."""

from __future__ import annotations

import itertools
from datetime import datetime, timedelta

from sqlmodel import Session

from consent.models import Booking, Panel, PanelMembership, PanelSession, Person, Workshop
from consent.services import ledger, panels, people, workshops
from consent.timeutil import utcnow

_counter = itertools.count(1)


def person(session: Session, email: str | None = None, name: str | None = None) -> Person:
    address = email or f"parent{next(_counter)}@example.com"
    return people.find_or_create(session, address, name=name)


def consenting(session: Session, *purposes: str, email: str | None = None) -> Person:
    someone = person(session, email)
    for key in purposes:
        ledger.give(session, someone, key, channel="web_form", actor="self")
    return someone


def consents_for_a_report(session: Session) -> None:
    """This month: 7 newsletter, 6 Family Hub events and 1 workshops consent; the 1 is
    too small to show, so the 6 beside it is withheld too."""
    for _ in range(7):
        consenting(session, "newsletter")
    for _ in range(6):
        consenting(session, "family_hub_events")
    consenting(session, "workshops")


def panel(session: Session, name: str = "Northfield Parent Carer Panel") -> Panel:
    return panels.create_panel(
        session,
        name=name,
        family_hub="Northfield Family Hub",
        description="Parents and carers shaping the Family Hub.",
    )


def member(
    session: Session,
    on_panel: Panel,
    someone: Person | None = None,
    *,
    special: dict[str, str] | None = None,
    at: datetime | None = None,
    postcode: str = "NE1 4ST",
) -> PanelMembership:
    someone = someone or person(session)
    profile = panels.ProfileInput(
        postcode=postcode,
        age_band="25 to 34",
        children_count=2,
        children_ages=[3, 6],
        services_used=["Stay and play sessions"],
        special_category=special or {"ethnicity": "Mixed or multiple ethnic groups"},
    )
    return panels.join(session, on_panel, someone, profile, channel="web_form", actor="self", at=at)


def meeting(
    session: Session, on_panel: Panel, *, days: int = 5, recorded: bool = True
) -> PanelSession:
    """A panel session ``days`` from now (0: starting now)."""
    return panels.create_session(
        session,
        on_panel,
        title="Spring",
        format="online",
        starts_at=utcnow() + timedelta(days=days),
        recorded=recorded,
    )


def workshop(
    session: Session,
    *,
    days: int = 7,
    capacity: int = 9,
    title: str = "Helping your baby sleep",
    starts_at: datetime | None = None,
) -> Workshop:
    start = starts_at or utcnow() + timedelta(days=days)
    return workshops.create_workshop(
        session,
        title=title,
        description="Bedtimes.",
        starts_at=start,
        ends_at=start + timedelta(hours=1),
        capacity=capacity,
        location="Online",
    )


def move_workshop(session: Session, workshop: Workshop, by: timedelta) -> int:
    """A coordinator's change of time, keeping everything else; returns how many were told."""
    _, told = workshops.update_workshop(
        session,
        workshop,
        title=workshop.title,
        description=workshop.description,
        starts_at=workshop.starts_at + by,
        ends_at=workshop.ends_at + by,
        capacity=workshop.capacity,
        location=workshop.location,
    )
    return told


def booking(
    session: Session, on: Workshop, email: str = "booker@example.com", name: str = "Bea Booker"
) -> Booking:
    made, _ = workshops.book(
        session,
        on,
        name=name,
        email=email,
        setting="Little Acorns",
        district="Riverside",
        job_role="Volunteer",
    )
    return made
