"""Error pages in plain English. A broken or old link gets a page that says what to do."""

from __future__ import annotations

import logging

from flask import Flask, Response, render_template, request
from flask_wtf.csrf import CSRFError
from werkzeug.exceptions import HTTPException

from consent.errors import Erased, NotFound
from consent.links import ExpiredLink, LinkError, RevokedLink
from consent.web.api import http_problem, problem

log = logging.getLogger(__name__)

PAGES: dict[int, tuple[str, str]] = {
    400: ("Sorry, there is a problem with that request", "Go back and try again."),
    403: ("You cannot see this page", "If you think you should, contact the Family Hub team."),
    404: ("Page not found", "If you typed the web address, check it is correct."),
    405: ("Sorry, there is a problem with that request", "Go back and try again."),
    410: ("This page is no longer available", ""),
    413: ("What you sent is too large", "Go back and try with less."),
    429: ("Too many attempts", "Wait a minute, then try again."),
    500: ("Sorry, there is a problem with the service", "Try again later."),
}


def page(status: int, heading: str | None = None, body: str | None = None) -> tuple[str, int]:
    default_heading, default_body = PAGES.get(status, PAGES[500])
    shown = default_body if body is None else body
    html = render_template(
        "errors/page.html", heading=heading or default_heading, body=shown, status=status
    )
    return html, status


def link_page(error: LinkError) -> tuple[str, int]:
    """Tampered links get a 400; expired and revoked ones a 410 offering a fresh link."""
    if isinstance(error, ExpiredLink | RevokedLink):
        return render_template("errors/link.html", expired=True), 410
    return render_template("errors/link.html", expired=False), 400


def init_app(app: Flask) -> None:
    @app.errorhandler(LinkError)
    def _link(error: LinkError) -> tuple[str, int]:
        return link_page(error)

    @app.errorhandler(Erased)
    def _erased(error: Erased) -> tuple[str, int] | Response:
        """Someone erased while their request was on its way: there is nothing left to do."""
        if request.path.startswith("/api/"):
            return problem(410, "Gone", error.message)
        if request.path.startswith("/admin"):
            return page(410, body=error.message)
        return page(
            410,
            "Your details have been deleted",
            "We no longer hold your details, so there is nothing left to change. "
            "You can sign up again at any time.",
        )

    @app.errorhandler(NotFound)
    def _not_found(error: NotFound) -> tuple[str, int]:
        return page(404, body=error.message)

    @app.errorhandler(CSRFError)
    def _csrf(error: CSRFError) -> tuple[str, int]:
        return page(
            400,
            "Sorry, this form has expired",
            "For your security, forms stop working after a while. Go back, reload the page "
            "and try again.",
        )

    @app.errorhandler(HTTPException)
    def _http(error: HTTPException) -> tuple[str, int] | Response:
        status = error.code or 500
        if request.path.startswith("/api/"):
            return http_problem(error)
        if request.path.startswith("/healthz"):
            return error.get_response()
        return page(status)

    @app.errorhandler(Exception)
    def _unexpected(error: Exception) -> tuple[str, int] | Response:
        log.exception("unhandled error on %s", request.endpoint)
        if request.path.startswith("/api/"):
            return problem(500, "Internal Server Error", "Something went wrong. Try again later.")
        return page(500)
