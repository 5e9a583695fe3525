"""Lists staff can download as CSV: who agreed to a purpose, a panel's members, a workshop's
bookings. Each download is recorded in the audit log; special category data never appears."""

from __future__ import annotations

import csv
import io
from collections.abc import Iterator

from sqlalchemy import or_, select
from sqlmodel import Session

from consent.models import Booking, ConsentState, PanelMembership, Person
from consent.services import notices, panels, workshops
from consent.timeutil import london_datetime, utcnow
from consent.validation import spreadsheet_safe

KINDS = ("purpose", "panel", "workshop")
PAGE = 5000


def _rows(session: Session, query: object) -> Iterator[tuple]:
    """Stream a large list in pages, so a big audience does not fill memory."""
    offset = 0
    while True:
        rows = session.execute(query.limit(PAGE).offset(offset)).all()  # type: ignore[attr-defined]
        if not rows:
            return
        yield from rows
        offset += PAGE


def purpose_list(session: Session, key: str) -> Iterator[str]:
    """Who agrees now: a consent past its time limit has run out, though the hourly sweep
    may not yet have recorded it, and a list taken away cannot be corrected."""
    purpose = notices.get_purpose(session, key)
    query = (
        select(Person.email, Person.name, ConsentState.given_at, ConsentState.channel)
        .join(ConsentState, ConsentState.person_id == Person.id)
        .where(
            ConsentState.purpose_id == purpose.id,
            ConsentState.status == "given",
            or_(ConsentState.expires_at.is_(None), ConsentState.expires_at > utcnow()),
        )
        .order_by(Person.id)
    )
    yield _line(["email", "name", "agreed", "how"])
    for email, name, given_at, channel in _rows(session, query):
        yield _line([email, name or "", london_datetime(given_at) if given_at else "", channel])


def panel_list(session: Session, panel_id: int) -> Iterator[str]:
    """Current members: a membership past its two-year limit is over, though the hourly
    sweep may not yet have ended it."""
    panel = panels.get_panel(session, panel_id)
    query = (
        select(
            Person.email,
            Person.name,
            Person.phone,
            PanelMembership.joined_at,
            PanelMembership.expires_at,
        )
        .join(PanelMembership, PanelMembership.person_id == Person.id)
        .where(
            PanelMembership.panel_id == panel.id,
            PanelMembership.left_at.is_(None),
            PanelMembership.expires_at > utcnow(),
        )
        .order_by(PanelMembership.id)
    )
    yield _line(["email", "name", "phone", "joined", "until"])
    for email, name, phone, joined, until in _rows(session, query):
        yield _line(
            [email, name or "", phone or "", london_datetime(joined), london_datetime(until)]
        )


def workshop_list(session: Session, workshop_id: int) -> Iterator[str]:
    workshop = workshops.get_workshop(session, workshop_id)
    query = (
        select(
            Booking.name,
            Booking.email,
            Booking.setting,
            Booking.district,
            Booking.job_role,
            Booking.attended,
        )
        .where(
            Booking.workshop_id == workshop.id,
            Booking.cancelled_at.is_(None),
            Booking.purged_at.is_(None),
        )
        .order_by(Booking.id)
    )
    yield _line(["name", "email", "setting", "district", "role", "attended"])
    for name, email, setting, district, role, attended in _rows(session, query):
        came = "" if attended is None else ("yes" if attended else "no")
        yield _line([name or "", email or "", setting or "", district or "", role or "", came])


def _line(values: list[str]) -> str:
    buffer = io.StringIO()
    csv.writer(buffer).writerow([spreadsheet_safe(v) for v in values])
    return buffer.getvalue()
