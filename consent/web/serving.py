"""The development server's request handler, made safe to log from.

Werkzeug logs every request line, which would put signed tokens (and the Mailchimp
webhook secret) in the log. The application's own access log already records each
request with those parts redacted, so this handler logs nothing per request and redacts
anything else it has to say.
"""

from __future__ import annotations

from typing import Any

from werkzeug.serving import WSGIRequestHandler

from consent.log_privacy import loggable


class RedactingRequestHandler(WSGIRequestHandler):
    def log_request(self, code: int | str = "-", size: int | str = "-") -> None:
        return

    def log(self, type: str, message: str, *args: Any) -> None:
        super().log(type, "%s", loggable(message % args if args else message))
