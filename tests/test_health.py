"""``/healthz`` tells a load balancer the truth about the database."""

from __future__ import annotations

from pathlib import Path

from flask.testing import FlaskClient

from consent import create_app
from tests.conftest import make_settings


def test_healthy_when_the_database_answers(client: FlaskClient) -> None:
    response = client.get("/healthz")
    assert response.status_code == 200
    assert response.get_json()["database"] == "ok"


def test_unavailable_when_the_database_does_not_answer(tmp_path: Path) -> None:
    settings = make_settings(tmp_path, "postgresql+psycopg://nobody@127.0.0.1:9/nothing")
    app = create_app(settings)
    response = app.test_client().get("/healthz")
    assert response.status_code == 503
    assert response.get_json()["database"] == "unreachable"
