"""Staff accounts, for the admin role: create, deactivate, reset a lost second factor."""

from __future__ import annotations

import secrets

from flask import flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from consent.errors import Conflict, InvalidInput
from consent.services import admin_users
from consent.web import database
from consent.web.admin import ADMIN, bp, roles, staff
from consent.web.admin.forms import ButtonOnly, NewUserForm
from consent.web.forms import attach_error


@bp.get("/users")
@roles(ADMIN)
def users() -> str:
    with database().reader() as session:
        found = admin_users.all_users(session)
    return render_template("admin/users.html", users=found, button=ButtonOnly())


@bp.route("/users/new", methods=["GET", "POST"])
@roles(ADMIN)
def user_new() -> str | Response | tuple[str, int]:
    form = NewUserForm()
    if form.validate_on_submit():
        password = secrets.token_urlsafe(15)
        try:
            with database().transaction() as session:
                user, _ = admin_users.create_admin(
                    session,
                    form.email.data,
                    form.role.data,
                    password,
                    name=form.name.data,
                    actor=staff().actor,
                    actor_id=staff().user_id,
                    change_due=True,
                )
            return render_template("admin/user_created.html", user=user, password=password)
        except (InvalidInput, Conflict) as error:
            attach_error(
                form,
                error if isinstance(error, InvalidInput) else InvalidInput("email", error.message),
                fallback="email",
            )
    return render_template("admin/user_form.html", form=form), (400 if form.errors else 200)


@bp.post("/users/<int:user_id>/<action>")
@roles(ADMIN)
def user_action(user_id: int, action: str) -> str | Response:
    if (
        action not in ("activate", "deactivate", "reset-code")
        or not ButtonOnly().validate_on_submit()
    ):
        return redirect(url_for("admin.users"))
    with database().transaction() as session:
        user = admin_users.get(session, user_id)
        me = admin_users.get(session, staff().user_id)
        if user is None or me is None:
            flash("We could not find that account.", "error")
            return redirect(url_for("admin.users"))
        try:
            if action == "reset-code":
                admin_users.reset_second_factor(session, user, actor=me)
                return render_template("admin/user_created.html", user=user, password=None)
            admin_users.set_active(session, user, action == "activate", actor=me)
        except InvalidInput as error:
            flash(error.message, "error")
            return redirect(url_for("admin.users"))
    flash("Account updated.")
    return redirect(url_for("admin.users"))
