"""Free online workshops and the bookings for them."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Index, Text
from sqlmodel import Field, SQLModel

from consent.models.base import UTCDateTime
from consent.timeutil import utcnow


class Workshop(SQLModel, table=True):
    __tablename__ = "workshop"
    __table_args__ = (
        CheckConstraint("status IN ('scheduled', 'cancelled')", name="status"),
        CheckConstraint("capacity > 0", name="capacity"),
    )

    id: int | None = Field(default=None, primary_key=True)
    title: str = Field(max_length=200)
    description: str = Field(sa_type=Text)
    starts_at: datetime = Field(sa_type=UTCDateTime, index=True)
    ends_at: datetime = Field(sa_type=UTCDateTime)
    capacity: int
    location: str = Field(max_length=300)
    status: str = Field(default="scheduled", max_length=16)
    evaluation_closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    details_purged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Booking(SQLModel, table=True):
    """A place on a workshop; attendee details are removed once evaluation is processed."""

    __tablename__ = "booking"
    __table_args__ = (Index("ix_booking_workshop_email", "workshop_id", "email", unique=True),)

    id: int | None = Field(default=None, primary_key=True)
    workshop_id: int = Field(foreign_key="workshop.id", index=True)
    person_id: int | None = Field(default=None, foreign_key="person.id", index=True)
    name: str | None = Field(default=None, max_length=200)
    email: str | None = Field(default=None, max_length=254)
    setting: str | None = Field(default=None, max_length=200)
    district: str | None = Field(default=None, max_length=100)
    job_role: str | None = Field(default=None, max_length=100)
    attended: bool | None = Field(default=None)
    evaluation: str | None = Field(default=None, sa_type=Text)
    booked_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    cancelled_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: The booker asked for no reminder or feedback request (an unsubscribe link).
    mail_stopped_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    purged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
