"""Anonymous counts, recorded when things happen, so erasing people never changes a report."""

from __future__ import annotations

from sqlalchemy import UniqueConstraint
from sqlmodel import Field, SQLModel


class StatCounter(SQLModel, table=True):
    """How many times ``metric`` happened in ``period`` for a scope and a dimension value."""

    __tablename__ = "stat_counter"
    __table_args__ = (
        UniqueConstraint(
            "period", "metric", "scope", "dimension", "value", name="uq_stat_counter_dims"
        ),
    )

    id: int | None = Field(default=None, primary_key=True)
    period: str = Field(max_length=7)
    metric: str = Field(max_length=64)
    scope: str = Field(default="all", max_length=64)
    dimension: str = Field(default="all", max_length=64)
    value: str = Field(default="all", max_length=100)
    count: int = Field(default=0)
