"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import inspect
from sqlmodel import SQLModel

import consent.models  # noqa: F401
from consent.config import Settings
from consent.db import make_engine
from consent.schema import FOREIGN_TABLES, alembic_config, include_object, upgrade


def _differences(url: str) -> list:
    engine = make_engine(url, pool=False)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_object": include_object,
                },
            )
            return compare_metadata(context, SQLModel.metadata)
    finally:
        engine.dispose()


def test_models_and_migrations_agree(settings: Settings) -> None:
    assert _differences(settings.database_url) == []


def test_every_model_table_exists(settings: Settings) -> None:
    engine = make_engine(settings.database_url, pool=False)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(SQLModel.metadata.tables) <= tables


def test_downgrade_to_nothing_and_up_again(settings: Settings) -> None:
    config = alembic_config(settings.database_url)
    command.downgrade(config, "base")
    engine = make_engine(settings.database_url, pool=False)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version", *FOREIGN_TABLES}
    engine.dispose()
    upgrade(settings)
    assert _differences(settings.database_url) == []
