"""Anonymised reports from the counts recorded when things happened; CSV for returns."""

from __future__ import annotations

from flask import Response, render_template, request

from consent.errors import DomainError, InvalidInput
from consent.services import reports as service
from consent.timeutil import utcnow
from consent.validation import whole_number
from consent.web import database
from consent.web.admin import COORDINATOR, DPO, audited, bp, roles, staff


def _audit_special(report: str, dimension: str, start: str, end: str, shown_as: str) -> None:
    """Each view of special category answers is audited, counts included."""
    if service.is_special_category(dimension):
        with database().transaction() as session:
            audited(
                session,
                "report.special_category_viewed",
                report=report,
                dimension=dimension,
                start=start,
                end=end,
                shown_as=shown_as,
            )


def _choices() -> tuple[str, str, str, str]:
    this_month = service.period_of(utcnow())
    report = request.args.get("report", "consents")
    if report not in service.REPORTS:
        report = "consents"
    start = request.args.get("start") or f"{int(this_month[:4]) - 1}{this_month[4:]}"
    end = request.args.get("end") or this_month
    dimension = request.args.get("dimension") or service.default_dimension(report)
    return report, start, end, dimension


@bp.get("/reports")
@roles(COORDINATOR, DPO)
def reports() -> str | tuple[str, int]:
    report, start, end, dimension = _choices()
    error = None
    cells: list[service.Cell] = []
    special = staff().role == DPO
    with database().reader() as session:
        dimensions = service.dimensions(session, report, special_category=special)
        dimension = service.dimension_for(report, dimension, dimensions)
        try:
            cells = service.table(
                session, report, start=start, end=end, dimension=dimension, special_category=special
            )
        except InvalidInput as problem:
            error = problem
        names = service.scope_names(session)
    if error is None:
        _audit_special(report, dimension, start, end, "page")
    return render_template(
        "admin/reports.html",
        reports=service.REPORTS,
        report=report,
        start=start,
        end=end,
        dimension=dimension,
        dimensions=dimensions,
        cells=cells,
        names=names,
        error=error,
    ), (400 if error else 200)


@bp.get("/reports.csv")
@roles(COORDINATOR, DPO)
def reports_csv() -> Response | tuple[str, int]:
    report, start, end, dimension = _choices()
    special = staff().role == DPO
    with database().reader() as session:
        available = service.dimensions(session, report, special_category=special)
        dimension = service.dimension_for(report, dimension, available)
        try:
            cells = service.table(
                session,
                report,
                start=start,
                end=end,
                dimension=dimension,
                special_category=special,
            )
        except InvalidInput as problem:
            return problem.message, 400
        body = service.as_csv(cells, service.scope_names(session))
    _audit_special(report, dimension, start, end, "csv")
    response = Response(body, mimetype="text/csv")
    response.headers["Content-Disposition"] = (
        f'attachment; filename="{report}-{dimension}-{start}-to-{end}.csv"'
    )
    return response


@bp.get("/exports/<kind>/<key>.csv")
@roles(COORDINATOR, DPO)
def export_list(kind: str, key: str) -> Response | tuple[str, int]:
    """A list as CSV, built in the same transaction as the audit record of its download."""
    from consent.services import exports

    makers = {
        "purpose": exports.purpose_list,
        "panel": exports.panel_list,
        "workshop": exports.workshop_list,
    }
    number = whole_number(key)
    if kind not in makers or (kind != "purpose" and number is None):
        return "Not found", 404
    argument: str | int = key if kind == "purpose" else number or 0
    with database().transaction() as session:
        try:
            lines = list(makers[kind](session, argument))  # type: ignore[arg-type]
        except DomainError as error:
            return error.message, 404
        audited(session, "list.exported", object_type=kind, object_id=key, rows=len(lines) - 1)
    response = Response("".join(lines), mimetype="text/csv")
    response.headers["Content-Disposition"] = f'attachment; filename="{kind}-{key}.csv"'
    response.headers["Cache-Control"] = "no-store"
    return response
