"""Rights requests that arrive by post, phone or email, and their statutory deadline."""

from __future__ import annotations

from flask import flash, redirect, render_template, request, url_for
from werkzeug.wrappers import Response

from consent import loading
from consent.errors import Conflict, InvalidInput
from consent.services import rights as service
from consent.web import database
from consent.web.admin import DPO, bp, roles, staff
from consent.web.admin.forms import ExtendForm, RightsForm, RightsUpdateForm
from consent.web.forms import attach_error


@bp.get("/rights")
@roles(DPO)
def rights() -> str:
    with database().reader() as session:
        found = service.list_requests(session)
    return render_template(
        "admin/rights.html", requests=found, overdue_before=service.overdue_cutoff()
    )


@bp.route("/rights/new", methods=["GET", "POST"])
@roles(DPO)
def rights_new() -> str | Response | tuple[str, int]:
    form = RightsForm()
    if form.validate_on_submit():
        user = staff()
        try:
            with database().transaction() as session:
                logged = service.log_request(
                    session,
                    kind=form.kind.data,
                    channel=form.channel.data,
                    received=form.received.data,
                    requester=form.requester.data,
                    email=form.email.data,
                    actor_id=user.user_id,
                    actor=user.actor,
                )
            flash(f"Request logged. It is due by {logged.due_at:%d %B %Y}.")
            return redirect(url_for("admin.rights"))
        except InvalidInput as error:
            attach_error(form, error, fallback="requester")
    return render_template("admin/rights_form.html", form=form), (400 if form.errors else 200)


@bp.route("/rights/<int:request_id>", methods=["GET", "POST"])
@roles(DPO)
def rights_request(request_id: int) -> str | Response | tuple[str, int]:
    form = RightsUpdateForm()
    if form.validate_on_submit():
        user = staff()
        try:
            with database().transaction() as session:
                found = service.get_request(session, request_id)
                service.update_request(
                    session,
                    found,
                    status=form.status.data,
                    outcome=form.outcome.data,
                    actor_id=user.user_id,
                    actor=user.actor,
                )
            flash("Request updated.")
            return redirect(url_for("admin.rights"))
        except InvalidInput as error:
            attach_error(form, error, fallback="outcome")
    return _request_page(request_id, form, ExtendForm(), fill=request.method == "GET")


def _request_page(
    request_id: int, form: RightsUpdateForm, extend: ExtendForm, *, fill: bool
) -> tuple[str, int]:
    """The request's page; ``fill`` puts its saved status and outcome in the form."""
    with database().reader() as session:
        found = service.get_request(session, request_id)
        person = loading.person_by_id.get(session, found.person_id) if found.person_id else None
    if fill:
        form.status.data, form.outcome.data = found.status, found.outcome
    return render_template(
        "admin/rights_request.html",
        item=found,
        person=person,
        form=form,
        extend=extend,
        can_extend=service.can_extend(found),
        extended_months=service.EXTENDED_MONTHS,
        overdue_before=service.overdue_cutoff(),
    ), (400 if form.errors or extend.errors else 200)


@bp.post("/rights/<int:request_id>/extend")
@roles(DPO)
def rights_extend(request_id: int) -> Response | tuple[str, int]:
    extend = ExtendForm()
    if extend.validate_on_submit():
        user = staff()
        try:
            with database().transaction() as session:
                found = service.get_request(session, request_id)
                service.extend_request(
                    session,
                    found,
                    reason=extend.reason.data or "",
                    actor_id=user.user_id,
                    actor=user.actor,
                )
            flash("Request given two more months.")
            return redirect(url_for("admin.rights_request", request_id=request_id))
        except Conflict as error:
            flash(error.message, "error")
            return redirect(url_for("admin.rights_request", request_id=request_id))
        except InvalidInput as error:
            attach_error(extend, error, fallback="reason")
    return _request_page(request_id, RightsUpdateForm(formdata=None), extend, fill=True)
