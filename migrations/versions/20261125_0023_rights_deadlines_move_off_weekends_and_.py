"""rights deadlines move off weekends and bank holidays

Revision ID: 0023
Revises: 0022
Create Date: 2026-11-25 11:30:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op
from holidays import country_holidays

from consent.models.base import UTCDateTime
from consent.timeutil import LONDON

revision: str = "0023"
down_revision: str | None = "0022"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A deadline logged before this fell on the corresponding date even at a weekend or on
    # a bank holiday, where the ICO gives until the next working day: the dashboard called
    # such requests overdue early, and a report of late answers would count them late.
    bank_holidays = country_holidays("GB", subdiv="ENG")
    table = sa.table(
        "rights_request", sa.column("id", sa.Integer), sa.column("due_at", UTCDateTime())
    )
    connection = op.get_bind()
    for row_id, due_at in connection.execute(sa.select(table.c.id, table.c.due_at)).all():
        due = due_at.astimezone(LONDON)
        day = due.date()
        while day.weekday() >= 5 or day in bank_holidays:
            day += timedelta(days=1)
        if day != due.date():
            moved = datetime.combine(day, due.time(), tzinfo=LONDON).astimezone(UTC)
            connection.execute(sa.update(table).where(table.c.id == row_id).values(due_at=moved))


def downgrade() -> None:
    """The corresponding dates are not put back: they were too early."""
