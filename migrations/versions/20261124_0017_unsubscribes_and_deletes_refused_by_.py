"""unsubscribes and deletes refused by Mailchimp are tried again

Revision ID: 0017
Revises: 0016
Create Date: 2026-11-24 22:00:00.000000
"""

import hashlib
from collections.abc import Sequence
from datetime import UTC, datetime

import sqlalchemy as sa
from alembic import op

import consent.models.base

revision: str = "0017"
down_revision: str | None = "0016"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

change = sa.table(
    "mailchimp_change",
    sa.column("id", sa.Integer),
    sa.column("action", sa.String),
    sa.column("subscriber_hash", sa.String),
    sa.column("status", sa.String),
    sa.column("next_attempt_at", consent.models.base.UTCDateTime(timezone=True)),
)
person = sa.table("person", sa.column("id", sa.Integer), sa.column("email", sa.String))
state = sa.table(
    "consent_state",
    sa.column("person_id", sa.Integer),
    sa.column("purpose_id", sa.Integer),
    sa.column("status", sa.String),
)
purpose = sa.table("purpose", sa.column("id", sa.Integer), sa.column("key", sa.String))


def _md5(email: str) -> str:
    return hashlib.md5(email.lower().encode("utf-8"), usedforsecurity=False).hexdigest()


def upgrade() -> None:
    """Before this release a refused unsubscribe or delete was given up, leaving Mailchimp
    holding the person (an erased one, for a delete). Each goes back in the queue unless a
    later change settles the member, or someone here now agrees at that address (a delete
    is also left alone if anyone here has it: Mailchimp never lets a deleted one back)."""
    connection = op.get_bind()
    refused = connection.execute(
        sa.select(change.c.id, change.c.action, change.c.subscriber_hash).where(
            change.c.status == "failed",
            change.c.action.in_(("unsubscribe", "delete")),
            change.c.subscriber_hash.is_not(None),
        )
    ).all()
    if not refused:
        return
    latest = dict(
        connection.execute(
            sa.select(change.c.subscriber_hash, sa.func.max(change.c.id))
            .where(change.c.subscriber_hash.is_not(None))
            .group_by(change.c.subscriber_hash)
        ).all()
    )
    newsletter = (
        sa.select(state.c.status)
        .join(purpose, purpose.c.id == state.c.purpose_id)
        .where(state.c.person_id == person.c.id, purpose.c.key == "newsletter")
        .scalar_subquery()
    )
    living: dict[str, bool] = {}
    for email, status in connection.execute(
        sa.select(person.c.email, newsletter).where(person.c.email.is_not(None))
    ):
        digest = _md5(email)
        living[digest] = living.get(digest, False) or status == "given"
    again = [
        change_id
        for change_id, action, digest in refused
        if latest[digest] == change_id
        and not living.get(digest, False)
        and (action == "unsubscribe" or digest not in living)
    ]
    if again:
        connection.execute(
            sa.update(change)
            .where(change.c.id.in_(again))
            .values(status="pending", next_attempt_at=datetime.now(UTC))
        )


def downgrade() -> None:
    """Nothing to undo: the changes tried again are ordinary queued changes."""
