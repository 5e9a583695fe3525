"""Settings: safe local defaults, and a production start that refuses to guess keys."""

from __future__ import annotations

import os
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from consent.config import KEY_FILE_NAME, ConfigError, load_settings


def test_local_keys_are_generated_once_and_kept_private(tmp_path: Path) -> None:
    env = {"CONSENT_INSTANCE_PATH": str(tmp_path)}
    first = load_settings(environ=env)
    key_file = tmp_path / KEY_FILE_NAME
    assert stat.S_IMODE(key_file.stat().st_mode) == 0o600
    second = load_settings(environ=env)
    assert first.secret_keys == second.secret_keys and len(first.secret_keys[0]) >= 32
    assert first.field_keys == second.field_keys and first.hash_key == second.hash_key
    assert first.database_url == f"sqlite:///{tmp_path / 'consent.db'}"
    assert first.mail_backend == "file" and first.mail_dir == tmp_path / "mail"
    assert first.run_scheduler is True


def test_production_refuses_to_start_without_explicit_keys(tmp_path: Path) -> None:
    env = {"CONSENT_ENV": "production", "CONSENT_INSTANCE_PATH": str(tmp_path)}
    with pytest.raises(ConfigError) as error:
        load_settings(environ=env)
    message = str(error.value)
    for name in (
        "CONSENT_SECRET_KEYS",
        "CONSENT_FIELD_KEYS",
        "CONSENT_HASH_KEY",
        "CONSENT_DATABASE_URL",
        "CONSENT_BASE_URL",
    ):
        assert name in message
    assert not (tmp_path / KEY_FILE_NAME).exists()


def _production(**changes: str) -> dict[str, str]:
    from cryptography.fernet import Fernet

    return {
        "CONSENT_ENV": "production",
        "CONSENT_SECRET_KEYS": "new-key-" + "n" * 40 + ", old-key-" + "o" * 40,
        "CONSENT_FIELD_KEYS": Fernet.generate_key().decode(),
        "CONSENT_HASH_KEY": "h" * 44,
        "CONSENT_DATABASE_URL": "postgres://app@db.internal/consent",
        "CONSENT_BASE_URL": "https://consent.example.gov.uk/",
        "CONSENT_MAIL_BACKEND": "smtp",
        "CONSENT_SMTP_HOST": "relay.example.gov.uk",
        **changes,
    }


def test_production_with_everything_set_starts_without_the_scheduler(tmp_path: Path) -> None:
    settings = load_settings(environ=_production())
    assert settings.secret_keys == ("new-key-" + "n" * 40, "old-key-" + "o" * 40)
    assert settings.database_url == "postgresql+psycopg://app@db.internal/consent"
    assert settings.base_url == "https://consent.example.gov.uk"
    assert settings.run_scheduler is False


@pytest.mark.parametrize(
    ("changes", "named"),
    [
        ({"CONSENT_MAIL_BACKEND": "file"}, "CONSENT_MAIL_BACKEND must be smtp"),
        ({"CONSENT_MAIL_BACKEND": "console"}, "CONSENT_MAIL_BACKEND must be smtp"),
        ({"CONSENT_SMTP_USERNAME": "consent"}, "CONSENT_SMTP_SECURITY must be starttls or tls"),
    ],
)
def test_production_refuses_mail_that_is_not_delivered_or_not_protected(
    changes: dict[str, str], named: str
) -> None:
    with pytest.raises(ConfigError, match=named):
        load_settings(environ=_production(**changes))
    username = {"CONSENT_SMTP_USERNAME": "consent", "CONSENT_SMTP_SECURITY": "starttls"}
    assert load_settings(environ=_production(**username)).smtp_username == "consent"
    env = {k: v for k, v in _production(**changes).items() if k != "CONSENT_ENV"}
    assert load_settings(environ=env).env == "development", "only production insists"


@pytest.mark.parametrize("address", ["http://consent.example.gov.uk", "consent.example.gov.uk"])
def test_production_refuses_a_base_address_without_https(address: str) -> None:
    with pytest.raises(ConfigError, match="CONSENT_BASE_URL must start with https://"):
        load_settings(environ=_production(CONSENT_BASE_URL=address))


@pytest.mark.parametrize(
    ("name", "value"),
    [
        ("CONSENT_MAIL_BACKEND", "pigeon"),
        ("CONSENT_FIELD_KEYS", "not-a-fernet-key"),
        ("CONSENT_SECRET_KEYS", "short"),
        ("CONSENT_SMTP_PORT", "twenty-five"),
        ("CONSENT_RUN_SCHEDULER", "perhaps"),
        ("CONSENT_ENV", "staging"),
        ("CONSENT_LOG_LEVEL", "loud"),
        ("CONSENT_MAILCHIMP_WEBHOOK_SECRET", "guessable"),
    ],
)
def test_bad_settings_are_named_in_the_error(tmp_path: Path, name: str, value: str) -> None:
    with pytest.raises(ConfigError) as error:
        load_settings(environ={"CONSENT_INSTANCE_PATH": str(tmp_path), name: value})
    assert name in str(error.value) or "Fernet" in str(error.value)


def test_the_command_line_says_why_production_will_not_start(tmp_path: Path) -> None:
    env = {k: v for k, v in os.environ.items() if not k.startswith("CONSENT_")}
    env.update(CONSENT_ENV="production", CONSENT_INSTANCE_PATH=str(tmp_path))
    result = subprocess.run(
        [sys.executable, "-m", "consent.cli", "db", "upgrade"],
        env=env,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode != 0
    assert "Refusing to start in production" in result.stderr
    assert "CONSENT_SECRET_KEYS" in result.stderr
    assert "Traceback" not in result.stderr


def test_the_log_level_setting_governs_the_application_loggers(tmp_path: Path) -> None:
    import logging

    from consent import create_app

    env = {"CONSENT_INSTANCE_PATH": str(tmp_path), "CONSENT_LOG_LEVEL": "warning"}
    create_app(load_settings(environ=env))
    assert not logging.getLogger("consent.access").isEnabledFor(logging.INFO)
    env["CONSENT_LOG_LEVEL"] = "debug"
    create_app(load_settings(environ=env))
    assert logging.getLogger("consent.access").isEnabledFor(logging.DEBUG)
