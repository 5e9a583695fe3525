"""requests for a new link wait for the mailer

Revision ID: 0012
Revises: 0011
Create Date: 2026-11-24 13:24:24.155535
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import consent.models.base

revision: str = "0012"
down_revision: str | None = "0011"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.create_table(
        "link_request",
        sa.Column("id", sa.Integer(), nullable=False),
        sa.Column("address", sa.Text(), nullable=False),
        sa.Column("requested_at", consent.models.base.UTCDateTime(timezone=True), nullable=False),
        sa.PrimaryKeyConstraint("id", name=op.f("pk_link_request")),
    )


def downgrade() -> None:
    op.drop_table("link_request")
