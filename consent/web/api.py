"""``/api/v1``: JSON for other council systems, with API keys and an OpenAPI description.

Every call but the description needs ``Authorization: Bearer <key>``, and runs in one
transaction with the key check. Errors are RFC 9457 problem documents, and nothing is
cached. Each consent lookup is written to the audit log under the key that asked.
"""

from __future__ import annotations

import functools
from collections.abc import Callable
from datetime import UTC, datetime
from typing import Any

from flask import Blueprint, Flask, Response, current_app, jsonify, request
from flask_limiter.util import get_remote_address
from sqlmodel import Session
from werkzeug.exceptions import HTTPException

from consent.errors import InvalidInput
from consent.models import ApiKey
from consent.services import api_keys, audit, consent_checks, notice_catalogue, reports
from consent.web import database
from consent.web.openapi import document
from consent.web.security import csrf, limiter

bp = Blueprint("api", __name__, url_prefix="/api/v1")

#: Lookups one key may make: plenty for a system checking people as it contacts them.
LOOKUP_LIMIT = "600 per minute"
#: Lookups refused for want of a working key, per address: a misconfigured system, or a guess.
REFUSED_LIMIT = "30 per minute"

View = Callable[..., Response]


def problem(status: int, title: str, detail: str, **extra: Any) -> Response:
    """An RFC 9457 problem document: what went wrong, in words a developer can act on."""
    response = jsonify(
        {"type": "about:blank", "title": title, "status": status, "detail": detail, **extra}
    )
    response.status_code = status
    response.mimetype = "application/problem+json"
    return response


def http_problem(error: HTTPException) -> Response:
    """Werkzeug's errors (404, 405, 413, 429) as problem documents, keeping their headers."""
    status = error.code or 500
    response = problem(status, error.name, error.description or error.name)
    for name, value in error.get_headers():
        if name.lower() != "content-type":
            response.headers[name] = value
    return response


def _presented() -> str | None:
    scheme, _, credentials = request.headers.get("Authorization", "").partition(" ")
    credentials = credentials.strip()
    return credentials if scheme.lower() == "bearer" and credentials else None


def _unauthorised(detail: str) -> Response:
    response = problem(401, "Unauthorized", detail)
    response.headers["WWW-Authenticate"] = 'Bearer realm="api"'
    return response


def keyed(scope: str | None) -> Callable[[View], Callable[..., Response]]:
    """The view runs only for a working key holding ``scope``, in one transaction with it."""

    def wrap(view: View) -> Callable[..., Response]:
        @functools.wraps(view)
        def guarded(*args: Any, **kwargs: Any) -> Response:
            presented = _presented()
            if presented is None:
                return _unauthorised("Send your API key in the header Authorization: Bearer KEY.")
            with database().transaction() as session:
                key = api_keys.authenticate(session, presented)
                if key is None:
                    return _unauthorised("That API key is not known or has been revoked.")
                if scope is not None and scope not in key.scope_set:
                    return problem(
                        403,
                        "Forbidden",
                        f"This API key does not have the {scope} permission. "
                        "Ask an administrator for a key that has it.",
                    )
                return view(session, key, *args, **kwargs)

        guarded.api_scope = scope  # type: ignore[attr-defined]
        return guarded

    return wrap


def _lookup_limit() -> str:
    return str(current_app.config.get("API_LOOKUP_LIMIT", LOOKUP_LIMIT))


def _refused_limit() -> str:
    return str(current_app.config.get("API_REFUSED_LIMIT", REFUSED_LIMIT))


def _limit_key() -> str:
    """Lookups are counted per key, or per address for a request without one."""
    prefix = api_keys.prefix_of(_presented() or "")
    return f"api-key:{prefix}" if prefix else get_remote_address()


def _authenticated(response: Response) -> bool:
    """Only a call the key was accepted for counts against it: a key's prefix is no secret,
    and refused calls bearing it must not use up the real key's allowance."""
    return response.status_code != 401


def _refused(response: Response) -> bool:
    return response.status_code == 401


def _time(moment: datetime | None) -> str | None:
    if moment is None:
        return None
    return moment.astimezone(UTC).isoformat(timespec="seconds").replace("+00:00", "Z")


def _json_object() -> dict[str, Any] | None:
    """The body as a JSON object, or None. A body nested deeply enough to exhaust the
    parser's recursion is as unreadable as one that is not JSON at all."""
    try:
        body = request.get_json(silent=True)
    except RecursionError:
        return None
    return body if isinstance(body, dict) else None


@bp.after_request
def _never_cached(response: Response) -> Response:
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/openapi.json")
def openapi() -> Response:
    return jsonify(document())


@bp.get("/purposes")
@keyed(None)
def purposes(session: Session, key: ApiKey) -> Response:
    catalogue = notice_catalogue.current(session)
    listed = []
    for purpose in catalogue.purposes:
        notice = catalogue.newest[purpose.id or 0]
        listed.append(
            {
                "key": purpose.key,
                "title": purpose.title,
                "summary": purpose.summary,
                "lawful_basis": purpose.lawful_basis,
                "retention": purpose.retention,
                "notice": {
                    "version": notice.version,
                    "published_at": _time(notice.published_at),
                    "statement": notice.statement,
                },
            }
        )
    return jsonify({"purposes": listed})


@bp.post("/consents/lookup")
@limiter.limit(_lookup_limit, key_func=_limit_key, deduct_when=_authenticated)
@limiter.limit(_refused_limit, key_func=get_remote_address, deduct_when=_refused)
@keyed("consents:read")
def consent_lookup(session: Session, key: ApiKey) -> Response:
    if request.mimetype != "application/json":
        return problem(
            415, "Unsupported Media Type", "Send JSON with Content-Type: application/json."
        )
    body = _json_object()
    if body is None:
        return problem(400, "Bad Request", 'Send a JSON object like {"email": "name@example.com"}.')
    try:
        found = consent_checks.check(session, body.get("email"))
    except InvalidInput as error:
        return problem(400, "Bad Request", error.message, field=error.field)
    audit.record(
        session,
        "api.consent_lookup",
        actor=f"api:{key.id}",
        object_type="person" if found.known else None,
        object_id=found.public_id,
        detail={"api_key": key.prefix, "known": found.known},
    )
    return jsonify(
        {
            "known": found.known,
            "consents": [
                {
                    "purpose": item.purpose,
                    "status": item.status,
                    "since": _time(item.since),
                    "expires_at": _time(item.expires_at),
                    "notice_version": item.notice_version,
                }
                for item in found.purposes
            ],
        }
    )


@bp.get("/reports/<name>")
@keyed("reports:read")
def report(session: Session, key: ApiKey, name: str) -> Response:
    if name not in reports.REPORTS:
        return problem(
            404,
            "Not Found",
            f"There is no report called {name!r}.",
            reports=sorted(reports.REPORTS),
        )
    breakdown = request.args.get("breakdown") or reports.default_dimension(name)
    try:
        cells = reports.table(
            session,
            name,
            start=request.args.get("from", ""),
            end=request.args.get("to", ""),
            dimension=breakdown,
        )
    except InvalidInput as error:
        if error.field == "dimension":
            return problem(403, "Forbidden", error.message)
        field = {"start": "from", "end": "to"}.get(error.field, error.field)
        return problem(400, "Bad Request", error.message, field=field)
    names = reports.scope_names(session)
    return jsonify(
        {
            "report": name,
            "title": reports.REPORTS[name][0],
            "from": request.args["from"],
            "to": request.args["to"],
            "breakdown": breakdown,
            "rows": [
                {
                    "scope": cell.scope,
                    "scope_name": names.get(cell.scope, cell.scope),
                    "measure": cell.metric,
                    "value": cell.value,
                    "count": cell.published,
                    "shown": cell.shown,
                }
                for cell in cells
            ],
        }
    )


def init_app(app: Flask) -> None:
    app.register_blueprint(bp)
    csrf.exempt(bp)
