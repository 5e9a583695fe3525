"""Proof that retention ran: one row per sweep."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy import Index, Text
from sqlmodel import Field, SQLModel

from consent.models.base import UTCDateTime


class RetentionRun(SQLModel, table=True):
    __tablename__ = "retention_run"

    id: int | None = Field(default=None, primary_key=True)
    started_at: datetime = Field(sa_type=UTCDateTime, index=True)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    duration_ms: int | None = Field(default=None)
    dry_run: bool = Field(default=False)
    trigger: str = Field(default="schedule", max_length=32)
    removed: str = Field(default="{}", sa_type=Text)
    error: str | None = Field(default=None, sa_type=Text)


class JobRun(SQLModel, table=True):
    """One run of one scheduled job: proof that background work happened, and where."""

    __tablename__ = "job_run"
    __table_args__ = (Index("ix_job_run_job_started", "job", "started_at"),)

    id: int | None = Field(default=None, primary_key=True)
    job: str = Field(max_length=64)
    runner: str = Field(max_length=100)
    started_at: datetime = Field(sa_type=UTCDateTime)
    finished_at: datetime | None = Field(default=None, sa_type=UTCDateTime)
    status: str = Field(default="running", max_length=16)
    detail: str | None = Field(default=None, sa_type=Text)
