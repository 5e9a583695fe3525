"""Keys that other council systems use to call /api/v1. Only a hash of each secret is kept."""

from __future__ import annotations

from datetime import datetime

from sqlmodel import Field, SQLModel

from consent.models.base import UTCDateTime
from consent.timeutil import utcnow

#: What a key may be allowed to do, with the words staff see when they choose.
SCOPES: dict[str, str] = {
    "consents:read": "Check which purposes a person has agreed to, by email address",
    "reports:read": "Read the anonymised counts in the reports",
}


class ApiKey(SQLModel, table=True):
    """One system's key. ``prefix`` finds the row; the secret itself is never stored."""

    __tablename__ = "api_key"

    id: int | None = Field(default=None, primary_key=True)
    name: str = Field(max_length=100)
    prefix: str = Field(max_length=16, unique=True)
    secret_hash: str = Field(max_length=64)
    scopes: str = Field(max_length=200)
    created_at: datetime = Field(default_factory=utcnow, sa_type=UTCDateTime)
    created_by_id: int | None = Field(default=None, foreign_key="admin_user.id")
    last_used_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    revoked_at: datetime | None = Field(default=None, sa_type=UTCDateTime)

    @property
    def scope_set(self) -> frozenset[str]:
        return frozenset(filter(None, self.scopes.split(" ")))
