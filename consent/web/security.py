"""Security headers, CSRF, rate limits and request logging that never records a token.

Every response gets a strict Content-Security-Policy (no inline script or style, nothing
from elsewhere, no framing). Pages reached by a signed link also get
``Referrer-Policy: no-referrer`` and ``Cache-Control: no-store``, so the token does not
leak to other sites or linger in caches.
"""

from __future__ import annotations

import logging
import re
import time

from flask import Flask, Response, abort, g, request
from flask.sessions import SecureCookieSessionInterface
from flask_limiter import Limiter
from flask_limiter.util import get_remote_address
from flask_wtf.csrf import CSRFProtect
from itsdangerous import URLSafeTimedSerializer

from consent.log_privacy import SECRET_SEGMENTS, loggable
from consent.services import imports

#: Methods that only read. Every rate limit here is on POST, so these are never limited.
READING = frozenset({"GET", "HEAD", "OPTIONS"})


class _PostLimiter(Limiter):
    """Flask-Limiter that does not look at requests which only read.

    A request filter alone still runs the limiter's bookkeeping on every page view (about
    35 µs of a 1.5 ms preferences page); every limit is on POST, so reads return at once.
    """

    def _check_request_limit(
        self, callable_name: str | None = None, in_middleware: bool = True
    ) -> None:
        if request.method in READING:
            return
        super()._check_request_limit(callable_name, in_middleware)


csrf = CSRFProtect()
limiter = _PostLimiter(key_func=get_remote_address, default_limits=[])


@limiter.request_filter
def _reading() -> bool:
    """Reads are never limited, even if a Flask-Limiter release stops calling the hook that
    ``_PostLimiter`` overrides (its name is not part of the library's public interface)."""
    return request.method in READING


#: What a parent may POST, per address: plenty for a person, too few for a script.
#: Endpoints that take more than the 2 MB any other request may send: an import list, with
#: room for the rest of its form, so that a list just over its limit is told so in words.
LARGER_BODIES = {"admin.import_start": imports.UPLOAD_MAX + 5 * 1024 * 1024}
POST_LIMIT = "20 per minute;200 per hour"
LINK_LIMIT = "5 per minute;30 per hour"

CSP = "; ".join(
    [
        "default-src 'self'",
        "script-src 'self'",
        "style-src 'self'",
        "img-src 'self' data:",
        "font-src 'self'",
        "connect-src 'self'",
        "form-action 'self'",
        "frame-ancestors 'none'",
        "base-uri 'none'",
        "object-src 'none'",
    ]
)


class _SessionCookies(SecureCookieSessionInterface):
    """Flask's signed session cookie, with its signer built once per set of keys.

    Flask builds the signer afresh to read and again to write the cookie (8 µs each time).
    Signers are kept by the keys they sign with, so new keys get a new one.
    """

    def __init__(self) -> None:
        self._signers: dict[tuple[object, ...], URLSafeTimedSerializer | None] = {}

    def get_signing_serializer(self, app: Flask) -> URLSafeTimedSerializer | None:
        keys = (app.secret_key, *(app.config["SECRET_KEY_FALLBACKS"] or ()))
        if keys not in self._signers:
            self._signers[keys] = super().get_signing_serializer(app)
        return self._signers[keys]


#: Headers on every response, unless the view set its own.
_ALWAYS = (
    ("Content-Security-Policy", CSP),
    ("X-Content-Type-Options", "nosniff"),
    ("X-Frame-Options", "DENY"),
    ("Cross-Origin-Opener-Policy", "same-origin"),
    ("Permissions-Policy", "camera=(), microphone=(), geolocation=()"),
)

#: Paths that carry a signed token or a secret.
_SECRET_PATH = re.compile(rf"^/({'|'.join(map(re.escape, SECRET_SEGMENTS))})/[^/?]+")

access_log = logging.getLogger("consent.access")


#: The bodies Werkzeug parses into ``request.form`` and ``request.files``; no other has fields.
_FORM_TYPES = frozenset({"application/x-www-form-urlencoded", "multipart/form-data"})


def carries_nul() -> bool:
    """Whether any part of the request a view could store holds a NUL character.

    No person types one and PostgreSQL cannot store one in text, so such a request is refused
    whole before any view sees it, on every database alike.
    """
    if "\x00" in request.path:
        return True
    if request.query_string:
        for key, value in request.args.items(multi=True):
            if "\x00" in key or "\x00" in value:
                return True
    if request.mimetype not in _FORM_TYPES:
        return False
    for key, value in request.form.items(multi=True):
        if "\x00" in key or "\x00" in value:
            return True
    return any("\x00" in (upload.filename or "") for upload in request.files.values())


def token_page() -> None:
    """Mark this response as reached by a signed link."""
    g.token_page = True


def init_app(app: Flask) -> None:
    settings = app.config["SETTINGS"]
    app.config.setdefault("WTF_CSRF_TIME_LIMIT", 60 * 60 * 4)
    # itsdangerous signs with the last key of a list and accepts any: oldest first.
    app.config["WTF_CSRF_SECRET_KEY"] = list(reversed(settings.secret_keys))
    app.config["WTF_CSRF_SSL_STRICT"] = settings.base_url.startswith("https")
    app.config["RATELIMIT_STORAGE_URI"] = settings.redis_url or "memory://"
    app.config["RATELIMIT_ENABLED"] = settings.rate_limits
    app.config["RATELIMIT_HEADERS_ENABLED"] = True
    app.config["RATELIMIT_STRATEGY"] = "fixed-window"
    app.config["RATELIMIT_SWALLOW_ERRORS"] = True
    app.config["SESSION_COOKIE_HTTPONLY"] = True
    app.config["SESSION_COOKIE_SAMESITE"] = "Lax"
    app.config["SESSION_COOKIE_SECURE"] = settings.base_url.startswith("https")
    app.config["MAX_CONTENT_LENGTH"] = 2 * 1024 * 1024
    app.session_interface = _SessionCookies()

    @app.before_request
    def _larger_uploads() -> None:
        """Registered before CSRF protection, which reads the form, and so the body, first:
        a limit raised any later would come too late."""
        allowed = LARGER_BODIES.get(request.endpoint or "")
        if allowed is not None:
            request.max_content_length = allowed

    csrf.init_app(app)
    limiter.init_app(app)
    always = [*_ALWAYS]
    if settings.is_production and settings.base_url.startswith("https"):
        always.append(("Strict-Transport-Security", "max-age=31536000; includeSubDomains"))

    @app.before_request
    def _start_timer() -> None:
        g.started = time.perf_counter()

    @app.before_request
    def _refuse_nul() -> None:
        if carries_nul():
            abort(400)

    @app.after_request
    def _headers(response: Response) -> Response:
        headers = response.headers
        present = {key.lower() for key, _ in headers.items()}
        for key, value in always:
            if key.lower() not in present:
                headers.add(key, value)
        if getattr(g, "token_page", False) or _SECRET_PATH.match(request.path):
            headers["Referrer-Policy"] = "no-referrer"
            headers["Cache-Control"] = "no-store"
        elif "referrer-policy" not in present:
            headers.add("Referrer-Policy", "strict-origin-when-cross-origin")
        if access_log.isEnabledFor(logging.INFO):
            started = getattr(g, "started", None)
            elapsed = (time.perf_counter() - started) * 1000 if started else 0.0
            access_log.info(
                "%s %s %s %.1fms",
                request.method,
                loggable(request.path),
                response.status_code,
                elapsed,
            )
        return response
