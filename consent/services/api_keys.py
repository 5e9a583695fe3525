"""API keys for other council systems: made by an administrator, shown once, revoked at will.

A key reads ``ck_<prefix>_<secret>``. The prefix finds the row and is safe to show; only a
SHA-256 hash of the whole key is stored, so a copy of the database gives no working key.
"""

from __future__ import annotations

import hashlib
import hmac
import re
import secrets
from datetime import datetime, timedelta

from sqlmodel import Session, select

from consent.errors import InvalidInput, NotFound
from consent.models import ApiKey
from consent.models.api_keys import SCOPES
from consent.services import audit
from consent.timeutil import utcnow
from consent.validation import clean_text

_SHAPE = re.compile(r"ck_([0-9a-f]{12})_([A-Za-z0-9_-]{43})")
NAME_MAX = 100

#: How stale ``last_used_at`` may get before a call writes it again: staff need to know
#: whether a key is in use, not every call it made.
USED_EVERY = timedelta(minutes=10)


def _digest(key: str) -> str:
    return hashlib.sha256(key.encode()).hexdigest()


def prefix_of(presented: str) -> str | None:
    """The prefix of something shaped like a key, or None."""
    match = _SHAPE.fullmatch(presented)
    return match.group(1) if match else None


def all_keys(session: Session) -> list[ApiKey]:
    return list(session.exec(select(ApiKey).order_by(ApiKey.revoked_at.is_not(None), ApiKey.id)))


def create(
    session: Session, name: str | None, scopes: list[str], *, actor: str, actor_id: int | None
) -> tuple[ApiKey, str]:
    """A new key for the system ``name``; returns it with the only copy of the secret."""
    cleaned = clean_text(
        name, field="name", label="the name of the system", max_length=NAME_MAX, required=True
    )
    chosen = sorted(set(scopes))
    if not chosen:
        raise InvalidInput("scopes", "Select what the key may do.")
    unknown = [scope for scope in chosen if scope not in SCOPES]
    if unknown:
        raise InvalidInput("scopes", "Select only the permissions listed.")
    prefix = secrets.token_hex(6)
    secret = f"ck_{prefix}_{secrets.token_urlsafe(32)}"
    key = ApiKey(
        name=cleaned or "",
        prefix=prefix,
        secret_hash=_digest(secret),
        scopes=" ".join(chosen),
        created_by_id=actor_id,
    )
    session.add(key)
    session.flush()
    audit.record(
        session,
        "api_key.created",
        actor=actor,
        actor_id=actor_id,
        object_type="api_key",
        object_id=key.id,
        detail={"scopes": chosen},
    )
    return key, secret


def revoke(session: Session, key_id: int, *, actor: str, actor_id: int | None) -> ApiKey:
    """Stop a key working at once. Revoking a revoked key changes nothing."""
    key = session.get(ApiKey, key_id)
    if key is None:
        raise NotFound("We could not find that key.")
    if key.revoked_at is None:
        key.revoked_at = utcnow()
        audit.record(
            session,
            "api_key.revoked",
            actor=actor,
            actor_id=actor_id,
            object_type="api_key",
            object_id=key.id,
        )
    return key


def authenticate(session: Session, presented: str, *, now: datetime | None = None) -> ApiKey | None:
    """The working key ``presented`` names, or None if it is malformed, unknown or revoked."""
    prefix = prefix_of(presented)
    if prefix is None:
        return None
    key = session.exec(select(ApiKey).where(ApiKey.prefix == prefix)).first()
    if key is None or not hmac.compare_digest(key.secret_hash, _digest(presented)):
        return None
    if key.revoked_at is not None:
        return None
    moment = now or utcnow()
    if key.last_used_at is None or moment - key.last_used_at >= USED_EVERY:
        key.last_used_at = moment
    return key
