"""People: search, a person's record, and what staff do for them."""

from __future__ import annotations

import json

from flask import Response, flash, redirect, render_template, request, url_for
from sqlmodel import Session
from werkzeug.wrappers import Response as BaseResponse
from wtforms import SelectChoice

from consent.errors import DomainError, InvalidInput
from consent.models import Person
from consent.services import casework, ledger, notices, preferences
from consent.validation import whole_number
from consent.web import database
from consent.web.admin import COORDINATOR, DPO, bp, roles, staff
from consent.web.admin.forms import ButtonOnly, NoteForm, OnBehalfForm, SearchForm
from consent.web.forms import attach_error
from consent.web.public.helpers import CHANNEL_WORDS


def actor() -> casework.Actor:
    user = staff()
    return casework.Actor(user.user_id, user.actor, user.role)


@bp.get("/people")
@roles(COORDINATOR, DPO)
def people() -> str:
    form = SearchForm(request.args)
    found = []
    searched = bool(form.q.data)
    if searched:
        try:
            with database().reader() as session:
                found = casework.search(session, form.q.data)
        except InvalidInput as error:
            attach_error(form, error, fallback="q")
    return render_template("admin/people.html", form=form, found=found, searched=searched)


def _on_behalf_form(session: object) -> OnBehalfForm:
    form = OnBehalfForm()
    form.purpose.choices = [SelectChoice(p.key, p.title) for p in notices.all_purposes(session)]  # type: ignore[arg-type]
    return form


def _person_page(
    session: Session, found: Person, form: OnBehalfForm, special: list | None = None
) -> str:
    """The person's record: one template, whichever action led here."""
    return render_template(
        "admin/person.html",
        person=found,
        view=preferences.overview(session, found, fresh=True),
        events=ledger.events_for(session, found),
        mails=casework.mail_history(session, found),
        form=form,
        purposes={p.id: p for p in notices.all_purposes(session)},
        notices=notices.notices_by_id(session),
        channels=CHANNEL_WORDS,
        button=ButtonOnly(),
        special=special,
    )


@bp.get("/people/<public_id>")
@roles(COORDINATOR, DPO)
def person(public_id: str) -> str:
    with database().reader() as session:
        return _person_page(
            session, casework.get_person(session, public_id), _on_behalf_form(session)
        )


@bp.post("/people/<public_id>/consent")
@roles(COORDINATOR, DPO)
def on_behalf(public_id: str) -> str | BaseResponse | tuple[str, int]:
    with database().reader() as session:
        form = _on_behalf_form(session)
    if form.validate_on_submit():
        try:
            with database().transaction() as session:
                found = casework.get_person(session, public_id)
                changed = casework.record_on_behalf(
                    session,
                    found,
                    form.purpose.data,
                    agree=form.action.data == "Agree",
                    note=form.note.data,
                    actor=actor(),
                    shown=whole_number(request.form.get(f"shown-{form.purpose.data}")),
                )
            flash("Recorded." if changed else "Nothing changed: that was already the case.")
            return redirect(url_for("admin.person", public_id=public_id))
        except DomainError as error:
            attach_error(
                form,
                error if isinstance(error, InvalidInput) else InvalidInput("note", error.message),
                fallback="note",
            )
    with database().reader() as session:
        return _person_page(session, casework.get_person(session, public_id), form), 400


@bp.post("/people/<public_id>/link")
@roles(COORDINATOR, DPO)
def send_link(public_id: str) -> BaseResponse:
    if ButtonOnly().validate_on_submit():
        try:
            with database().transaction() as session:
                casework.send_link(session, casework.get_person(session, public_id), actor())
            flash("We have emailed them a link to their preferences.")
        except InvalidInput as error:
            flash(error.message, "error")
    return redirect(url_for("admin.person", public_id=public_id))


@bp.post("/people/<public_id>/export")
@roles(COORDINATOR, DPO)
def export(public_id: str) -> Response | BaseResponse:
    if not ButtonOnly().validate_on_submit():
        return redirect(url_for("admin.person", public_id=public_id))
    with database().transaction() as session:
        data = casework.export(session, casework.get_person(session, public_id), actor())
    response = Response(json.dumps(data, indent=2, ensure_ascii=False), mimetype="application/json")
    response.headers["Content-Disposition"] = f'attachment; filename="person-{public_id}.json"'
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.post("/people/<public_id>/special")
@roles(DPO)
def reveal(public_id: str) -> str | BaseResponse:
    if not ButtonOnly().validate_on_submit():
        return redirect(url_for("admin.person", public_id=public_id))
    with database().transaction() as session:
        found = casework.get_person(session, public_id)
        answers = casework.reveal_special_category(session, found, actor())
        return _person_page(session, found, _on_behalf_form(session), special=answers)


@bp.route("/people/<public_id>/erase", methods=["GET", "POST"])
@roles(DPO)
def erase(public_id: str) -> str | BaseResponse | tuple[str, int]:
    form = NoteForm()
    if form.validate_on_submit():
        try:
            with database().transaction() as session:
                casework.erase(
                    session,
                    casework.get_person(session, public_id),
                    note=form.note.data,
                    actor=actor(),
                )
            flash("Their data has been erased.")
            return redirect(url_for("admin.people"))
        except InvalidInput as error:
            attach_error(form, error, fallback="note")
    with database().reader() as session:
        found = casework.get_person(session, public_id)
    return render_template("admin/erase.html", person=found, form=form), (
        400 if form.errors else 200
    )
