"""people are searched by a case-folded name

Revision ID: 0011
Revises: 0010
Create Date: 2026-11-24 10:43:11.785039
"""

from collections.abc import Sequence

import sqlalchemy as sa
import sqlmodel
from alembic import op

revision: str = "0011"
down_revision: str | None = "0010"
branch_labels: str | Sequence[str] | None = None
depends_on: str | Sequence[str] | None = None

BATCH = 10_000

person = sa.table(
    "person",
    sa.column("id", sa.Integer),
    sa.column("name", sa.String),
    sa.column("name_key", sa.String),
)


def upgrade() -> None:
    # Plain ADD COLUMN: batch mode would copy the person table, and on SQLite it cannot
    # carry over the expression index on lower(name).
    op.add_column(
        "person",
        sa.Column("name_key", sqlmodel.sql.sqltypes.AutoString(length=600), nullable=True),
    )
    # Filled in Python, as the application does: SQLite's lower() only folds ASCII.
    connection = op.get_bind()
    fill = (
        sa.update(person)
        .where(person.c.id == sa.bindparam("person_id"))
        .values(name_key=sa.bindparam("key"))
    )
    after = 0
    while True:
        rows = connection.execute(
            sa.select(person.c.id, person.c.name)
            .where(person.c.id > after, person.c.name.is_not(None))
            .order_by(person.c.id)
            .limit(BATCH)
        ).all()
        if not rows:
            break
        connection.execute(fill, [{"person_id": id_, "key": name.casefold()} for id_, name in rows])
        after = rows[-1][0]
    op.create_index("ix_person_name_key", "person", ["name_key"], unique=False)
    op.drop_index("ix_person_name_lower", table_name="person")


def downgrade() -> None:
    op.create_index("ix_person_name_lower", "person", [sa.text("lower(name)")])
    op.drop_index("ix_person_name_key", table_name="person")
    op.drop_column("person", "name_key")
