"""Signing up: the newsletter, workshop bookings, joining a panel, and confirming by email."""

from __future__ import annotations

from datetime import datetime

from flask import redirect, render_template, request, url_for
from sqlmodel import Session
from werkzeug.wrappers import Response

from consent.errors import Conflict, DomainError, InvalidInput, NotFound, UnknownWording
from consent.models import Notice, Panel, Purpose
from consent.options import options
from consent.services import (
    catalogue,
    notices,
    panels,
    people,
    preferences,
    signups,
    workshops,
)
from consent.timeutil import utcnow
from consent.validation import whole_number
from consent.web import database
from consent.web.forms import (
    BookingForm,
    ButtonForm,
    FeedbackForm,
    JoinForm,
    NewsletterForm,
    RenewForm,
    attach_error,
    notice_id,
)
from consent.web.public import bp
from consent.web.public.helpers import resolve


def _current(session: Session, *keys: str) -> dict[str, Notice]:
    return {key: notices.current_notice(session, notices.get_purpose(session, key)) for key in keys}


def _purposes(session: Session, *keys: str) -> dict[str, Purpose]:
    return {key: notices.get_purpose(session, key) for key in keys}


def _fill_notices(form: object, shown: dict[str, Notice]) -> None:
    """Carry the notice versions this page shows, so consent records the words actually read."""
    for key, notice in shown.items():
        getattr(form, f"{key}_notice").data = str(notice.id)


def _ticked(form: object, keys: tuple[str, ...]) -> dict[str, int]:
    """Purposes whose box was ticked, with the notice version the page showed for each."""
    shown: dict[str, int] = {}
    for key in keys:
        if getattr(form, key).data:
            number = notice_id(getattr(form, f"{key}_notice").data)
            if number is None:
                raise UnknownWording(key)
            shown[key] = number
    return shown


# ---- newsletter ---------------------------------------------------------------------------

NEWSLETTER_KEYS = ("newsletter", "family_hub_events")


@bp.route("/newsletter", methods=["GET", "POST"])
def newsletter() -> str | Response:
    form = NewsletterForm()
    if form.validate_on_submit():
        try:
            with database().transaction() as session:
                signups.request_subscription(
                    session,
                    email=form.email.data,
                    name=form.name.data,
                    shown=_ticked(form, NEWSLETTER_KEYS),
                )
            return redirect(url_for("public.check_email"))
        except InvalidInput as error:
            attach_error(form, error, fallback="newsletter")
    with database().reader() as session:
        shown = _current(session, *NEWSLETTER_KEYS)
        purposes = _purposes(session, *NEWSLETTER_KEYS)
    _fill_notices(form, shown)
    status = 400 if form.errors else 200
    return render_template(
        "public/newsletter.html", form=form, shown=shown, purposes=purposes
    ), status


@bp.get("/check-your-email")
def check_email() -> str:
    return render_template("public/check_email.html")


# ---- workshops ----------------------------------------------------------------------------

WORKSHOP_KEYS = ("newsletter", "workshops")


@bp.get("/workshops")
def workshop_list() -> str:
    with database().reader() as session:
        upcoming = catalogue.upcoming_workshops(session)
    return render_template("public/workshops.html", upcoming=upcoming)


@bp.route("/workshops/<int:workshop_id>", methods=["GET", "POST"])
def workshop(workshop_id: int) -> str | Response:
    form = BookingForm()
    with database().reader() as session:
        found = workshops.get_workshop(session, workshop_id)
        taken = workshops.places_taken(session, found)
        shown = _current(session, *WORKSHOP_KEYS)
        purposes = _purposes(session, *WORKSHOP_KEYS)
    closed = _closed_reason(found.status, found.starts_at, taken, found.capacity)
    if not closed and form.validate_on_submit():
        try:
            with database().transaction() as session:
                workshops.book_and_confirm(
                    session,
                    workshops.get_workshop(session, workshop_id),
                    name=form.name.data,
                    email=form.email.data,
                    setting=form.setting.data,
                    district=form.district.data,
                    job_role=form.job_role.data,
                    opt_ins=_ticked(form, WORKSHOP_KEYS),
                )
            return redirect(url_for("public.booked", workshop_id=workshop_id))
        except InvalidInput as error:
            attach_error(form, error, fallback="name")
        except Conflict as error:
            closed = error.message
    _fill_notices(form, shown)
    status = 400 if form.errors else 200
    return render_template(
        "public/workshop.html",
        workshop=found,
        places_left=max(0, found.capacity - taken),
        closed=closed,
        form=form,
        shown=shown,
        purposes=purposes,
    ), status


def _closed_reason(status: str, starts_at: datetime, taken: int, capacity: int) -> str | None:
    if status == "cancelled":
        return "This workshop has been cancelled."
    if starts_at <= utcnow():
        return "This workshop has already taken place."
    if taken >= capacity:
        return "This workshop is full."
    return None


@bp.get("/workshops/<int:workshop_id>/booked")
def booked(workshop_id: int) -> str:
    with database().reader() as session:
        found = workshops.get_workshop(session, workshop_id)
    reminder = workshops.reminded(utcnow(), found.starts_at)
    return render_template("public/booked.html", workshop=found, reminder=reminder)


# ---- panels -------------------------------------------------------------------------------

PANEL_KEYS = ("panel_contact", "panel_recordings")


@bp.get("/panels")
def panel_list() -> str:
    with database().reader() as session:
        open_panels = catalogue.open_panels(session)
        purpose = notices.get_purpose(session, "panel_contact")
    return render_template("public/panels.html", panels=open_panels, purpose=purpose)


def _profile(form: JoinForm) -> panels.ProfileInput:  # type: ignore[valid-type]
    children_count = whole_number(form.children_count.data, most=99)
    if children_count is None:
        raise InvalidInput("children_count", "Enter how many children you look after, as a number.")
    ages: list[int] = []
    for part in (form.children_ages.data or "").replace(" and ", ",").split(","):
        part = part.strip()
        if not part:
            continue
        age = whole_number(part, most=99)
        if age is None:
            raise InvalidInput(
                "children_ages", "Enter ages as numbers separated by commas, like 2, 7."
            )
        ages.append(age)
    special = {
        question.key: getattr(form, question.key).data or ""
        for question in options().special_category
    }
    return panels.ProfileInput(
        postcode=form.postcode.data,
        age_band=form.age_band.data,
        children_count=children_count,
        children_ages=ages,
        services_used=list(form.services_used.data or []),
        special_category={k: v for k, v in special.items() if v},
    )


@bp.route("/panels/<int:panel_id>/join", methods=["GET", "POST"])
def join_panel(panel_id: int) -> str | Response:
    form = JoinForm()
    with database().reader() as session:
        panel = panels.get_panel(session, panel_id)
        shown = _current(session, *PANEL_KEYS)
        purposes = _purposes(session, *PANEL_KEYS)
    closed = None if panel.status == "open" else "This panel is not taking new members."
    if not closed and form.validate_on_submit():
        try:
            ticked = _ticked(form, PANEL_KEYS)
            with database().transaction() as session:
                signups.request_panel(
                    session,
                    panels.get_panel(session, panel_id),
                    email=form.email.data,
                    name=form.name.data,
                    phone=form.phone.data,
                    profile=_profile(form),
                    recordings="panel_recordings" in ticked,
                    shown=ticked,
                )
            return redirect(url_for("public.check_email"))
        except InvalidInput as error:
            attach_error(form, error, fallback="panel_contact")
        except Conflict as error:
            closed = error.message
    _fill_notices(form, shown)
    return _render_join(form, panel, shown, purposes, closed)


def _render_join(
    form: JoinForm,
    panel: Panel,
    shown: dict[str, Notice],
    purposes: dict[str, Purpose],
    closed: str | None,
    invited: str | None = None,
) -> tuple[str, int]:
    return render_template(
        "public/join.html",
        panel=panel,
        form=form,
        shown=shown,
        purposes=purposes,
        closed=closed,
        special=options().special_category,
        invited=invited,
    ), (400 if form.errors else 200)


# ---- confirming by email ------------------------------------------------------------------


@bp.route("/confirm/<token>", methods=["GET", "POST"])
def confirm(token: str) -> str | Response:
    """GET shows what will be agreed and a button; only the POST records anything."""
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        try:
            with database().transaction() as session:
                person, claims = resolve(session, token, "confirm")
                pending = signups.pending_for(session, person, claims.ref)
                kind = pending.kind
                signups.confirm(session, person, pending)
        except signups.LinkUsed:
            return render_template("public/confirmed.html", kind=None, already=True)
        except DomainError as error:
            return render_template("public/confirm_problem.html", message=error.message), 409
        return render_template("public/confirmed.html", kind=kind, already=False)
    with database().reader() as session:
        person, claims = resolve(session, token, "confirm")
        try:
            pending = signups.pending_for(session, person, claims.ref)
        except signups.LinkUsed:
            return render_template("public/confirmed.html", kind=None, already=True)
        details = signups.describe(session, pending)
    return render_template("public/confirm.html", form=form, details=details, kind=pending.kind)


# ---- renewing and feedback ----------------------------------------------------------------


RENEW_KEYS = ("panel_contact", "panel_recordings")


@bp.route("/renew/<token>", methods=["GET", "POST"])
def renew(token: str) -> str | tuple[str, int]:
    """GET explains and shows a button; the POST renews (mail scanners open links)."""
    form = RenewForm()
    if request.method == "POST" and form.validate_on_submit():
        try:
            with database().transaction() as session:
                person, _ = resolve(session, token, "renew")
                preferences.renew_panel(
                    session,
                    person,
                    contact_notice=notice_id(form.panel_contact_notice.data),
                    recordings=bool(form.panel_recordings.data),
                    recordings_notice=notice_id(form.panel_recordings_notice.data),
                )
                view = preferences.overview(session, person)
            return render_template("public/renewed.html", view=view)
        except InvalidInput as error:
            attach_error(form, error, fallback="submit")
        except DomainError as error:
            return render_template("public/confirm_problem.html", message=error.message), 409
    with database().reader() as session:
        person, _ = resolve(session, token, "renew")
        view = preferences.overview(session, person)
    asked = {key: view.purpose(key) for key in RENEW_KEYS}
    shown = {key: purpose.notice for key, purpose in asked.items()}
    _fill_notices(form, shown)
    page = render_template(
        "public/renew.html",
        form=form,
        view=view,
        shown=shown,
        purposes={key: purpose.purpose for key, purpose in asked.items()},
        records=asked["panel_recordings"].given,
    )
    return page, 400 if form.errors else 200


@bp.route("/feedback/<token>", methods=["GET", "POST"])
def feedback(token: str) -> str | tuple[str, int]:
    form = FeedbackForm()
    with database().reader() as session:
        person, claims = resolve(session, token, "feedback")
        try:
            _, workshop = workshops.open_for_feedback(session, person, claims.ref)
        except DomainError as error:
            status = 404 if isinstance(error, NotFound) else 409
            return render_template("public/confirm_problem.html", message=error.message), status
    if form.validate_on_submit():
        try:
            with database().transaction() as session:
                person, claims = resolve(session, token, "feedback")
                workshops.record_evaluation(
                    session,
                    person,
                    claims.ref,
                    rating=form.rating.data,
                    comments=form.comments.data,
                )
            return render_template("public/feedback_thanks.html", workshop=workshop)
        except InvalidInput as error:
            attach_error(form, error, fallback="rating")
        except DomainError as error:
            return render_template("public/confirm_problem.html", message=error.message), 409
    return render_template("public/feedback.html", form=form, workshop=workshop), (
        400 if form.errors else 200
    )


@bp.route("/join/<token>", methods=["GET", "POST"])
def join_invited(token: str) -> str | tuple[str, int]:
    """Joining from a coordinator's invitation: the signed link proves the mailbox, so the
    answers are recorded straight away, with no second email to confirm."""
    form = JoinForm()
    with database().reader() as session:
        person, claims = resolve(session, token, "join")
        panel = panels.get_panel(session, claims.ref or 0)
        shown = _current(session, *PANEL_KEYS)
        purposes = _purposes(session, *PANEL_KEYS)
    closed = None if panel.status == "open" else "This panel is not taking new members."
    if request.method == "POST":
        form.email.data = person.email
    if not closed and form.validate_on_submit():
        try:
            ticked = _ticked(form, PANEL_KEYS)
            if "panel_contact" not in ticked:
                raise InvalidInput("panel_contact", "Select the box to agree to join the panel.")
            with database().transaction() as session:
                person, claims = resolve(session, token, "join")
                notices_shown = {key: session.get(Notice, number) for key, number in ticked.items()}
                panels.join(
                    session,
                    panels.get_panel(session, claims.ref or 0),
                    person,
                    _profile(form),
                    channel="email_link",
                    actor="self",
                    recordings="panel_recordings" in ticked,
                    shown=notices_shown,
                )
                typed = {"name": form.name.data, "phone": form.phone.data}
                if changes := {field: value for field, value in typed.items() if value}:
                    people.correct_details(
                        session, person, changes, channel="email_link", actor="self"
                    )
            return render_template("public/confirmed.html", kind="panel", already=False)
        except InvalidInput as error:
            attach_error(form, error, fallback="panel_contact")
        except Conflict as error:
            closed = error.message
    _fill_notices(form, shown)
    if request.method == "GET":
        form.name.data = person.name
    return _render_join(form, panel, shown, purposes, closed, invited=person.email)
