"""an invitation keeps the person while its link works

Revision ID: 0013
Revises: 0012
Create Date: 2026-11-24 13:38:31.184020
"""

from collections.abc import Sequence
from datetime import UTC, datetime, timedelta

import sqlalchemy as sa
from alembic import op

import consent.models.base

revision: str = "0013"
down_revision: str | None = "0012"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


#: How long a join link worked by default, with the hour ``panels.invite`` adds.
JOIN_LINK_LIFE = timedelta(days=30, hours=1)

person = sa.table(
    "person",
    sa.column("id", sa.Integer),
    sa.column("invited_until", consent.models.base.UTCDateTime(timezone=True)),
    sa.column("erased_at", consent.models.base.UTCDateTime(timezone=True)),
    sa.column("invitations_declined_at", consent.models.base.UTCDateTime(timezone=True)),
)
outbox = sa.table(
    "outbox",
    sa.column("person_id", sa.Integer),
    sa.column("template", sa.String),
    sa.column("created_at", consent.models.base.UTCDateTime(timezone=True)),
)


def upgrade() -> None:
    op.add_column(
        "person",
        sa.Column("invited_until", consent.models.base.UTCDateTime(timezone=True), nullable=True),
    )
    # People already invited: held until their latest invitation's link stops working.
    connection = op.get_bind()
    latest = connection.execute(
        sa.select(outbox.c.person_id, sa.func.max(outbox.c.created_at))
        .where(outbox.c.template == "panel_invitation", outbox.c.person_id.is_not(None))
        .group_by(outbox.c.person_id)
    ).all()
    now = datetime.now(UTC)
    for person_id, sent in latest:
        if sent is not None and sent + JOIN_LINK_LIFE > now:
            connection.execute(
                sa.update(person)
                .where(
                    person.c.id == person_id,
                    person.c.erased_at.is_(None),
                    person.c.invitations_declined_at.is_(None),
                )
                .values(invited_until=sent + JOIN_LINK_LIFE)
            )


def downgrade() -> None:
    op.drop_column("person", "invited_until")
