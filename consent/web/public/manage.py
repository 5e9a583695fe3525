"""The preferences page and everything reached from it, the unsubscribe page, and /link."""

from __future__ import annotations

import contextlib
import hashlib
import hmac
import json

from flask import Response, flash, redirect, render_template, request, url_for
from sqlmodel import Session
from werkzeug.wrappers import Response as BaseResponse

from consent import links
from consent.errors import Conflict, Erased, InvalidInput, NotFound
from consent.services import audit, link_requests, notices, panels, people, preferences, rights
from consent.validation import normalise_email
from consent.web import database, security, settings
from consent.web.forms import (
    ButtonForm,
    ConsentChangeForm,
    DetailsForm,
    EmailOnlyForm,
    NewEmailForm,
    attach_error,
    notice_id,
)
from consent.web.public import bp
from consent.web.public.helpers import CHANNEL_WORDS, resolve


def _back(token: str, message: str | None = None, *, error: bool = False) -> BaseResponse:
    if message:
        flash(message, "error" if error else "message")
    return redirect(url_for("public.manage", token=token))


@bp.get("/manage/<token>")
def manage(token: str) -> str:
    with database().reader() as session:
        person, _ = resolve(session, token, "manage")
        view = preferences.overview(session, person)
    return render_template("public/manage.html", token=token, view=view, channels=CHANNEL_WORDS)


@bp.post("/manage/<token>/consent")
def change_consent(token: str) -> BaseResponse | tuple[str, int]:
    form = ConsentChangeForm()
    if not form.validate_on_submit() or form.agree.data not in ("yes", "no"):
        return _bad_request()
    agree = form.agree.data == "yes"
    try:
        with database().transaction() as session:
            person, _ = resolve(session, token, "manage")
            changed = preferences.set_consent(
                session,
                person,
                form.purpose.data or "",
                agree=agree,
                notice_id=notice_id(form.notice.data),
            )
    except InvalidInput as error:
        return _back(token, error.message, error=True)
    if not changed:
        return _back(token)
    return _back(
        token,
        "Thank you. We have saved your choice."
        if agree
        else "Done. We have stopped that, and emailed you to confirm.",
    )


def _erased(error: Exception) -> bool:
    """Their details are gone: erased before the request, or while it was on its way."""
    return isinstance(error, Erased) or (isinstance(error, links.RevokedLink) and error.erased)


def _bad_request() -> tuple[str, int]:
    from consent.web.errors import page

    return page(400)


@bp.post("/manage/<token>/stop-everything")
def stop_everything(token: str) -> BaseResponse | tuple[str, int]:
    if not ButtonForm().validate_on_submit():
        return _bad_request()
    with database().transaction() as session:
        person, _ = resolve(session, token, "manage")
        stopped = preferences.withdraw_all(session, person)
    if not stopped:
        return _back(token, "There was nothing to stop.")
    confirmed = " We have emailed you to confirm." if stopped.purposes else ""
    return _back(
        token,
        "Done. You will not get any more emails from us, and you have left "
        f"any panels you were on.{confirmed}",
    )


@bp.post("/manage/<token>/panels/<int:panel_id>/leave")
def leave_panel(token: str, panel_id: int) -> BaseResponse | tuple[str, int]:
    if not ButtonForm().validate_on_submit():
        return _bad_request()
    with database().transaction() as session:
        person, _ = resolve(session, token, "manage")
        left = preferences.leave_panel(session, person, panel_id)
    if left is None:
        return _back(token, "You are not on that panel.")
    return _back(
        token,
        f"Done. You have left the {left}. We have deleted your information for it, "
        "and emailed you to confirm.",
    )


@bp.post("/manage/<token>/bookings/<int:booking_id>/cancel")
def cancel_booking(token: str, booking_id: int) -> BaseResponse | tuple[str, int]:
    if not ButtonForm().validate_on_submit():
        return _bad_request()
    try:
        with database().transaction() as session:
            person, _ = resolve(session, token, "manage")
            preferences.cancel_booking(session, person, booking_id)
    except (NotFound, Conflict) as error:
        return _back(token, error.message, error=True)
    return _back(token, "Your booking is cancelled.")


@bp.route("/manage/<token>/details", methods=["GET", "POST"])
def details(token: str) -> str | BaseResponse | tuple[str, int]:
    form = DetailsForm()
    if form.validate_on_submit():
        try:
            with database().transaction() as session:
                person, _ = resolve(session, token, "manage")
                people.correct_details(
                    session,
                    person,
                    {
                        "name": form.name.data,
                        "phone": form.phone.data,
                        "postcode": form.postcode.data,
                    },
                    channel="email_link",
                    actor="self",
                )
            return _back(token, "Your details are saved.")
        except InvalidInput as error:
            attach_error(form, error, fallback="name")
    with database().reader() as session:
        person, _ = resolve(session, token, "manage")
        member = panels.is_member(session, person)
    if request.method == "GET":
        form.name.data, form.phone.data, form.postcode.data = (
            person.name,
            person.phone,
            person.postcode,
        )
    asks_phone = member or bool(form.phone.data)
    return render_template("public/details.html", form=form, token=token, asks_phone=asks_phone), (
        400 if form.errors else 200
    )


@bp.route("/manage/<token>/email", methods=["GET", "POST"])
def change_email(token: str) -> str | BaseResponse | tuple[str, int]:
    form = NewEmailForm()
    if form.validate_on_submit():
        try:
            with database().transaction() as session:
                person, _ = resolve(session, token, "manage")
                preferences.request_email_change(session, person, form.new_email.data)
            return _back(
                token,
                "We have sent a link to your new email address. Your address "
                "will change when you use it.",
            )
        except InvalidInput as error:
            attach_error(form, error, fallback="new_email")
    with database().reader() as session:
        person, _ = resolve(session, token, "manage")
    return render_template(
        "public/change_email.html", form=form, token=token, current=person.email
    ), (400 if form.errors else 200)


@bp.route("/confirm-email/<token>", methods=["GET", "POST"])
def confirm_email(token: str) -> str | tuple[str, int]:
    form = ButtonForm()
    if request.method == "POST" and form.validate_on_submit():
        try:
            with database().transaction() as session:
                person, claims = resolve(session, token, "confirm_email")
                new = preferences.confirm_email_change(session, person, claims.ref)
                manage_url = links.url_for_session(session, person, "manage")
        except (NotFound, Conflict) as error:
            return render_template("public/confirm_problem.html", message=error.message), 409
        return render_template("public/email_changed.html", email=new, manage_url=manage_url)
    try:
        with database().reader() as session:
            person, claims = resolve(session, token, "confirm_email")
            pending = preferences.pending_email_for(session, person, claims.ref)
    except (NotFound, Conflict) as error:
        return render_template("public/confirm_problem.html", message=error.message), 409
    return render_template("public/confirm_email.html", form=form, email=pending)


@bp.get("/manage/<token>/download")
def download(token: str) -> Response:
    """The audit log records each download; a HEAD request (a link checker, a mail scanner)
    downloads nothing, so it is not recorded as one."""
    with database().transaction() as session:
        person, _ = resolve(session, token, "manage")
        data = rights.export_person(session, person)
        if request.method != "HEAD":
            audit.record(
                session,
                "person.downloaded",
                actor="self",
                object_type="person",
                object_id=person.public_id,
            )
    response = Response(json.dumps(data, indent=2, ensure_ascii=False), mimetype="application/json")
    response.headers["Content-Disposition"] = 'attachment; filename="my-data.json"'
    return response


@bp.get("/manage/<token>/data")
def data_page(token: str) -> str:
    with database().reader() as session:
        person, _ = resolve(session, token, "manage")
        data = rights.export_person(session, person)
    return render_template("public/my_data.html", data=data, token=token, channels=CHANNEL_WORDS)


@bp.route("/manage/<token>/delete", methods=["GET", "POST"])
def delete(token: str) -> str | tuple[str, int]:
    form = ButtonForm()
    if request.method == "POST":
        if not form.validate_on_submit():
            return _bad_request()
        try:
            with database().transaction() as session:
                person, _ = resolve(session, token, "manage")
                preferences.delete_everything(session, person)
        except (links.RevokedLink, Erased) as error:
            # A second press of the button: their own link, so this tells them nothing new.
            if not _erased(error):
                raise
        return render_template("public/deleted.html")
    with database().reader() as session:
        resolve(session, token, "manage")
    return render_template("public/delete.html", form=form, token=token)


# ---- unsubscribe --------------------------------------------------------------------------

BOOKING_MAIL = (
    "Reminders and requests for feedback about workshops you have booked (your places stay booked)"
)
INVITATIONS = "Invitations to join a Parent Carer Panel"


@bp.get("/unsubscribe/<token>")
def unsubscribe(token: str) -> str | tuple[str, int]:
    with database().reader() as session:
        try:
            person, claims = resolve(session, token, "unsubscribe")
        except links.RevokedLink as error:
            if error.erased:
                return render_template("public/unsubscribed.html", stopped=[], erased=True)
            raise
        scope = preferences.unsubscribe_scope(session, person, claims.purpose)
        titles = _titles(session, scope)
    return render_template(
        "public/unsubscribe.html",
        form=ButtonForm(),
        titles=titles,
        leaves_panel="panel_contact" in scope.purposes,
        stays_on_panel=scope.keeps_panel,
    )


def _titles(session: Session, stopping: preferences.Stopping) -> list[str]:
    """What an unsubscribe stops, in the words the page and its confirmation use."""
    titles = [notices.get_purpose(session, key).title for key in stopping.purposes]
    if stopping.bookings:
        titles.append(BOOKING_MAIL)
    if stopping.invitations:
        titles.append(INVITATIONS)
    return titles


@bp.post("/unsubscribe/<token>")
@security.csrf.exempt
def unsubscribe_post(token: str) -> str | tuple[str, int]:
    """Both the page's button and RFC 8058 one-click from a mail client land here.

    No CSRF token (and no rate limit): the signed link is the proof, and stopping mail
    twice is harmless.
    """
    one_click = request.form.get("List-Unsubscribe") == "One-Click"
    try:
        with database().transaction() as session:
            person, claims = resolve(session, token, "unsubscribe")
            stopped = preferences.unsubscribe(session, person, claims.purpose, one_click=one_click)
            titles = _titles(session, stopped)
    except (links.RevokedLink, Erased) as error:
        if not _erased(error):
            raise
        if one_click:
            return "Unsubscribed.", 200
        return render_template("public/unsubscribed.html", stopped=[], erased=True)
    if one_click:
        return "Unsubscribed.", 200
    return render_template("public/unsubscribed.html", stopped=titles, erased=False)


# ---- a new link ---------------------------------------------------------------------------


def _email_key() -> str:
    """Rate-limit key per mailbox, stored as a keyed hash, never as the address. The
    address is normalised as the request will be: other spellings of one mailbox (capitals,
    full-width letters) must share its limit."""
    raw = (request.form.get("email") or "").strip().lower()[:320]
    with contextlib.suppress(InvalidInput):
        raw = normalise_email(raw)
    digest = hmac.new(settings().hash_key.encode(), raw.encode(), hashlib.sha256)
    return "link:" + digest.hexdigest()


@bp.route("/link", methods=["GET", "POST"])
@security.limiter.limit(security.LINK_LIMIT, methods=["POST"])
@security.limiter.limit(security.LINK_LIMIT, methods=["POST"], key_func=_email_key)
def new_link() -> str | tuple[str, int]:
    form = EmailOnlyForm()
    if form.validate_on_submit():
        try:
            with database().transaction() as session:
                link_requests.ask(session, form.email.data)
            return render_template("public/link_sent.html")
        except InvalidInput as error:
            attach_error(form, error, fallback="email")
    return render_template("public/link.html", form=form), (400 if form.errors else 200)
