"""erased people who declined panel invitations are remembered

Revision ID: 0010
Revises: 0009
Create Date: 2026-11-24 10:51:05.044444
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import consent.models.base

revision: str = "0010"
down_revision: str | None = "0009"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "declined_invitations",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email_hmac", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("declined_at", consent.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", consent.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_declined_invitations")),
        sa.UniqueConstraint("email_hmac", name=op.f("uq_declined_invitations_email_hmac")),
    )


def downgrade() -> None:
    op.drop_table("declined_invitations")
