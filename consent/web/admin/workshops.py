"""Workshops for coordinators: create, edit, cancel, bookings, attendance, evaluation."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from consent.errors import Conflict, DomainError, InvalidInput
from consent.services import reminders
from consent.services import workshops as service
from consent.timeutil import london_input, parse_london, utcnow
from consent.validation import whole_number
from consent.web import database
from consent.web.admin import COORDINATOR, DPO, audited, bp, roles
from consent.web.admin.forms import ButtonOnly, WorkshopForm
from consent.web.forms import attach_error, came


def _values(form: WorkshopForm) -> dict[str, object]:
    capacity = whole_number(form.capacity.data, most=100_000)
    if capacity is None:
        raise InvalidInput("capacity", "Enter the number of places as a number.")
    return {
        "title": form.title.data,
        "description": form.description.data,
        "starts_at": parse_london(form.starts_at.data, field="starts_at", label="when it starts"),
        "ends_at": parse_london(form.ends_at.data, field="ends_at", label="when it ends"),
        "capacity": capacity,
        "location": form.location.data,
    }


@bp.get("/workshops")
@roles(COORDINATOR, DPO)
def workshops() -> str:
    with database().reader() as session:
        found = [(w, service.places_taken(session, w)) for w in service.all_workshops(session)]
    return render_template("admin/workshops.html", workshops=found)


@bp.route("/workshops/new", methods=["GET", "POST"])
@roles(COORDINATOR, DPO)
def workshop_new() -> str | Response | tuple[str, int]:
    form = WorkshopForm()
    if form.validate_on_submit():
        try:
            with database().transaction() as session:
                created = service.create_workshop(session, **_values(form))  # type: ignore[arg-type]
                audited(session, "workshop.created", object_type="workshop", object_id=created.id)
            flash("Workshop created.")
            return redirect(url_for("admin.workshop", workshop_id=created.id))
        except InvalidInput as error:
            attach_error(form, error, fallback="title")
    return render_template("admin/workshop_form.html", form=form, workshop=None), (
        400 if form.errors else 200
    )


@bp.route("/workshops/<int:workshop_id>/edit", methods=["GET", "POST"])
@roles(COORDINATOR, DPO)
def workshop_edit(workshop_id: int) -> str | Response | tuple[str, int]:
    form = WorkshopForm()
    if form.validate_on_submit():
        try:
            with database().transaction() as session:
                found = service.get_workshop(session, workshop_id)
                _, told = service.update_workshop(session, found, **_values(form))  # type: ignore[arg-type]
                audited(
                    session,
                    "workshop.updated",
                    object_type="workshop",
                    object_id=workshop_id,
                    told=told,
                )
            flash("Workshop saved.")
            if told:
                whom = "1 person" if told == 1 else f"{told} people"
                flash(f"We have emailed the new time and place to the {whom} booked on it.")
            return redirect(url_for("admin.workshop", workshop_id=workshop_id))
        except (InvalidInput, Conflict) as error:
            attach_error(
                form,
                error if isinstance(error, InvalidInput) else InvalidInput("title", error.message),
                fallback="title",
            )
    with database().reader() as session:
        found = service.get_workshop(session, workshop_id)
    if request.method == "GET":
        form.title.data, form.description.data = found.title, found.description
        form.starts_at.data, form.ends_at.data = (
            london_input(found.starts_at),
            london_input(found.ends_at),
        )
        form.capacity.data, form.location.data = str(found.capacity), found.location
    return render_template("admin/workshop_form.html", form=form, workshop=found), (
        400 if form.errors else 200
    )


@bp.get("/workshops/<int:workshop_id>")
@roles(COORDINATOR, DPO)
def workshop(workshop_id: int) -> str:
    with database().reader() as session:
        found = service.get_workshop(session, workshop_id)
        bookings = service.bookings_of(session, found)
    return render_template(
        "admin/workshop.html",
        workshop=found,
        bookings=bookings,
        button=ButtonOnly(),
        can_cancel=found.starts_at > utcnow(),
    )


@bp.post("/workshops/<int:workshop_id>/attendance")
@roles(COORDINATOR, DPO)
def workshop_attendance(workshop_id: int) -> Response:
    if ButtonOnly().validate_on_submit():
        booking = request.form.get("booking", "")
        try:
            attended = came(request.form.get("attended"), "workshop")
            with database().transaction() as session:
                found = service.get_workshop(session, workshop_id)
                service.set_attended(session, found, whole_number(booking) or 0, attended)
                audited(
                    session, "workshop.attendance", object_type="workshop", object_id=workshop_id
                )
            flash("Attendance saved.")
        except DomainError as error:
            flash(error.message, "error")
    return redirect(url_for("admin.workshop", workshop_id=workshop_id))


@bp.post("/workshops/<int:workshop_id>/<action>")
@roles(COORDINATOR, DPO)
def workshop_action(workshop_id: int, action: str) -> Response:
    if (
        action not in ("cancel", "send-evaluation", "close-evaluation")
        or not ButtonOnly().validate_on_submit()
    ):
        return redirect(url_for("admin.workshop", workshop_id=workshop_id))
    try:
        with database().transaction() as session:
            found = service.get_workshop(session, workshop_id)
            if action == "cancel":
                told = service.cancel_workshop(session, found)
                message = f"Workshop cancelled. {told} booking(s) told by email."
            elif action == "send-evaluation":
                sent = reminders.evaluation_requests(session, workshop_id=workshop_id, any_age=True)
                message = f"{sent} evaluation request(s) queued."
            else:
                service.close_evaluation(session, found)
                days = database().settings.workshop_keep_days
                message = (
                    "Evaluation closed: no more feedback will be taken. Attendee details are "
                    f"deleted {days} days after the workshop."
                )
            audited(session, f"workshop.{action}", object_type="workshop", object_id=workshop_id)
        flash(message)
    except Conflict as error:
        flash(error.message, "error")
    return redirect(url_for("admin.workshop", workshop_id=workshop_id))
