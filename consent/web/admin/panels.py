"""Panels for coordinators: create, edit, conclude; members; invitations; sessions."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from consent.errors import Conflict, DomainError, InvalidInput, NotFound
from consent.options import options
from consent.services import panels as service
from consent.timeutil import parse_london, utcnow
from consent.validation import whole_number
from consent.web import database
from consent.web.admin import COORDINATOR, DPO, audited, bp, roles, staff
from consent.web.admin.forms import ButtonOnly, InviteForm, NoteForm, PanelForm, SessionForm
from consent.web.forms import attach_error, came


@bp.get("/panels")
@roles(COORDINATOR, DPO)
def panels() -> str:
    with database().reader() as session:
        found = service.all_panels(session)
    return render_template("admin/panels.html", panels=found)


@bp.route("/panels/new", methods=["GET", "POST"])
@roles(COORDINATOR, DPO)
def panel_new() -> str | Response | tuple[str, int]:
    form = PanelForm()
    if form.validate_on_submit():
        try:
            with database().transaction() as session:
                panel = service.create_panel(
                    session,
                    name=form.name.data,
                    family_hub=form.family_hub.data,
                    description=form.description.data,
                )
                audited(session, "panel.created", object_type="panel", object_id=panel.id)
            flash("Panel created.")
            return redirect(url_for("admin.panel", panel_id=panel.id))
        except InvalidInput as error:
            attach_error(form, error, fallback="name")
    return render_template("admin/panel_form.html", form=form, panel=None), (
        400 if form.errors else 200
    )


@bp.route("/panels/<int:panel_id>/edit", methods=["GET", "POST"])
@roles(COORDINATOR, DPO)
def panel_edit(panel_id: int) -> str | Response | tuple[str, int]:
    form = PanelForm()
    if form.validate_on_submit():
        try:
            with database().transaction() as session:
                panel = service.get_panel(session, panel_id)
                service.update_panel(
                    session,
                    panel,
                    name=form.name.data,
                    family_hub=form.family_hub.data,
                    description=form.description.data,
                    status=form.status.data or panel.status,
                )
                audited(session, "panel.updated", object_type="panel", object_id=panel.id)
            flash("Panel saved.")
            return redirect(url_for("admin.panel", panel_id=panel_id))
        except (InvalidInput, Conflict) as error:
            attach_error(
                form,
                error if isinstance(error, InvalidInput) else InvalidInput("name", error.message),
                fallback="name",
            )
    with database().reader() as session:
        panel = service.get_panel(session, panel_id)
    if request.method == "GET":
        form.name.data, form.family_hub.data = panel.name, panel.family_hub
        form.description.data, form.status.data = panel.description, panel.status
    return render_template("admin/panel_form.html", form=form, panel=panel), (
        400 if form.errors else 200
    )


@bp.get("/panels/<int:panel_id>")
@roles(COORDINATOR, DPO)
def panel(panel_id: int) -> str:
    page = request.args.get("page", "1")
    age_band = request.args.get("age_band") or None
    used = request.args.get("service") or None
    if age_band not in (None, *options().age_bands):
        age_band = None
    if used not in (None, *options().family_hub_services):
        used = None
    page_number = whole_number(page, most=100_000) or 1
    with database().reader() as session:
        found = service.get_panel(session, panel_id)
        rows, total = service.members(
            session, found, page=page_number, age_band=age_band, service=used
        )
        sessions = service.sessions_of(session, found)
    return render_template(
        "admin/panel.html",
        panel=found,
        rows=rows,
        total=total,
        sessions=sessions,
        page=page_number,
        page_size=service.PAGE_SIZE,
        age_band=age_band,
        used=used,
        options=options(),
        button=ButtonOnly(),
        invite=InviteForm(),
        session_form=SessionForm(),
    )


@bp.post("/panels/<int:panel_id>/diversity")
@roles(COORDINATOR, DPO)
def panel_diversity(panel_id: int) -> str | Response:
    if not ButtonOnly().validate_on_submit():
        return redirect(url_for("admin.panel", panel_id=panel_id))
    with database().transaction() as session:
        found = service.get_panel(session, panel_id)
        special = staff().role == DPO
        summary = service.diversity(session, found, special_category=special)
        audited(session, "panel.diversity_viewed", object_type="panel", object_id=panel_id)
    labels = {q.key: q.label for q in options().special_category}
    labels["age_band"] = "Age group"
    return render_template(
        "admin/diversity.html", panel=found, summary=summary, labels=labels, special=special
    )


@bp.post("/panels/<int:panel_id>/invite")
@roles(COORDINATOR, DPO)
def panel_invite(panel_id: int) -> str | Response | tuple[str, int]:
    form = InviteForm()
    if form.validate_on_submit():
        try:
            with database().transaction() as session:
                found = service.get_panel(session, panel_id)
                person = service.invite(session, found, email=form.email.data, name=form.name.data)
                audited(
                    session,
                    "panel.invited",
                    object_type="panel",
                    object_id=panel_id,
                    person=person.public_id,
                )
            flash("Invitation sent.")
            return redirect(url_for("admin.panel", panel_id=panel_id))
        except (InvalidInput, Conflict) as error:
            flash(error.message, "error")
    else:
        flash("Enter the email address to invite.", "error")
    return redirect(url_for("admin.panel", panel_id=panel_id))


@bp.route("/panels/<int:panel_id>/conclude", methods=["GET", "POST"])
@roles(COORDINATOR, DPO)
def panel_conclude(panel_id: int) -> str | Response:
    form = ButtonOnly()
    if form.validate_on_submit():
        try:
            with database().transaction() as session:
                service.conclude(session, service.get_panel(session, panel_id))
                audited(session, "panel.concluded", object_type="panel", object_id=panel_id)
            flash("The panel has concluded. Members' panel data will be destroyed within the hour.")
        except Conflict as error:
            flash(error.message, "error")
        return redirect(url_for("admin.panel", panel_id=panel_id))
    with database().reader() as session:
        found = service.get_panel(session, panel_id)
    return render_template("admin/conclude.html", panel=found, form=form)


@bp.post("/panels/<int:panel_id>/sessions")
@roles(COORDINATOR, DPO)
def session_new(panel_id: int) -> Response:
    form = SessionForm()
    if form.validate_on_submit():
        try:
            with database().transaction() as session:
                found = service.get_panel(session, panel_id)
                created = service.create_session(
                    session,
                    found,
                    title=form.title.data,
                    starts_at=parse_london(
                        form.starts_at.data, field="starts_at", label="the date and time"
                    ),
                    format=form.format.data,
                    location=form.location.data,
                    recorded=bool(form.recorded.data),
                )
                audited(
                    session,
                    "panel_session.created",
                    object_type="panel_session",
                    object_id=created.id,
                )
            return redirect(url_for("admin.panel_session", session_id=created.id))
        except (InvalidInput, Conflict) as error:
            flash(error.message, "error")
    else:
        flash(" ".join(e for errors in form.errors.values() for e in errors), "error")
    return redirect(url_for("admin.panel", panel_id=panel_id))


@bp.get("/sessions/<int:session_id>")
@roles(COORDINATOR, DPO)
def panel_session(session_id: int) -> str:
    with database().reader() as session:
        found = service.get_session(session, session_id)
        panel = service.get_panel(session, found.panel_id)
        register = service.attendance(session, found)
        notes = service.notes_of(session, found)
    if notes:
        # Notes may hold special category details, and every view of those is audited.
        with database().transaction() as session:
            audited(
                session,
                "session_notes.viewed",
                object_type="panel_session",
                object_id=session_id,
                notes=len(notes),
            )
    return render_template(
        "admin/session.html",
        item=found,
        panel=panel,
        register=register,
        notes=notes,
        note_form=NoteForm(),
        button=ButtonOnly(),
        can_invite=panel.status != "concluded" and found.starts_at > utcnow(),
        started=found.starts_at <= utcnow(),
    )


@bp.post("/sessions/<int:session_id>/invite")
@roles(COORDINATOR, DPO)
def session_invite(session_id: int) -> Response:
    if not ButtonOnly().validate_on_submit():
        return redirect(url_for("admin.panel_session", session_id=session_id))
    try:
        with database().transaction() as session:
            found = service.get_session(session, session_id)
            queued = service.invite_to_session(session, found)
            audited(
                session,
                "panel_session.invited",
                object_type="panel_session",
                object_id=session_id,
                emails=queued,
            )
        flash(
            f"Invitations queued for {queued} member(s)."
            if queued
            else "Every member on the panel has already been invited to this session."
        )
    except Conflict as error:
        flash(error.message, "error")
    return redirect(url_for("admin.panel_session", session_id=session_id))


@bp.post("/sessions/<int:session_id>/attendance")
@roles(COORDINATOR, DPO)
def attendance(session_id: int) -> Response:
    if not ButtonOnly().validate_on_submit():
        return redirect(url_for("admin.panel_session", session_id=session_id))
    membership = request.form.get("membership", "")
    try:
        attended = came(request.form.get("attended"), "session")
        with database().transaction() as session:
            found = service.get_session(session, session_id)
            service.record_attendance(
                session,
                found,
                whole_number(membership) or 0,
                attended=attended,
                recording_consent=request.form.get("recording") == "yes",
            )
            audited(
                session, "attendance.recorded", object_type="panel_session", object_id=session_id
            )
        flash("Attendance saved.")
    except (InvalidInput, NotFound, Conflict) as error:
        flash(error.message, "error")
    return redirect(url_for("admin.panel_session", session_id=session_id))


@bp.post("/sessions/<int:session_id>/notes")
@roles(COORDINATOR, DPO)
def session_note(session_id: int) -> Response:
    form = NoteForm()
    if form.validate_on_submit():
        membership = request.form.get("membership", "")
        try:
            with database().transaction() as session:
                found = service.get_session(session, session_id)
                service.add_note(
                    session,
                    found,
                    form.note.data,
                    author_id=staff().user_id,
                    membership_id=whole_number(membership),
                )
                audited(
                    session, "session_note.added", object_type="panel_session", object_id=session_id
                )
            flash("Note saved.")
        except DomainError as error:
            flash(error.message, "error")
    else:
        flash("Enter a note.", "error")
    return redirect(url_for("admin.panel_session", session_id=session_id))
