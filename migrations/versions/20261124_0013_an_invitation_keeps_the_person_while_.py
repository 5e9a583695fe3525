"""an invitation keeps the person while its link works

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-24 13:38:31.184020
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

import consent.models.base

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    op.add_column(
        "person",
        sa.Column("invited_until", consent.models.base.UTCDateTime(timezone=True), nullable=True),
    )
    op.execute(
        "UPDATE person SET invited_until = review_at "
        "WHERE review_at IS NOT NULL AND erased_at IS NULL AND EXISTS "
        "(SELECT 1 FROM outbox WHERE outbox.person_id = person.id "
        "AND outbox.template = 'panel_invitation')"
    )


def downgrade() -> None:
    op.drop_column("person", "invited_until")
