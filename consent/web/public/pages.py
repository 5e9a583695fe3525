"""Pages with no form: the start page, privacy and accessibility."""

from __future__ import annotations

from flask import render_template

from consent.services import notices
from consent.web import database
from consent.web.public import bp


@bp.get("/")
def index() -> str:
    with database().reader() as session:
        purposes = {p.key: p for p in notices.all_purposes(session)}
    return render_template("public/index.html", purposes=purposes)


@bp.get("/privacy")
def privacy() -> str:
    with database().reader() as session:
        items = [
            (purpose, notices.current_notice(session, purpose))
            for purpose in notices.all_purposes(session)
        ]
    return render_template("public/privacy.html", items=items)


@bp.get("/accessibility")
def accessibility() -> str:
    return render_template("public/accessibility.html")
