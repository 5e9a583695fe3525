"""Bringing a database to the current schema (Alembic) and seeding purposes and notices."""

from __future__ import annotations

from alembic import command
from alembic.config import Config

from consent.config import REPO_ROOT, Settings
from consent.db import Database
from consent.services import notices

#: Tables that live in the database but belong to a library, not to our models.
FOREIGN_TABLES = frozenset({"apscheduler_jobs"})


def include_object(
    obj: object, name: str | None, type_: str, reflected: bool, compare_to: object
) -> bool:
    """Leave APScheduler's job store table out of Alembic's comparisons."""
    return not (type_ == "table" and name in FOREIGN_TABLES)


def alembic_config(database_url: str) -> Config:
    config = Config(str(REPO_ROOT / "alembic.ini"))
    config.set_main_option("script_location", str(REPO_ROOT / "migrations"))
    config.attributes["database_url"] = database_url
    return config


def upgrade(settings: Settings, revision: str = "head") -> list[str]:
    """Apply migrations, then load purposes; returns a line per notice version published."""
    command.upgrade(alembic_config(settings.database_url), revision)
    database = Database(settings)
    try:
        with database.transaction() as session:
            published = notices.sync_from_file(session)
            keys = {p.id: p.key for p in notices.all_purposes(session)}
            return [
                f"{keys[n.purpose_id]}: published notice version {n.version}" for n in published
            ]
    finally:
        database.dispose()
