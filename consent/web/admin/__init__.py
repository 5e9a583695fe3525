"""The admin area: coordinators run panels and workshops; the DPO proves consent, answers
rights requests and sees special category data; admins manage staff accounts.

Every route states the roles that may use it and is checked on the server. Sign-in takes
a password and a one-time code; a session ends after 30 minutes without activity.
"""

from __future__ import annotations

import functools
import time
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any, TypeVar

from flask import Blueprint, Flask, Response, abort, g, redirect, request, session, url_for
from flask_login import LoginManager, UserMixin, current_user, logout_user

from consent.services import admin_users, audit
from consent.validation import whole_number
from consent.web import database
from consent.web.security import limiter

bp = Blueprint("admin", __name__, url_prefix="/admin")
login_manager = LoginManager()
IDLE_SECONDS = 30 * 60
#: However busy, staff sign in again after a working day (ASVS 3.3.2).
LONGEST_SECONDS = 12 * 60 * 60
F = TypeVar("F", bound=Callable[..., Any])

COORDINATOR, DPO, ADMIN = "coordinator", "dpo", "admin"
STAFF = (COORDINATOR, DPO)


@dataclass
class Staff(UserMixin):
    """The signed-in member of staff, as the request sees them."""

    user_id: int
    email: str
    name: str
    role: str
    version: int
    #: Signed in with a password an administrator chose: only the password page is open.
    change_due: bool = False

    @classmethod
    def of(cls, user: Any) -> Staff:
        return cls(
            user.id or 0,
            user.email,
            user.name,
            user.role,
            user.session_version,
            user.password_change_due,
        )

    def get_id(self) -> str:
        return f"{self.user_id}:{self.version}"

    @property
    def actor(self) -> str:
        return admin_users.actor_label(self.user_id)


def roles(*allowed: str) -> Callable[[F], F]:
    """Only these roles may use the route; everyone else gets a 403, checked here."""

    def wrap(view: F) -> F:
        view.allowed_roles = allowed  # type: ignore[attr-defined]

        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Any:
            if not current_user.is_authenticated:
                return redirect(url_for("admin.sign_in"))
            if current_user.role not in allowed:
                abort(403)
            return view(*args, **kwargs)

        guarded.allowed_roles = allowed  # type: ignore[attr-defined]
        return guarded  # type: ignore[return-value]

    return wrap


def staff() -> Staff:
    return current_user._get_current_object()  # type: ignore[no-any-return]


def audited(
    db_session: Any,
    action: str,
    *,
    object_type: str | None = None,
    object_id: str | int | None = None,
    **detail: Any,
) -> None:
    """Write one admin action to the audit log as the signed-in member of staff."""
    user = staff()
    audit.record(
        db_session,
        action,
        actor=user.actor,
        actor_id=user.user_id,
        object_type=object_type,
        object_id=object_id,
        detail=detail,
    )


@login_manager.user_loader
def _load(identifier: str) -> Staff | None:
    user_id, _, version = identifier.partition(":")
    number, session_version = whole_number(user_id), whole_number(version)
    if number is None or session_version is None:
        return None
    with database().reader() as db_session:
        user = admin_users.get(db_session, number)
    if user is None or not user.active or user.session_version != session_version:
        return None
    return Staff.of(user)


@bp.before_request
def _idle_timeout() -> Any:
    if not current_user.is_authenticated:
        return None
    now = time.time()
    last = session.get("admin_seen", now)
    since = session.setdefault("admin_since", now)
    if now - last > IDLE_SECONDS or now - since > LONGEST_SECONDS:
        logout_user()
        session.clear()
        return redirect(url_for("admin.sign_in", expired=1))
    session["admin_seen"] = now
    g.admin_navigation = True
    if current_user.change_due and request.endpoint not in PASSWORD_FIRST_OPEN:
        return redirect(url_for("admin.password"))
    return None


#: What someone who must first replace the password they were given may still reach.
PASSWORD_FIRST_OPEN = frozenset({"admin.password", "admin.sign_out"})


@bp.after_request
def _never_cached(response: Response) -> Response:
    """Admin pages show people's records: on a shared council computer, Back or the history
    must not bring them up again after sign-out."""
    response.headers["Cache-Control"] = "no-store"
    return response


def _lazy_user() -> dict[str, Any]:
    """Templates get Flask-Login's proxy, not the loaded user: public pages never look at it,
    and loading it (session protection included) on every render cost them about 50 µs."""
    return {"current_user": current_user}


def init_app(app: Flask) -> None:
    login_manager.init_app(app, add_context_processor=False)
    app.context_processor(_lazy_user)
    login_manager.login_view = "admin.sign_in"
    login_manager.login_message = "Sign in to use the admin pages."
    login_manager.session_protection = "strong"
    app.register_blueprint(bp)
    limiter.limit("60 per minute", methods=["POST"])(bp)


from consent.web.admin import (  # noqa: E402, F401  (registers routes)
    api_keys,
    audit_pages,
    auth,
    dashboard,
    imports,
    panels,
    people,
    reports,
    rights,
    users,
    workshops,
)
