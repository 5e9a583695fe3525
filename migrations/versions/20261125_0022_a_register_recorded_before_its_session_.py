"""a register recorded before its session started is cleared

Revision ID: 0022
Revises: 0021
Create Date: 2026-11-25 11:00:00.000000
"""

from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

from consent.models.base import UTCDateTime

revision: str = "0022"
down_revision: str | None = "0021"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # The register now opens when its session starts. Nobody can have come to a session
    # still to come, and an agreement to be recorded ticked ahead could outlast a change of
    # mind: what was recorded ahead is cleared, to be recorded on the day.
    attendance = sa.table(
        "attendance",
        sa.column("session_id", sa.Integer),
        sa.column("attended", sa.Boolean),
        sa.column("recording_consent", sa.Boolean),
        sa.column("recording_consent_at", UTCDateTime(timezone=True)),
    )
    panel_session = sa.table(
        "panel_session",
        sa.column("id", sa.Integer),
        sa.column("starts_at", UTCDateTime(timezone=True)),
    )
    coming = sa.select(panel_session.c.id).where(panel_session.c.starts_at > datetime.now(UTC))
    op.get_bind().execute(
        sa.update(attendance)
        .where(attendance.c.session_id.in_(coming))
        .values(attended=None, recording_consent=False, recording_consent_at=None)
    )


def downgrade() -> None:
    """What was cleared is not put back: it should never have been recorded."""
