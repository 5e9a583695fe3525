"""The pages parents and carers use: sign up, confirm, manage, unsubscribe, delete."""

from __future__ import annotations

from flask import Blueprint

from consent.web.security import POST_LIMIT, limiter

bp = Blueprint("public", __name__)
limiter.limit(POST_LIMIT, methods=["POST"])(bp)

from consent.web.public import manage, pages, signup  # noqa: E402, F401  (registers routes)
