"""Council staff who use the admin pages, and their roles."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import CheckConstraint, false
from sqlmodel import Field, SQLModel

from consent.models.base import UTCDateTime
from consent.timeutil import utcnow

ROLES = ("coordinator", "dpo", "admin")


class AdminUser(SQLModel, table=True):
    __tablename__ = "admin_user"
    __table_args__ = (CheckConstraint("role IN ('coordinator', 'dpo', 'admin')", name="role"),)

    id: int | None = Field(default=None, primary_key=True)
    email: str = Field(max_length=254, unique=True)
    name: str = Field(default="", max_length=200)
    role: str = Field(max_length=16)
    password_hash: str = Field(max_length=200)
    totp_secret: str | None = Field(default=None, max_length=300)
    totp_confirmed_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    totp_last_step: int | None = Field(default=None)
    failed_logins: int = Field(default=0)
    locked_until: datetime | None = Field(default=None, sa_type=UTCDateTime)
    session_version: int = Field(default=1)
    active: bool = Field(default=True)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    last_login_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    #: The password was chosen by an administrator: its owner must replace it before
    #: anything else, so that no one else knows a working password for the account.
    password_change_due: bool = Field(default=False, sa_column_kwargs={"server_default": false()})
