"""The mail queue: every email a service decides to send, and what became of it."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Index, Text, false
from sqlmodel import Field, SQLModel

from consent.models.base import UTCDateTime
from consent.timeutil import utcnow

OUTBOX_STATUSES = ("queued", "sending", "sent", "failed", "cancelled")
#: A message in these has not gone yet, so a change can still stop it.
OUTBOX_WAITING = ("queued", "sending")


class Outbox(SQLModel, table=True):
    """One email. Bodies are purged a while after sending; the delivery history stays.

    ``membership_id`` and ``booking_id`` name what a message is about, so that leaving a
    panel or cancelling a booking cancels it. They are not foreign keys: the message's
    record outlives both, as erasure deletes them.
    """

    __tablename__ = "outbox"
    __table_args__ = (
        CheckConstraint(
            "status IN ('queued', 'sending', 'sent', 'failed', 'cancelled')",
            name="status",
        ),
        Index("ix_outbox_due", "status", "next_attempt_at"),
        Index("ix_outbox_unpurged_sent", "purged_at", "status", "sent_at"),
        Index("ix_outbox_unpurged_created", "purged_at", "status", "created_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    person_id: int | None = Field(default=None, foreign_key="person.id", index=True)
    template: str = Field(max_length=64)
    dedupe_key: str | None = Field(default=None, max_length=200, unique=True)
    to_address: str | None = Field(default=None, max_length=254)
    subject: str = Field(max_length=300)
    body_text: str | None = Field(default=None, sa_type=Text)
    body_html: str | None = Field(default=None, sa_type=Text)
    headers: str | None = Field(default=None, sa_type=Text)
    message_id: str = Field(max_length=200)
    status: str = Field(default="queued", max_length=16)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    claimed_by: str | None = Field(default=None, max_length=100)
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    sent_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    purged_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    purge_on_send: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
    membership_id: int | None = Field(default=None)
    booking_id: int | None = Field(default=None)
