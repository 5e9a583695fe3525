"""Sign-ups waiting for the person to confirm from their inbox (double opt-in)."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Text
from sqlmodel import Field, SQLModel

from consent.models.base import UTCDateTime
from consent.timeutil import utcnow


class PendingSignup(SQLModel, table=True):
    """What someone asked for, and the wording they were shown, until they confirm.

    ``payload`` holds the panel answers (special category data included), encrypted; it is
    destroyed on confirmation, and the whole row when the confirmation link expires.
    """

    __tablename__ = "pending_signup"
    __table_args__ = (CheckConstraint("kind IN ('subscribe', 'panel')", name="kind"),)

    id: int | None = Field(default=None, primary_key=True)
    person_id: int = Field(foreign_key="person.id", index=True)
    kind: str = Field(max_length=16)
    notices: str = Field(sa_type=Text)
    panel_id: int | None = Field(default=None, foreign_key="panel.id")
    payload: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    expires_at: datetime = Field(sa_type=UTCDateTime, index=True)
    confirmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
