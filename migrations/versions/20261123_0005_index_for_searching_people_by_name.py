"""index for searching people by name

Revision ID: 0005
Revises: 0004
Create Date: 2026-11-23 06:21:53.934515
"""

from collections.abc import Sequence

import sqlalchemy as sa
from alembic import op

revision: str = "0005"
down_revision: str | None = "0004"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None


def upgrade() -> None:
    # Autogenerate does not compare expression indexes, so this one is written by hand.
    op.create_index("ix_person_name_lower", "person", [sa.text("lower(name)")])


def downgrade() -> None:
    op.drop_index("ix_person_name_lower", table_name="person")
