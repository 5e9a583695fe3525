"""mail names the membership or booking it is about

Revision ID: 0021
Revises: 0020
Create Date: 2026-11-25 09:30:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0021"
down_revision: str | None = "0020"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: Where, in the once-only key of mail about one membership or booking, its id was.
_IN_KEY = {
    "panel_session_invitation": ("membership_id", 2),
    "reconsent_reminder": ("membership_id", 1),
    "workshop_reminder": ("booking_id", 1),
    "workshop_evaluation": ("booking_id", 1),
}


def upgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.add_column(sa.Column("membership_id", sa.Integer(), nullable=True))
        batch_op.add_column(sa.Column("booking_id", sa.Integer(), nullable=True))
    # Mail still waiting learns what it is about, so leaving or cancelling can still stop
    # it; until now that was read back out of its once-only key.
    outbox = sa.table(
        "outbox",
        sa.column("id", sa.Integer),
        sa.column("template", sa.String),
        sa.column("dedupe_key", sa.String),
        sa.column("status", sa.String),
        sa.column("membership_id", sa.Integer),
        sa.column("booking_id", sa.Integer),
    )
    connection = op.get_bind()
    waiting = connection.execute(
        sa.select(outbox.c.id, outbox.c.template, outbox.c.dedupe_key).where(
            outbox.c.status.in_(("queued", "sending")),
            outbox.c.template.in_(list(_IN_KEY)),
            outbox.c.dedupe_key.is_not(None),
        )
    ).all()
    for row_id, template, key in waiting:
        column, place = _IN_KEY[template]
        parts = key.split(":")
        if len(parts) > place and parts[place].isdigit():
            connection.execute(
                sa.update(outbox).where(outbox.c.id == row_id).values({column: int(parts[place])})
            )


def downgrade() -> None:
    with op.batch_alter_table("outbox", schema=None) as batch_op:
        batch_op.drop_column("booking_id")
        batch_op.drop_column("membership_id")
