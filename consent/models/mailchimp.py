"""Changes waiting to be pushed to the Mailchimp audience, and small job bookmarks."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Index, Text
from sqlmodel import Field, SQLModel

from consent.models.base import UTCDateTime
from consent.timeutil import utcnow


class MailchimpChange(SQLModel, table=True):
    """One change to one audience member. Addresses are blanked once the change is pushed."""

    __tablename__ = "mailchimp_change"
    __table_args__ = (
        CheckConstraint(
            "action IN ('subscribe', 'unsubscribe', 'delete', 'update_email')", name="action"
        ),
        CheckConstraint(
            "status IN ('pending', 'pushing', 'done', 'failed', 'superseded')", name="status"
        ),
        Index("ix_mailchimp_change_due", "status", "next_attempt_at"),
    )

    id: int | None = Field(default=None, primary_key=True)
    action: str = Field(max_length=16)
    subscriber_hash: str | None = Field(default=None, max_length=32, index=True)
    #: Whose change this is, so that erasure finds every change of theirs, under any address.
    person_id: int | None = Field(default=None, foreign_key="person.id", index=True)
    email: str | None = Field(default=None, max_length=254)
    name: str | None = Field(default=None, max_length=200)
    opt_in_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    status: str = Field(default="pending", max_length=16)
    attempts: int = Field(default=0)
    next_attempt_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    claimed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_error: str | None = Field(default=None, sa_type=Text)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    done_at: datetime | None = Field(default=None, sa_type=UTCDateTime)


class JobState(SQLModel, table=True):
    """A named bookmark a job keeps between runs, such as when Mailchimp was last read."""

    __tablename__ = "job_state"

    key: str = Field(primary_key=True, max_length=64)
    value: str = Field(sa_type=Text)
    updated_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
