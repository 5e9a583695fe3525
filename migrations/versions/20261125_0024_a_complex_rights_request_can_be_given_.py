"""a complex rights request can be given two more months

Revision ID: 0024
Revises: 0023
Create Date: 2026-11-25 12:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import consent.models.base

revision: str = "0024"
down_revision: str | None = "0023"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    with op.batch_alter_table("rights_request", schema=None) as batch_op:
        batch_op.add_column(
            sa.Column("extended_at", consent.models.base.UTCDateTime(timezone=True), nullable=True)
        )
        batch_op.add_column(sa.Column("extension_reason", sa.Text(), nullable=True))


def downgrade() -> None:
    with op.batch_alter_table("rights_request", schema=None) as batch_op:
        batch_op.drop_column("extension_reason")
        batch_op.drop_column("extended_at")
