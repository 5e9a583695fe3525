"""Signing in (password, then a one-time code, enrolling the app on first use) and out."""

from __future__ import annotations

import time

from flask import flash, redirect, render_template, request, session, url_for
from flask_login import current_user, login_user, logout_user
from werkzeug.wrappers import Response

from consent.errors import InvalidInput
from consent.services import admin_users
from consent.services.admin_users import SignInRefused
from consent.web import database, settings
from consent.web.admin import ADMIN, COORDINATOR, DPO, Staff, bp, roles
from consent.web.admin.forms import CodeForm, PasswordForm, SignInForm
from consent.web.forms import attach_error
from consent.web.security import limiter

#: How long the code may take after the password: a half-finished sign-in left on a shared
#: computer must not wait for the next person to finish it.
CODE_WITHIN = 5 * 60


@bp.route("/sign-in", methods=["GET", "POST"])
@limiter.limit("10 per minute", methods=["POST"])
def sign_in() -> str | Response | tuple[str, int]:
    if current_user.is_authenticated:
        return redirect(url_for("admin.dashboard"))
    form = SignInForm()
    error = None
    if form.validate_on_submit():
        with database().transaction() as db_session:
            try:
                user = admin_users.check_password(db_session, form.email.data, form.password.data)
                session.clear()
                session["pending_admin"] = user.id
                session["pending_since"] = time.time()
                return redirect(url_for("admin.code"))
            except SignInRefused as refused:
                error = refused.message
    expired = request.args.get("expired") == "1"
    return render_template("admin/sign_in.html", form=form, error=error, expired=expired), (
        400 if error or form.errors else 200
    )


@bp.route("/sign-in/code", methods=["GET", "POST"])
@limiter.limit("10 per minute", methods=["POST"])
def code() -> str | Response | tuple[str, int]:
    user_id = session.get("pending_admin")
    since = session.get("pending_since")
    if not isinstance(user_id, int) or not isinstance(since, float | int):
        return redirect(url_for("admin.sign_in"))
    if time.time() - since > CODE_WITHIN:
        session.clear()
        return redirect(url_for("admin.sign_in", expired=1))
    form = CodeForm()
    error = None
    with database().reader() as db_session:
        user = admin_users.get(db_session, user_id)
        if user is None:
            return redirect(url_for("admin.sign_in"))
        secret = admin_users.enrolment_secret(db_session, user)
    if form.validate_on_submit():
        with database().transaction() as db_session:
            user = admin_users.get(db_session, user_id)
            assert user is not None
            try:
                admin_users.check_code(db_session, user, form.code.data)
                staff = Staff.of(user)
                session.clear()
                login_user(staff)
                session["admin_seen"] = session["admin_since"] = time.time()
                return redirect(url_for("admin.dashboard"))
            except SignInRefused as refused:
                error = refused.message
    uri = (
        admin_users.totp_uri(user, secret, settings().service_name) if secret is not None else None
    )
    return render_template("admin/code.html", form=form, error=error, secret=secret, uri=uri), (
        400 if error or form.errors else 200
    )


@bp.post("/sign-out")
def sign_out() -> Response:
    if current_user.is_authenticated:
        with database().transaction() as db_session:
            admin_users.end_sessions(db_session, current_user.user_id)
    logout_user()
    session.clear()
    return redirect(url_for("admin.sign_in"))


@bp.route("/password", methods=["GET", "POST"])
@limiter.limit("10 per minute", methods=["POST"])
@roles(COORDINATOR, DPO, ADMIN)
def password() -> str | Response | tuple[str, int]:
    """Change your own password; the first thing to do with one an administrator chose."""
    form = PasswordForm()
    if form.validate_on_submit():
        try:
            with database().transaction() as db_session:
                user = admin_users.get(db_session, current_user.user_id)
                assert user is not None
                admin_users.change_password(
                    db_session, user, form.current.data, form.new.data, form.again.data
                )
                staff = Staff.of(user)
            login_user(staff)
            flash("Your password has been changed.")
            return redirect(url_for("admin.dashboard"))
        except InvalidInput as error:
            attach_error(form, error, fallback="new")
    return render_template("admin/password.html", form=form, first=current_user.change_due), (
        400 if form.errors else 200
    )
