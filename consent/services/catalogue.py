"""What the public pages list: workshops open for booking and panels taking members."""

from __future__ import annotations

from dataclasses import dataclass

from sqlalchemy import func
from sqlmodel import Session, select

from consent.models import Booking, Panel, Workshop
from consent.timeutil import utcnow


@dataclass(frozen=True)
class Listing:
    workshop: Workshop
    places_left: int


def upcoming_workshops(session: Session) -> list[Listing]:
    """Scheduled workshops that have not started, soonest first, with places left."""
    taken = (
        select(Booking.workshop_id, func.count().label("taken"))
        .where(Booking.cancelled_at.is_(None))
        .group_by(Booking.workshop_id)
        .subquery()
    )
    rows = session.exec(
        select(Workshop, func.coalesce(taken.c.taken, 0))
        .outerjoin(taken, taken.c.workshop_id == Workshop.id)
        .where(Workshop.status == "scheduled", Workshop.starts_at > utcnow())
        .order_by(Workshop.starts_at)
    ).all()
    return [Listing(workshop, max(0, workshop.capacity - int(count))) for workshop, count in rows]


def open_panels(session: Session) -> list[Panel]:
    return list(session.exec(select(Panel).where(Panel.status == "open").order_by(Panel.name)))
