"""Settings from ``CONSENT_*`` environment variables, with local defaults that just work.

A production start (``CONSENT_ENV=production``) never invents keys: losing a generated key
would break every link in flight and every encrypted field, so production must say them.
"""

from __future__ import annotations

import base64
import contextlib
import json
import os
import secrets
import tempfile
from collections.abc import Mapping
from dataclasses import dataclass, field, fields, replace
from pathlib import Path
from typing import Any

from cryptography.fernet import Fernet

REPO_ROOT = Path(__file__).resolve().parent.parent
DEFAULT_INSTANCE = REPO_ROOT / "instance"
KEY_FILE_NAME = "local-keys.json"

#: How long each kind of signed link stays valid, in seconds.
DEFAULT_LINK_MAX_AGE: dict[str, int] = {
    "manage": 60 * 60 * 24 * 90,
    "unsubscribe": 60 * 60 * 24 * 365,
    "confirm": 60 * 60 * 24 * 7,
    "join": 60 * 60 * 24 * 30,
    "renew": 60 * 60 * 24 * 60,
    "confirm_email": 60 * 60 * 24 * 2,
    "feedback": 60 * 60 * 24 * 30,
}

ENVIRONMENTS = ("development", "test", "production")
MAIL_BACKENDS = ("file", "smtp", "console")


class ConfigError(RuntimeError):
    """The settings cannot run the service safely; the message says what to set."""


def _split(value: str | None) -> list[str]:
    return [part.strip() for part in (value or "").split(",") if part.strip()]


def _flag(name: str, value: str | None, default: bool) -> bool:
    if value is None or value.strip() == "":
        return default
    lowered = value.strip().lower()
    if lowered in {"1", "true", "yes", "on"}:
        return True
    if lowered in {"0", "false", "no", "off"}:
        return False
    raise ConfigError(f"{name} must be on or off, got {value!r}.")


def _int(environ: Mapping[str, str], name: str, default: int) -> int:
    raw = environ.get(name)
    if raw is None or raw.strip() == "":
        return default
    try:
        return int(raw)
    except ValueError as exc:
        raise ConfigError(f"{name} must be a whole number, got {raw!r}.") from exc


LOG_LEVELS = ("DEBUG", "INFO", "WARNING", "ERROR")


def _log_level(raw: str | None) -> str:
    level = (raw or "INFO").strip().upper()
    if level not in LOG_LEVELS:
        raise ConfigError(f"CONSENT_LOG_LEVEL must be one of {', '.join(LOG_LEVELS)}, got {raw!r}.")
    return level


@dataclass(frozen=True)
class Settings:
    """Everything the application reads from its environment, resolved once at start."""

    env: str = "development"
    instance_path: Path = DEFAULT_INSTANCE
    database_url: str = ""
    secret_keys: tuple[str, ...] = ()
    field_keys: tuple[str, ...] = ()
    hash_key: str = ""
    base_url: str = "http://127.0.0.1:5000"
    council_name: str = "Example Borough Council"
    service_name: str = "Family Hub consent and panels"
    mail_backend: str = "file"
    mail_dir: Path = DEFAULT_INSTANCE / "mail"
    mail_from: str = "Family Hubs <familyhubs@example.gov.uk>"
    mail_reply_to: str = ""
    mail_wake: bool = True
    smtp_host: str = "localhost"
    smtp_port: int = 25
    smtp_username: str = ""
    smtp_password: str = ""
    smtp_security: str = "none"
    smtp_timeout: int = 30
    mailchimp_api_key: str = ""
    mailchimp_server: str = ""
    mailchimp_list_id: str = ""
    mailchimp_api_url: str = ""
    mailchimp_webhook_secret: str = ""
    redis_url: str = ""
    rate_limits: bool = True
    trusted_proxies: int = 0
    run_scheduler: bool = True
    scheduler_tick: int | None = None
    scheduler_poll: int = 15
    link_max_age: Mapping[str, int] = field(default_factory=lambda: dict(DEFAULT_LINK_MAX_AGE))
    workshop_keep_days: int = 30
    mail_body_keep_days: int = 7
    retention_batch_size: int = 5000
    log_level: str = "INFO"

    @property
    def is_production(self) -> bool:
        return self.env == "production"

    def with_overrides(self, overrides: Mapping[str, Any]) -> Settings:
        """Return a copy with some settings replaced; unknown names are a mistake, not a no-op."""
        known = {f.name for f in fields(self)}
        unknown = set(overrides) - known
        if unknown:
            raise ConfigError(f"Unknown settings: {', '.join(sorted(unknown))}.")
        return replace(self, **dict(overrides))


def normalise_database_url(url: str) -> str:
    """Point plain PostgreSQL URLs at psycopg 3, the only PostgreSQL driver installed."""
    for prefix in ("postgres://", "postgresql://"):
        if url.startswith(prefix):
            return "postgresql+psycopg://" + url[len(prefix) :]
    return url


def load_settings(
    environ: Mapping[str, str] | None = None, overrides: Mapping[str, Any] | None = None
) -> Settings:
    """Read settings from the environment, fill local defaults, and check them for safety."""
    env_map = dict(os.environ if environ is None else environ)
    overrides = dict(overrides or {})
    env = overrides.get("env") or env_map.get("CONSENT_ENV", "development").strip().lower()
    if env not in ENVIRONMENTS:
        raise ConfigError(f"CONSENT_ENV must be one of {', '.join(ENVIRONMENTS)}, got {env!r}.")
    instance = Path(
        overrides.get("instance_path") or env_map.get("CONSENT_INSTANCE_PATH") or DEFAULT_INSTANCE
    )
    production = env == "production"

    secret_keys = tuple(_split(env_map.get("CONSENT_SECRET_KEYS")))
    field_keys = tuple(_split(env_map.get("CONSENT_FIELD_KEYS")))
    hash_key = env_map.get("CONSENT_HASH_KEY", "").strip()
    database_url = env_map.get("CONSENT_DATABASE_URL", "").strip()

    if production:
        missing = [
            name
            for name, value in (
                ("CONSENT_SECRET_KEYS", secret_keys or overrides.get("secret_keys")),
                ("CONSENT_FIELD_KEYS", field_keys or overrides.get("field_keys")),
                ("CONSENT_HASH_KEY", hash_key or overrides.get("hash_key")),
                ("CONSENT_DATABASE_URL", database_url or overrides.get("database_url")),
                ("CONSENT_BASE_URL", env_map.get("CONSENT_BASE_URL") or overrides.get("base_url")),
            )
            if not value
        ]
        if missing:
            raise ConfigError(
                "Refusing to start in production without "
                + ", ".join(missing)
                + ". Set them in the environment: keys are never generated in production, "
                "because a lost key breaks every link in flight and every encrypted field. "
                "Generate one with: consent keys generate"
            )
    elif not (secret_keys and field_keys and hash_key) and not {
        "secret_keys",
        "field_keys",
        "hash_key",
    } <= set(overrides):
        local = load_or_create_local_keys(instance)
        secret_keys = secret_keys or (local["secret_key"],)
        field_keys = field_keys or (local["field_key"],)
        hash_key = hash_key or local["hash_key"]

    if not database_url:
        database_url = f"sqlite:///{instance / 'consent.db'}"

    max_age = dict(DEFAULT_LINK_MAX_AGE)
    for action in DEFAULT_LINK_MAX_AGE:
        max_age[action] = _int(env_map, f"CONSENT_LINK_MAX_AGE_{action.upper()}", max_age[action])

    mail_backend = env_map.get("CONSENT_MAIL_BACKEND", "file").strip().lower()
    if mail_backend not in MAIL_BACKENDS:
        raise ConfigError(
            f"CONSENT_MAIL_BACKEND must be one of {', '.join(MAIL_BACKENDS)}, got {mail_backend!r}."
        )
    smtp_security = env_map.get("CONSENT_SMTP_SECURITY", "none").strip().lower()
    if smtp_security not in {"none", "starttls", "tls"}:
        raise ConfigError("CONSENT_SMTP_SECURITY must be none, starttls or tls.")

    settings = Settings(
        env=env,
        instance_path=instance,
        database_url=normalise_database_url(database_url),
        secret_keys=secret_keys,
        field_keys=field_keys,
        hash_key=hash_key,
        base_url=env_map.get("CONSENT_BASE_URL", Settings.base_url).rstrip("/"),
        council_name=env_map.get("CONSENT_COUNCIL_NAME", Settings.council_name),
        service_name=env_map.get("CONSENT_SERVICE_NAME", Settings.service_name),
        mail_backend=mail_backend,
        mail_dir=Path(env_map.get("CONSENT_MAIL_DIR") or instance / "mail"),
        mail_from=env_map.get("CONSENT_MAIL_FROM", Settings.mail_from),
        mail_reply_to=env_map.get("CONSENT_MAIL_REPLY_TO", ""),
        mail_wake=_flag("CONSENT_MAIL_WAKE", env_map.get("CONSENT_MAIL_WAKE"), default=True),
        smtp_host=env_map.get("CONSENT_SMTP_HOST", Settings.smtp_host),
        smtp_port=_int(env_map, "CONSENT_SMTP_PORT", Settings.smtp_port),
        smtp_username=env_map.get("CONSENT_SMTP_USERNAME", ""),
        smtp_password=env_map.get("CONSENT_SMTP_PASSWORD", ""),
        smtp_security=smtp_security,
        smtp_timeout=_int(env_map, "CONSENT_SMTP_TIMEOUT", Settings.smtp_timeout),
        mailchimp_api_key=env_map.get("CONSENT_MAILCHIMP_API_KEY", ""),
        mailchimp_server=env_map.get("CONSENT_MAILCHIMP_SERVER", ""),
        mailchimp_list_id=env_map.get("CONSENT_MAILCHIMP_LIST_ID", ""),
        mailchimp_api_url=env_map.get("CONSENT_MAILCHIMP_API_URL", ""),
        mailchimp_webhook_secret=env_map.get("CONSENT_MAILCHIMP_WEBHOOK_SECRET", ""),
        redis_url=env_map.get("CONSENT_REDIS_URL", ""),
        rate_limits=_flag("CONSENT_RATE_LIMITS", env_map.get("CONSENT_RATE_LIMITS"), default=True),
        trusted_proxies=_int(env_map, "CONSENT_TRUSTED_PROXIES", 0),
        run_scheduler=_flag(
            "CONSENT_RUN_SCHEDULER",
            env_map.get("CONSENT_RUN_SCHEDULER"),
            default=env == "development",
        ),
        link_max_age=max_age,
        scheduler_tick=_int(env_map, "CONSENT_SCHEDULER_TICK", 0) or None,
        scheduler_poll=_int(env_map, "CONSENT_SCHEDULER_POLL", 15),
        workshop_keep_days=_int(env_map, "CONSENT_WORKSHOP_KEEP_DAYS", 30),
        mail_body_keep_days=_int(env_map, "CONSENT_MAIL_BODY_KEEP_DAYS", 7),
        retention_batch_size=_int(env_map, "CONSENT_RETENTION_BATCH_SIZE", 5000),
        log_level=_log_level(env_map.get("CONSENT_LOG_LEVEL")),
    )
    if overrides:
        if "database_url" in overrides:
            overrides["database_url"] = normalise_database_url(overrides["database_url"])
        settings = settings.with_overrides(overrides)
    if settings.is_production and not settings.base_url.lower().startswith("https://"):
        raise ConfigError(
            "CONSENT_BASE_URL must start with https:// in production, because every link "
            "and List-Unsubscribe header in the emails is built from it; "
            f"it is {settings.base_url!r}."
        )
    if settings.is_production:
        check_production_mail(settings)
    check_keys(settings)
    return settings


def check_production_mail(settings: Settings) -> None:
    """Mail that is never delivered fails parents silently, and leaves live links on disk
    or in logs; a relay password sent in the clear can be read on the way."""
    if settings.mail_backend != "smtp":
        raise ConfigError(
            "CONSENT_MAIL_BACKEND must be smtp in production: the "
            f"{settings.mail_backend} backend delivers nothing and keeps every email, links "
            "included, on disk or in the logs."
        )
    if settings.smtp_username and settings.smtp_security == "none":
        raise ConfigError(
            "CONSENT_SMTP_SECURITY must be starttls or tls in production when "
            "CONSENT_SMTP_USERNAME is set, or the relay password is sent unencrypted."
        )


#: The webhook's secret is in its address; anyone who guesses it can unsubscribe people.
WEBHOOK_SECRET_MIN = 20


def check_keys(settings: Settings) -> None:
    """Fail at start, not at the first encrypted write, when a key is unusable."""
    if not settings.secret_keys or any(len(k) < 32 for k in settings.secret_keys):
        raise ConfigError("Each of CONSENT_SECRET_KEYS must be at least 32 characters long.")
    if not settings.hash_key or len(settings.hash_key) < 32:
        raise ConfigError("CONSENT_HASH_KEY must be at least 32 characters long.")
    if 0 < len(settings.mailchimp_webhook_secret) < WEBHOOK_SECRET_MIN:
        raise ConfigError(
            f"CONSENT_MAILCHIMP_WEBHOOK_SECRET must be at least {WEBHOOK_SECRET_MIN} characters "
            "long: it is all that shows a webhook comes from Mailchimp. "
            "Generate one with: python -c 'import secrets; print(secrets.token_urlsafe(24))'"
        )
    if not settings.field_keys:
        raise ConfigError("CONSENT_FIELD_KEYS must hold at least one Fernet key.")
    for key in settings.field_keys:
        try:
            Fernet(key.encode())
        except (ValueError, TypeError) as exc:
            raise ConfigError(
                "CONSENT_FIELD_KEYS holds a value that is not a Fernet key "
                "(32 url-safe base64-encoded bytes). Generate one with: consent keys generate"
            ) from exc


def new_local_keys() -> dict[str, str]:
    return {
        "secret_key": secrets.token_urlsafe(48),
        "field_key": Fernet.generate_key().decode(),
        "hash_key": base64.urlsafe_b64encode(secrets.token_bytes(32)).decode(),
    }


def load_or_create_local_keys(instance: Path) -> dict[str, str]:
    """Keep generated keys under ``instance/`` (mode 0600) so links survive a restart."""
    instance.mkdir(parents=True, exist_ok=True)
    path = instance / KEY_FILE_NAME
    if not path.exists():
        fd, tmp = tempfile.mkstemp(dir=instance, prefix=".keys-")
        try:
            with os.fdopen(fd, "w") as handle:
                json.dump(new_local_keys(), handle, indent=2)
            os.chmod(tmp, 0o600)
            with contextlib.suppress(FileExistsError):
                os.link(tmp, path)
        finally:
            os.unlink(tmp)
    data = json.loads(path.read_text())
    return {k: str(data[k]) for k in ("secret_key", "field_key", "hash_key")}
