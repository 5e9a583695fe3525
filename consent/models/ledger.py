"""Purposes, the published notices, and the append-only consent ledger with its current state."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, Index, Text, UniqueConstraint
from sqlmodel import Field, SQLModel

from consent.models.base import UTCDateTime
from consent.timeutil import utcnow

ACTIONS = ("given", "withdrawn", "expired", "renewed")
CHANNELS = (
    "web_form",
    "email_link",
    "one_click_unsubscribe",
    "admin",
    "import",
    "mailchimp_webhook",
    "system",
)
STATUSES = ("given", "withdrawn", "expired")


def _in(column: str, values: tuple[str, ...]) -> str:
    return f"{column} IN ({', '.join(repr(v) for v in values)})"


class Purpose(SQLModel, table=True):
    """One thing a person can consent to, never bundled with another."""

    __tablename__ = "purpose"

    id: int | None = Field(default=None, primary_key=True)
    key: str = Field(max_length=40, unique=True)
    title: str = Field(max_length=200)
    summary: str = Field(sa_type=Text)
    description: str = Field(sa_type=Text)
    lawful_basis: str = Field(sa_type=Text)
    retention: str = Field(sa_type=Text)
    max_age_days: int | None = Field(default=None)
    sort_order: int = Field(default=0)


class Notice(SQLModel, table=True):
    """A published version of a purpose's privacy wording; versions are kept forever."""

    __tablename__ = "notice"
    __table_args__ = (UniqueConstraint("purpose_id", "version"),)

    id: int | None = Field(default=None, primary_key=True)
    purpose_id: int = Field(foreign_key="purpose.id", index=True)
    version: int
    statement: str = Field(sa_type=Text)
    text: str = Field(sa_type=Text)
    text_hash: str = Field(max_length=64)
    published_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)


class ConsentEvent(SQLModel, table=True):
    """One given, withdrawn, expired or renewed consent, hash-chained to the person's previous.

    Rows are never updated or deleted (database triggers refuse it), except that erasure
    may blank ``note``; its keyed digest stays in the chain so verification still holds.
    """

    __tablename__ = "consent_event"
    __table_args__ = (
        UniqueConstraint("person_id", "seq"),
        CheckConstraint(_in("action", ACTIONS), name="action"),
        CheckConstraint(_in("channel", CHANNELS), name="channel"),
    )

    id: int | None = Field(default=None, primary_key=True)
    person_id: int = Field(foreign_key="person.id")
    seq: int
    purpose_id: int = Field(foreign_key="purpose.id")
    notice_id: int = Field(foreign_key="notice.id")
    action: str = Field(max_length=16)
    channel: str = Field(max_length=32)
    actor: str = Field(max_length=100)
    occurred_at: datetime = Field(sa_type=UTCDateTime)
    wording: str = Field(sa_type=Text)
    note: str | None = Field(default=None, sa_type=Text)
    note_digest: str | None = Field(default=None, max_length=64)
    prev_hash: str = Field(max_length=64)
    hash: str = Field(max_length=64, unique=True)


class ConsentState(SQLModel, table=True):
    """The current state per person and purpose, written with each event for fast queries."""

    __tablename__ = "consent_state"
    __table_args__ = (
        CheckConstraint(_in("status", STATUSES), name="status"),
        Index("ix_consent_state_purpose_status", "purpose_id", "status", "changed_at"),
        Index("ix_consent_state_expires_at", "expires_at"),
    )

    person_id: int = Field(foreign_key="person.id", primary_key=True)
    purpose_id: int = Field(foreign_key="purpose.id", primary_key=True)
    status: str = Field(max_length=16)
    notice_id: int = Field(foreign_key="notice.id")
    channel: str = Field(max_length=32)
    given_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    changed_at: datetime = Field(sa_type=UTCDateTime)
    expires_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    last_event_id: int = Field(foreign_key="consent_event.id")
