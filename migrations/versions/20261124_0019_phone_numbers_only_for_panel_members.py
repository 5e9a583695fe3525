"""phone numbers only for panel members

Revision ID: 0019
Revises: 0018
Create Date: 2026-11-24 23:30:00.000000
"""

from collections.abc import Sequence

from alembic import op

revision: str = "0019"
down_revision: str | None = "0018"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # A number saved on the preferences page by someone on no panel, before only members'
    # were kept: it goes, as it would have with their last membership.
    op.execute(
        "UPDATE person SET phone = NULL WHERE phone IS NOT NULL AND id NOT IN "
        "(SELECT person_id FROM panel_membership WHERE left_at IS NULL)"
    )


def downgrade() -> None:
    """The numbers are gone: nothing to put back."""
