"""Council staff accounts: creation, password hashing and the second factor's secret."""

from __future__ import annotations

import hmac
from datetime import datetime, timedelta

import pyotp
from argon2 import PasswordHasher
from argon2.exceptions import VerificationError
from sqlmodel import Session, select

from consent.crypto import cipher_for
from consent.errors import Conflict, DomainError, InvalidInput
from consent.models import AdminUser
from consent.models.admin_users import ROLES
from consent.services import audit
from consent.timeutil import utcnow
from consent.validation import clean_text, normalise_email

PASSWORD_MIN = 12
_hasher = PasswordHasher()


def actor_label(user_id: int | None) -> str:
    """How a staff account is named as the actor of every event it causes, so that one
    search of the audit log finds all of them; the address is in the account itself."""
    return f"admin:{user_id}"


def hash_password(password: str) -> str:
    """Argon2id: memory-hard, so a stolen table is slow to crack."""
    return _hasher.hash(password)


def check_password_strength(password: str) -> None:
    if not isinstance(password, str) or len(password) < PASSWORD_MIN:
        raise InvalidInput("password", f"Password must be {PASSWORD_MIN} characters or more.")
    if len(password) > 1000:
        raise InvalidInput("password", "Password must be 1000 characters or fewer.")


def create_admin(
    session: Session,
    email: str,
    role: str,
    password: str,
    *,
    name: str | None = None,
    actor: str = "cli",
    actor_id: int | None = None,
    change_due: bool = False,
) -> tuple[AdminUser, str]:
    """Create a staff account; returns it with its one-time-code secret for enrolment.

    ``change_due`` is for a password someone else chose (an administrator's new account):
    its owner replaces it at their first sign-in.
    """
    if role not in ROLES:
        raise InvalidInput("role", f"Role must be one of: {', '.join(ROLES)}.")
    normalised = normalise_email(email)
    check_password_strength(password)
    cleaned_name = clean_text(name, field="name", label="a name") or ""
    if session.exec(select(AdminUser).where(AdminUser.email == normalised)).first():
        raise Conflict("There is already a staff account with that email address.")
    secret = pyotp.random_base32()
    user = AdminUser(
        email=normalised,
        name=cleaned_name,
        role=role,
        password_hash=hash_password(password),
        totp_secret=cipher_for(session).encrypt(secret),
        password_change_due=change_due,
    )
    session.add(user)
    session.flush()
    audit.record(
        session,
        "admin_user.created",
        actor=actor,
        actor_id=actor_id,
        object_type="admin_user",
        object_id=user.id,
        detail={"role": role},
    )
    return user, secret


def _record(
    session: Session, action: str, *, by: AdminUser, about: AdminUser | None = None
) -> None:
    """An audit event caused by a staff account, about an account when it names one."""
    audit.record(
        session,
        action,
        actor=actor_label(by.id),
        actor_id=by.id,
        object_type="admin_user" if about is not None else None,
        object_id=about.id if about is not None else None,
    )


def change_password(session: Session, user: AdminUser, current: str, new: str, again: str) -> None:
    """The owner replaces their password; every other session of theirs ends."""
    session.refresh(user, with_for_update={"key_share": True})
    try:
        _verifier.verify(user.password_hash, current or "")
    except VerificationError:
        raise InvalidInput("current", "Your current password is not right.") from None
    try:
        check_password_strength(new)
    except InvalidInput as error:
        raise InvalidInput("new", error.message) from None
    if again != new:
        raise InvalidInput("again", "Enter the same new password twice.")
    if new == current:
        raise InvalidInput("new", "Choose a new password, not the one you have now.")
    user.password_hash = hash_password(new)
    user.password_change_due = False
    user.session_version += 1
    _record(session, "admin.password_changed", by=user, about=user)


def totp_uri(user: AdminUser, secret: str, issuer: str) -> str:
    return pyotp.TOTP(secret).provisioning_uri(name=user.email, issuer_name=issuer)


MAX_FAILURES = 5
LOCKOUT = timedelta(minutes=15)
_verifier = PasswordHasher()


class SignInRefused(DomainError):
    """Wrong details, or locked out. The message never says which part was wrong."""


GENERIC = "The email address, password or code is not right."


def _locked(user: AdminUser, now: datetime) -> bool:
    return user.locked_until is not None and user.locked_until > now


def _fail(user: AdminUser, now: datetime) -> None:
    user.failed_logins += 1
    if user.failed_logins >= MAX_FAILURES:
        user.locked_until = now + LOCKOUT
        user.failed_logins = 0


def check_password(session: Session, email: str, password: str) -> AdminUser:
    """First step of signing in. Locks the account for a while after repeated failures.

    The account's row is locked while it is checked (both steps), so guesses sent at once
    are counted one after another: otherwise thirty of them counted as two, and one code
    could be used twice.
    """
    now = utcnow()
    try:
        address = normalise_email(email)
    except InvalidInput as exc:
        raise SignInRefused(GENERIC) from exc
    user = session.exec(
        select(AdminUser).where(AdminUser.email == address).with_for_update(key_share=True)
    ).first()
    if user is None or not user.active:
        _verifier.hash("timing-equaliser")
        raise SignInRefused(GENERIC)
    if _locked(user, now):
        raise SignInRefused(
            "This account is locked after too many attempts. Try again in 15 minutes."
        )
    try:
        _verifier.verify(user.password_hash, password or "")
    except VerificationError:
        _fail(user, now)
        _record(session, "admin.sign_in_failed", by=user)
        raise SignInRefused(GENERIC) from None
    if _verifier.check_needs_rehash(user.password_hash):
        user.password_hash = hash_password(password)
    return user


def check_code(session: Session, user: AdminUser, code: str) -> AdminUser:
    """Second step: a one-time code from the authenticator app, each usable once."""
    session.refresh(user, with_for_update={"key_share": True})
    now = utcnow()
    if _locked(user, now):
        raise SignInRefused(
            "This account is locked after too many attempts. Try again in 15 minutes."
        )
    secret = cipher_for(session).decrypt(user.totp_secret or "")
    totp = pyotp.TOTP(secret)
    cleaned = "".join((code or "").split())
    step = None
    if cleaned.isascii() and cleaned.isdigit() and len(cleaned) == 6:
        for offset in (-1, 0, 1):
            at = now + timedelta(seconds=30 * offset)
            if hmac.compare_digest(totp.at(at), cleaned):
                step = totp.timecode(at)
                break
    if step is None or (user.totp_last_step is not None and step <= user.totp_last_step):
        _fail(user, now)
        _record(session, "admin.code_failed", by=user)
        raise SignInRefused(GENERIC)
    user.totp_last_step = step
    user.failed_logins = 0
    user.locked_until = None
    user.last_login_at = now
    if user.totp_confirmed_at is None:
        user.totp_confirmed_at = now
        _record(session, "admin.totp_enrolled", by=user)
    _record(session, "admin.signed_in", by=user)
    return user


def enrolment_secret(session: Session, user: AdminUser) -> str | None:
    """Shown once, until the first code is confirmed; never again after."""
    if user.totp_confirmed_at is not None:
        return None
    return cipher_for(session).decrypt(user.totp_secret or "")


def get(session: Session, user_id: int) -> AdminUser | None:
    if not isinstance(user_id, int) or not 0 < user_id <= 2**31 - 1:
        return None
    return session.get(AdminUser, user_id)


def all_users(session: Session) -> list[AdminUser]:
    return list(session.exec(select(AdminUser).order_by(AdminUser.email)))


def end_sessions(session: Session, user_id: int) -> None:
    """Signing out: the session is a signed cookie, so only a new version stops a copy of it
    (in another browser, or taken from this one) from working on."""
    user = session.get(AdminUser, user_id)
    if user is not None:
        user.session_version += 1


def set_active(session: Session, user: AdminUser, active: bool, *, actor: AdminUser) -> None:
    if user.id == actor.id and not active:
        raise InvalidInput("active", "You cannot deactivate your own account.")
    user.active = active
    user.session_version += 1
    _record(
        session,
        "admin_user.activated" if active else "admin_user.deactivated",
        by=actor,
        about=user,
    )


def reset_second_factor(session: Session, user: AdminUser, *, actor: AdminUser) -> str:
    """A lost phone: a new secret, to be enrolled at the next sign-in."""
    secret = pyotp.random_base32()
    user.totp_secret = cipher_for(session).encrypt(secret)
    user.totp_confirmed_at = None
    user.totp_last_step = None
    user.session_version += 1
    _record(session, "admin_user.totp_reset", by=actor, about=user)
    return secret
