"""The pages parents and carers use: sign up, confirm, manage, unsubscribe, delete."""

from __future__ import annotations

from flask import Blueprint, request

from consent.web.security import POST_LIMIT, limiter

bp = Blueprint("public", __name__)


def _unsubscribing() -> bool:
    """Unsubscribes are not limited: the signed link is the proof, stopping mail twice is
    harmless, and a mail provider sends many users' one-click requests from a few addresses."""
    return request.endpoint == "public.unsubscribe_post"


limiter.limit(POST_LIMIT, methods=["POST"], exempt_when=_unsubscribing)(bp)

from consent.web.public import manage, pages, signup  # noqa: E402, F401  (registers routes)
