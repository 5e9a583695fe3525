"""Signed links: the only code that makes or reads tokens.

A token carries the person's ``public_id``, their ``token_version``, the action, and the
purpose or reference where there is one; never an email address or a name, because
itsdangerous signs but does not encrypt. Each action has its own salt (a token for one
action is worthless for another) and its own maximum age. Secret keys are a list, newest
first, so a key can be retired without breaking the links already sent.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from itsdangerous import BadSignature, SignatureExpired, URLSafeTimedSerializer
from sqlmodel import Session

from consent import loading
from consent.config import Settings
from consent.db import settings_of
from consent.models import Person

ACTIONS = ("manage", "unsubscribe", "confirm", "join", "renew", "confirm_email", "feedback")
_SALT_PREFIX = "consent.link."


class LinkError(Exception):
    """A link that cannot be used. Subclasses say why, so each gets the right page."""

    status = 400


class TamperedLink(LinkError):
    """Signature wrong, text mangled, or made for another action."""


class ExpiredLink(LinkError):
    """Older than the action allows; the person can ask for a new one."""

    status = 410


class RevokedLink(LinkError):
    """The person's links were revoked (new version, erasure); a new one can be asked for."""

    status = 410

    def __init__(self, message: str, *, erased: bool = False) -> None:
        super().__init__(message)
        self.erased = erased


@dataclass(frozen=True)
class LinkClaims:
    public_id: str
    token_version: int
    action: str
    purpose: str | None = None
    ref: int | None = None


def _serializer(settings: Settings, action: str) -> URLSafeTimedSerializer:
    if action not in ACTIONS:
        raise ValueError(f"Unknown link action {action!r}.")
    return URLSafeTimedSerializer(list(reversed(settings.secret_keys)), salt=_SALT_PREFIX + action)


def make_token(
    settings: Settings,
    person: Person,
    action: str,
    *,
    purpose: str | None = None,
    ref: int | None = None,
) -> str:
    """Sign a token for one action on one person's behalf."""
    if person.erased_at is not None:
        raise ValueError("No links are made for an erased person.")
    payload: dict[str, Any] = {"p": person.public_id, "v": person.token_version, "a": action}
    if purpose is not None:
        payload["u"] = purpose
    if ref is not None:
        payload["r"] = ref
    return _serializer(settings, action).dumps(payload)


def read_token(settings: Settings, token: str, action: str) -> LinkClaims:
    """Check signature, action and age; raise TamperedLink or ExpiredLink when they fail."""
    serializer = _serializer(settings, action)
    max_age = settings.link_max_age[action]
    try:
        payload = serializer.loads(token, max_age=max_age)
    except SignatureExpired as exc:
        raise ExpiredLink("This link has expired.") from exc
    except (BadSignature, UnicodeDecodeError, ValueError, TypeError) as exc:
        raise TamperedLink("This link is not valid.") from exc
    if (
        not isinstance(payload, dict)
        or payload.get("a") != action
        or not isinstance(payload.get("p"), str)
        or not isinstance(payload.get("v"), int)
    ):
        raise TamperedLink("This link is not valid.")
    purpose = payload.get("u")
    ref = payload.get("r")
    if (purpose is not None and not isinstance(purpose, str)) or (
        ref is not None and not isinstance(ref, int)
    ):
        raise TamperedLink("This link is not valid.")
    return LinkClaims(payload["p"], payload["v"], action, purpose, ref)


def resolve(session: Session, token: str, action: str) -> tuple[Person, LinkClaims]:
    """Read a token and find its person; a bumped version or an erasure revokes it."""
    claims = read_token(settings_of(session), token, action)
    person = loading.person_by_public_id.get(session, claims.public_id)
    if person is None:
        raise RevokedLink("This link no longer works.")
    if person.erased_at is not None:
        raise RevokedLink("This person's details have been deleted.", erased=True)
    if person.token_version != claims.token_version:
        raise RevokedLink("This link no longer works.")
    return person, claims


def link_url(
    settings: Settings,
    person: Person,
    action: str,
    *,
    purpose: str | None = None,
    ref: int | None = None,
) -> str:
    """The absolute https URL of a signed link, as it goes into an email."""
    token = make_token(settings, person, action, purpose=purpose, ref=ref)
    path = {
        "manage": "/manage/",
        "unsubscribe": "/unsubscribe/",
        "confirm": "/confirm/",
        "join": "/join/",
        "renew": "/renew/",
        "confirm_email": "/confirm-email/",
        "feedback": "/feedback/",
    }[action]
    return f"{settings.base_url}{path}{token}"


def url_for_session(session: Session, person: Person, action: str, **kwargs: Any) -> str:
    return link_url(settings_of(session), person, action, **kwargs)
