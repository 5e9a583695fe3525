"""The append-only, hash-chained audit log of admin actions and special category views."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Text
from sqlmodel import Field, SQLModel

from consent.models.base import UTCDateTime


class AuditEvent(SQLModel, table=True):
    """One admin action. ``detail`` holds identifiers and field names, never personal data."""

    __tablename__ = "audit_event"
    #: A subject access export lists the actions about one person.
    __table_args__ = (Index("ix_audit_event_object", "object_type", "object_id"),)

    id: int | None = Field(default=None, primary_key=True)
    seq: int = Field(unique=True)
    occurred_at: datetime = Field(sa_type=UTCDateTime, index=True)
    actor_id: int | None = Field(default=None, foreign_key="admin_user.id", index=True)
    actor: str = Field(max_length=100)
    action: str = Field(max_length=64, index=True)
    object_type: str | None = Field(default=None, max_length=32)
    object_id: str | None = Field(default=None, max_length=64)
    detail: str = Field(default="{}", sa_type=Text)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)
