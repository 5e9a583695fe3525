"""Database triggers that make the ledger and the audit log append-only.

The application never updates or deletes these rows, but a trigger makes the database
itself refuse, so a mistaken script or a compromised admin page cannot quietly rewrite
history. The one permitted change is erasure blanking ``consent_event.note``.
"""

from __future__ import annotations

from sqlalchemy.engine import Connection

#: table -> (columns that must never change, columns that may only be set to NULL)
GUARDED: dict[str, tuple[tuple[str, ...], tuple[str, ...]]] = {
    "consent_event": (
        (
            "id",
            "person_id",
            "seq",
            "purpose_id",
            "notice_id",
            "action",
            "channel",
            "actor",
            "occurred_at",
            "wording",
            "note_digest",
            "prev_hash",
            "hash",
        ),
        ("note",),
    ),
    "audit_event": (
        (
            "id",
            "seq",
            "occurred_at",
            "actor_id",
            "actor",
            "action",
            "object_type",
            "object_id",
            "detail",
            "prev_hash",
            "hash",
        ),
        (),
    ),
}


def _allowed_update(table: str, same: str) -> str:
    frozen, blankable = GUARDED[table]
    terms = [f"NEW.{c} {same} OLD.{c}" for c in frozen]
    terms += [f"(NEW.{c} IS NULL OR NEW.{c} {same} OLD.{c})" for c in blankable]
    return " AND ".join(terms)


def create(conn: Connection) -> None:
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql(
            "CREATE OR REPLACE FUNCTION consent_append_only() RETURNS trigger "
            "LANGUAGE plpgsql AS $$ BEGIN "
            "RAISE EXCEPTION '%% is append-only', TG_TABLE_NAME; END $$"
        )
        for table in GUARDED:
            conn.exec_driver_sql(
                f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
                "FOR EACH ROW EXECUTE FUNCTION consent_append_only()"
            )
            conn.exec_driver_sql(
                f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} FOR EACH ROW "
                f"WHEN (NOT ({_allowed_update(table, 'IS NOT DISTINCT FROM')})) "
                "EXECUTE FUNCTION consent_append_only()"
            )
        return
    for table in GUARDED:
        conn.exec_driver_sql(
            f"CREATE TRIGGER {table}_no_delete BEFORE DELETE ON {table} "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        )
        conn.exec_driver_sql(
            f"CREATE TRIGGER {table}_no_update BEFORE UPDATE ON {table} "
            f"WHEN NOT ({_allowed_update(table, 'IS')}) "
            f"BEGIN SELECT RAISE(ABORT, '{table} is append-only'); END"
        )


def drop(conn: Connection) -> None:
    for table in GUARDED:
        for kind in ("no_delete", "no_update"):
            if conn.dialect.name == "postgresql":
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_{kind} ON {table}")
            else:
                conn.exec_driver_sql(f"DROP TRIGGER IF EXISTS {table}_{kind}")
    if conn.dialect.name == "postgresql":
        conn.exec_driver_sql("DROP FUNCTION IF EXISTS consent_append_only()")
