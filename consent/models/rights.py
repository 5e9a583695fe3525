"""Data protection rights requests and their statutory deadline."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Text
from sqlmodel import Field, SQLModel

from consent.models.base import UTCDateTime
from consent.timeutil import utcnow

REQUEST_KINDS = ("access", "rectification", "erasure", "objection", "portability")
REQUEST_STATUSES = ("open", "completed", "refused", "withdrawn")


class RightsRequest(SQLModel, table=True):
    __tablename__ = "rights_request"
    __table_args__ = (
        CheckConstraint(
            "kind IN ('access', 'rectification', 'erasure', 'objection', 'portability')",
            name="kind",
        ),
        CheckConstraint(
            "status IN ('open', 'completed', 'refused', 'withdrawn')",
            name="status",
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    person_id: int | None = Field(default=None, foreign_key="person.id", index=True)
    kind: str = Field(max_length=16)
    channel: str = Field(max_length=16)
    requester: str | None = Field(default=None, max_length=300)
    received_at: datetime = Field(sa_type=UTCDateTime)
    due_at: datetime = Field(sa_type=UTCDateTime, index=True)
    status: str = Field(default="open", max_length=16)
    outcome: str | None = Field(default=None, sa_type=Text)
    closed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    extended_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    extension_reason: str | None = Field(default=None, sa_type=Text)
    created_by: int | None = Field(default=None, foreign_key="admin_user.id")
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
