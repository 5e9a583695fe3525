"""The dashboard: what needs attention today."""

from __future__ import annotations

from flask import redirect, render_template, url_for
from werkzeug.wrappers import Response

from consent.services import dashboard as figures
from consent.timeutil import utcnow
from consent.web import database
from consent.web.admin import ADMIN, COORDINATOR, DPO, bp, roles, staff


@bp.get("/")
@roles(COORDINATOR, DPO, ADMIN)
def dashboard() -> str | Response:
    if staff().role == ADMIN:
        return redirect(url_for("admin.users"))
    with database().reader() as session:
        view = figures.build(session)
    return render_template("admin/dashboard.html", view=view, now=utcnow())
