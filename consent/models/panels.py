"""Parent Carer Panels, their members, profiles, sessions, attendance and notes.

Special category answers live only in ``PanelProfile.special_category`` and
``SessionNote.text``, both encrypted with :mod:`consent.crypto` before they are written.
"""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from consent.models.base import UTCDateTime
from consent.timeutil import utcnow


class Panel(SQLModel, table=True):
    __tablename__ = "panel"
    __table_args__ = (CheckConstraint("status IN ('open', 'closed', 'concluded')", name="status"),)

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=200)
    family_hub: str = Field(max_length=200)
    description: str = Field(sa_type=Text)
    status: str = Field(default="open", max_length=16)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    concluded_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    data_destroyed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PanelMembership(SQLModel, table=True):
    """A person on a panel; ``expires_at`` is the last panel-contact consent plus two years."""

    __tablename__ = "panel_membership"
    __table_args__ = (
        UniqueConstraint("panel_id", "person_id"),
        Index("ix_panel_membership_active_expiry", "left_at", "expires_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    panel_id: int = Field(foreign_key="panel.id", index=True)
    person_id: int = Field(foreign_key="person.id", index=True)
    joined_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    renewed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime)
    left_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    left_reason: str | None = Field(default=None, max_length=32)
    data_destroyed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class PanelProfile(SQLModel, table=True):
    """What a member told us for the panel; destroyed when the membership ends."""

    __tablename__ = "panel_profile"

    id: int | None = Field(default=None, primary_key=True)
    membership_id: int = Field(foreign_key="panel_membership.id", unique=True)
    postcode: str | None = Field(default=None, max_length=10)
    age_band: str | None = Field(default=None, max_length=16)
    children_count: int | None = Field(default=None)
    children_ages: str | None = Field(default=None, max_length=200)
    services_used: str | None = Field(default=None, sa_type=Text)
    special_category: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class PanelSession(SQLModel, table=True):
    __tablename__ = "panel_session"
    __table_args__ = (
        CheckConstraint("format IN ('online', 'in_person', 'hybrid')", name="format"),
    )

    id: int | None = Field(default=None, primary_key=True)
    panel_id: int = Field(foreign_key="panel.id", index=True)
    title: str = Field(max_length=200)
    starts_at: datetime = Field(sa_type=UTCDateTime)
    format: str = Field(max_length=16)
    location: str | None = Field(default=None, max_length=300)
    recorded: bool = Field(default=False)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class Attendance(SQLModel, table=True):
    """Whether a member came to a session and agreed to that session being recorded."""

    __tablename__ = "attendance"
    __table_args__ = (UniqueConstraint("session_id", "membership_id"),)

    id: int | None = Field(default=None, primary_key=True)
    session_id: int = Field(foreign_key="panel_session.id", index=True)
    membership_id: int = Field(foreign_key="panel_membership.id", index=True)
    attended: bool | None = Field(default=None)
    recording_consent: bool = Field(default=False)
    recording_consent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class SessionNote(SQLModel, table=True):
    """A coordinator's note on a session, optionally about one member; text is encrypted."""

    __tablename__ = "session_note"

    id: int | None = Field(default=None, primary_key=True)
    session_id: int = Field(foreign_key="panel_session.id", index=True)
    membership_id: int | None = Field(default=None, foreign_key="panel_membership.id", index=True)
    author_id: int | None = Field(default=None, foreign_key="admin_user.id")
    text: str = Field(sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
