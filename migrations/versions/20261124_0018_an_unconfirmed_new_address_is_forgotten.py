"""an unconfirmed new address is forgotten when its link expires

Revision ID: 0018
Revises: 0017
Create Date: 2026-11-24 23:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import consent.models.base

revision: str = "0018"
down_revision: str | None = "0017"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "person",
        sa.Column(
            "pending_email_at", consent.models.base.UTCDateTime(timezone=True), nullable=True
        ),
    )
    # An address asked for before this was recorded counts from the record's last change,
    # the nearest thing kept to when it was asked for.
    op.execute("UPDATE person SET pending_email_at = updated_at WHERE pending_email IS NOT NULL")


def downgrade() -> None:
    op.drop_column("person", "pending_email_at")
