"""people can decline panel invitations

Revision ID: 0009
Revises: 0008
Create Date: 2026-11-24 08:29:44.513666
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import consent.models.base

revision: str = "0009"
down_revision: str | None = "0008"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A plain ADD COLUMN: batch mode would copy the person table, and on SQLite it cannot
    # carry over the expression index on lower(name).
    op.add_column(
        "person",
        sa.Column(
            "invitations_declined_at",
            consent.models.base.UTCDateTime(timezone=True),
            nullable=True,
        ),
    )


def downgrade() -> None:
    op.drop_column("person", "invitations_declined_at")
