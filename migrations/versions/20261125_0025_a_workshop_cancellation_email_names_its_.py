"""a workshop cancellation email names its booking

Revision ID: 0025
Revises: 0024
Create Date: 2026-11-25 15:00:00.000000
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0025"
down_revision: str | None = "0024"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

#: The once-only key of a workshop cancellation email was this, a colon, and the booking id.
_KEY = "workshop-cancelled"


def upgrade() -> None:
    # A cancellation email still waiting keeps its bookers' details until it goes; which
    # workshop it is about was read out of its key, and is now read from its booking.
    outbox = sa.table(
        "outbox",
        sa.column("id", sa.Integer),
        sa.column("template", sa.String),
        sa.column("dedupe_key", sa.String),
        sa.column("status", sa.String),
        sa.column("booking_id", sa.Integer),
    )
    connection = op.get_bind()
    waiting = connection.execute(
        sa.select(outbox.c.id, outbox.c.dedupe_key).where(
            outbox.c.status.in_(("queued", "sending")),
            outbox.c.template == "workshop_cancelled",
            outbox.c.booking_id.is_(None),
            outbox.c.dedupe_key.is_not(None),
        )
    ).all()
    for row_id, key in waiting:
        prefix, _, booking = key.partition(":")
        if prefix == _KEY and booking.isdigit():
            connection.execute(
                sa.update(outbox).where(outbox.c.id == row_id).values(booking_id=int(booking))
            )


def downgrade() -> None:
    """Nothing to undo: the column stays, and the key still holds the booking."""
