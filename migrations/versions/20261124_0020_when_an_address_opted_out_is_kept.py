"""when an address opted out of everything is kept after its suppression is lifted

Revision ID: 0020
Revises: 0019
Create Date: 2026-11-24 23:45:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

import consent.models.base

revision: str = "0020"
down_revision: str | None = "0019"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "address_opt_out",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("email_hmac", sqlmodel.sql.sqltypes.AutoString(length=64), nullable=False),
        sa.Column("opted_out_at", consent.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.Column("created_at", consent.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_address_opt_out")),
        sa.UniqueConstraint("email_hmac", name=op.f("uq_address_opt_out_email_hmac")),
    )


def downgrade() -> None:
    op.drop_table("address_opt_out")
