"""``/healthz``: 200 only when the database answers, for load balancers and monitoring."""

from __future__ import annotations

from flask import Blueprint, Response, jsonify

from consent.web import database

bp = Blueprint("health", __name__)


@bp.get("/healthz")
def healthz() -> tuple[Response, int]:
    if database().ping():
        return jsonify(status="ok", database="ok"), 200
    return jsonify(status="unavailable", database="unreachable"), 503
