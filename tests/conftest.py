"""Shared fixtures: a real, migrated database per test, on SQLite or PostgreSQL.

Set ``CONSENT_TEST_DATABASE_URL`` to a PostgreSQL URL to run every database test there
(``.ci/run`` does). Its database is wiped: point it only at a database kept for tests.
"""

from __future__ import annotations

import os
import shutil
from collections.abc import Callable, Iterator
from dataclasses import replace
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text
from sqlmodel import Session

from consent import create_app
from consent.config import Settings, load_settings
from consent.db import Database, make_engine
from consent.schema import upgrade
from consent.services import notices
from tests.fake_mailchimp import FakeMailchimp
from tests.smtp_sink import SmtpServer

PG_URL = os.environ.get("CONSENT_TEST_DATABASE_URL", "").strip()
TEST_KEYS = {
    "secret_keys": ("test-secret-key-0123456789-abcdefghijklmnopqrstuvwxyz",),
    "field_keys": (Fernet.generate_key().decode(),),
    "hash_key": "test-hash-key-0123456789-abcdefghijklmnopqrstuvwxyz",
}


def make_settings(instance: Path, database_url: str, **overrides: object) -> Settings:
    """Test settings that ignore the developer's own CONSENT_* environment."""
    values: dict[str, object] = {
        "instance_path": instance,
        "database_url": database_url,
        "mail_dir": instance / "mail",
        "base_url": "https://consent.test",
        "run_scheduler": False,
        "mail_wake": False,
        "rate_limits": False,
        **TEST_KEYS,
    }
    values.update(overrides)
    return load_settings(environ={"CONSENT_ENV": "test"}, overrides=values)


def _reset_postgres(url: str) -> None:
    engine = make_engine(url, pool=False)
    with engine.begin() as conn:
        conn.execute(text("DROP SCHEMA IF EXISTS public CASCADE"))
        conn.execute(text("CREATE SCHEMA public"))
    engine.dispose()


@pytest.fixture(scope="session")
def backend() -> str:
    return "postgresql" if PG_URL else "sqlite"


@pytest.fixture(scope="session")
def template_db(tmp_path_factory: pytest.TempPathFactory) -> str:
    """Migrate once per run; each test then starts from a copy (SQLite) or a wipe (PostgreSQL)."""
    instance = tmp_path_factory.mktemp("template")
    if PG_URL:
        _reset_postgres(PG_URL)
        upgrade(make_settings(instance, PG_URL))
        return PG_URL
    path = instance / "template.db"
    upgrade(make_settings(instance, f"sqlite:///{path}"))
    engine = make_engine(f"sqlite:///{path}", pool=False)
    with engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    engine.dispose()
    return str(path)


_TRUNCATE_SKIP = {"alembic_version"}


def _fresh_database_url(template: str, tmp_path: Path) -> str:
    if PG_URL:
        engine = make_engine(PG_URL, pool=False)
        with engine.begin() as conn:
            tables = [
                row[0]
                for row in conn.execute(
                    text("SELECT tablename FROM pg_tables WHERE schemaname = 'public'")
                )
                if row[0] not in _TRUNCATE_SKIP and row[0] != "apscheduler_jobs"
            ]
            conn.execute(text(f"TRUNCATE {', '.join(tables)} RESTART IDENTITY CASCADE"))
            conn.execute(text("DROP TABLE IF EXISTS apscheduler_jobs"))
        engine.dispose()
        return PG_URL
    path = tmp_path / "consent.db"
    shutil.copyfile(template, path)
    return f"sqlite:///{path}"


@pytest.fixture
def database_url(template_db: str, tmp_path: Path) -> str:
    url = _fresh_database_url(template_db, tmp_path)
    if PG_URL:
        seed = Database(make_settings(tmp_path, url))
        with seed.transaction() as session:
            notices.sync_from_file(session)
        seed.dispose()
    return url


@pytest.fixture
def settings(tmp_path: Path, database_url: str) -> Settings:
    return make_settings(tmp_path, database_url)


@pytest.fixture
def db(settings: Settings) -> Iterator[Database]:
    database = Database(settings)
    yield database
    database.dispose()


@pytest.fixture
def session(db: Database) -> Iterator[Session]:
    """A session in one open transaction, committed only if the test asks."""
    with db.transaction() as session:
        yield session


@pytest.fixture
def app(settings: Settings) -> Iterator[Flask]:
    application = create_app(settings)
    yield application
    application.extensions["consent.db"].dispose()


@pytest.fixture
def client(app: Flask) -> FlaskClient:
    return app.test_client()


@pytest.fixture
def smtp() -> Iterator[SmtpServer]:
    """A real SMTP server on loopback that keeps every message it accepts."""
    server = SmtpServer().start()
    yield server
    server.stop()


@pytest.fixture
def mailchimp_fake() -> Iterator[FakeMailchimp]:
    fake = FakeMailchimp().start()
    yield fake
    fake.stop()


@pytest.fixture
def configured(settings: Settings) -> Iterator[Callable[..., Database]]:
    """Open the test database with some settings changed: ``configured(mail_backend=...)``."""
    opened: list[Database] = []

    def open_with(**overrides: object) -> Database:
        database = Database(replace(settings, **overrides))
        opened.append(database)
        return database

    yield open_with
    for database in opened:
        database.dispose()


@pytest.fixture
def smtp_settings(smtp: SmtpServer) -> dict[str, object]:
    return {
        "mail_backend": "smtp",
        "smtp_host": "127.0.0.1",
        "smtp_port": smtp.port,
        "smtp_timeout": 5,
    }


@pytest.fixture
def mailchimp_settings(mailchimp_fake: FakeMailchimp) -> dict[str, object]:
    return {
        "mailchimp_api_key": mailchimp_fake.api_key,
        "mailchimp_list_id": mailchimp_fake.list_id,
        "mailchimp_api_url": mailchimp_fake.url,
        "mailchimp_webhook_secret": "hook-secret-0123456789",
    }
