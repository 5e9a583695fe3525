"""API keys, for the admin role: make one for a system, see when each was used, revoke."""

from __future__ import annotations

from flask import flash, redirect, render_template, url_for
from werkzeug.wrappers import Response

from consent.errors import InvalidInput, NotFound
from consent.models.api_keys import SCOPES
from consent.services import api_keys
from consent.web import database
from consent.web.admin import ADMIN, bp, roles, staff
from consent.web.admin.forms import ApiKeyForm, ButtonOnly
from consent.web.forms import attach_error


@bp.get("/api-keys")
@roles(ADMIN)
def api_key_list() -> str:
    with database().reader() as session:
        keys = api_keys.all_keys(session)
    return render_template("admin/api_keys.html", keys=keys, scopes=SCOPES)


@bp.route("/api-keys/new", methods=["GET", "POST"])
@roles(ADMIN)
def api_key_new() -> str | tuple[str, int]:
    form = ApiKeyForm()
    if form.validate_on_submit():
        me = staff()
        try:
            with database().transaction() as session:
                key, secret = api_keys.create(
                    session,
                    form.name.data,
                    list(form.scopes.data or []),
                    actor=me.actor,
                    actor_id=me.user_id,
                )
            return render_template("admin/api_key_created.html", key=key, secret=secret)
        except InvalidInput as error:
            attach_error(form, error, fallback="name")
    return render_template("admin/api_key_form.html", form=form), (400 if form.errors else 200)


@bp.post("/api-keys/<int:key_id>/revoke")
@roles(ADMIN)
def api_key_revoke(key_id: int) -> Response:
    if not ButtonOnly().validate_on_submit():
        return redirect(url_for("admin.api_key_list"))
    me = staff()
    try:
        with database().transaction() as session:
            key = api_keys.revoke(session, key_id, actor=me.actor, actor_id=me.user_id)
            name = key.name
    except NotFound as error:
        flash(error.message, "error")
        return redirect(url_for("admin.api_key_list"))
    flash(f"The key for {name} no longer works.")
    return redirect(url_for("admin.api_key_list"))
