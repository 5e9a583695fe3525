"""Random and hostile input against every public form and link: never a 500, and a refused
request leaves every table exactly as it was."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select, table

from consent import links
from consent.db import Database
from consent.services import people
from tests import factories
from tests.web import csrf, hidden_fields

FIXTURES_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

hostile_text = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=400),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\x00b@example.com",
            "<script>alert(1)</script>",
            "' OR 1=1 --",
            "x" * 5000,
            "😀@example.com",
            "ab@example.com\r\nBcc: x@example.com",
            "%00",
            "../..",
            "{{7*7}}",
            "Robert'); DROP TABLE person;--",
            "\u202e",
            "\uff21\uff22\uff23@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",
            "a@b",
            "@example.com",
            "name@",
            "99999999999999999999999",
        ]
    ),
)
FORM_FIELDS = [
    "email",
    "name",
    "newsletter",
    "family_hub_events",
    "newsletter_notice",
    "family_hub_events_notice",
    "workshops",
    "workshops_notice",
    "setting",
    "district",
    "job_role",
    "phone",
    "postcode",
    "age_band",
    "children_count",
    "children_ages",
    "services_used",
    "ethnicity",
    "disability",
    "needs",
    "religion",
    "sexual_orientation",
    "gender",
    "gender_identity",
    "panel_contact",
    "panel_recordings",
    "panel_contact_notice",
    "panel_recordings_notice",
    "new_email",
    "purpose",
    "agree",
    "notice",
]
forms = st.dictionaries(st.sampled_from(FORM_FIELDS), hostile_text, max_size=14)


def _counts(db: Database) -> dict[str, int]:
    names = inspect(db.engine).get_table_names()
    with db.engine.connect() as conn:
        return {
            name: conn.execute(select(func.count()).select_from(table(name))).scalar_one()
            for name in names
        }


@pytest.fixture
def world(app: Flask) -> dict[str, str]:
    db: Database = app.extensions["consent.db"]
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="fuzz@example.com")
        panel = factories.panel(session)
        workshop = factories.workshop(session, days=5, capacity=5)
        token = links.make_token(db.settings, person, "manage")
    return {
        "/newsletter": "/newsletter",
        f"/workshops/{workshop.id}": f"/workshops/{workshop.id}",
        f"/panels/{panel.id}/join": f"/panels/{panel.id}/join",
        "/link": "/link",
        f"/manage/{token}/details": f"/manage/{token}/details",
        f"/manage/{token}/email": f"/manage/{token}/email",
        f"/manage/{token}/consent": f"/manage/{token}",
        f"/manage/{token}/stop-everything": f"/manage/{token}",
    }


@settings(max_examples=120, deadline=None, suppress_health_check=FIXTURES_OK)
@given(data=st.data(), body=forms)
def test_hostile_form_posts_never_500_and_never_half_write(
    app: Flask, client: FlaskClient, world: dict[str, str], data: st.DataObject, body: dict
) -> None:
    db: Database = app.extensions["consent.db"]
    target = data.draw(st.sampled_from(sorted(world)), label="endpoint")
    page = client.get(world[target]).get_data(as_text=True)
    fields = {**hidden_fields(page), **body, "csrf_token": csrf(page)}
    before = _counts(db)
    response = client.post(target, data=fields)
    assert response.status_code < 500, (target, body)
    if response.status_code >= 400:
        assert _counts(db) == before, (target, body)


@settings(max_examples=150, deadline=None, suppress_health_check=FIXTURES_OK)
@given(
    kind=st.sampled_from(["manage", "unsubscribe", "confirm", "confirm-email"]),
    token=st.one_of(st.text(max_size=300), st.from_regex(r"[\w.\-]{0,200}", fullmatch=True)),
    method=st.sampled_from(["GET", "POST"]),
)
def test_random_tokens_get_a_400_or_410_and_change_nothing(
    app: Flask, client: FlaskClient, kind: str, token: str, method: str
) -> None:
    db: Database = app.extensions["consent.db"]
    before = _counts(db)
    path = f"/{kind}/{token}".replace("?", "%3F").replace("#", "%23")
    response = client.open(path, method=method, data={"List-Unsubscribe": "One-Click"})
    # 308: the router tidies a doubled slash before anything reads the token.
    assert response.status_code in (308, 400, 404, 405, 410), (path, response.status_code)
    assert _counts(db) == before


def test_a_token_for_another_action_is_refused(app: Flask, client: FlaskClient) -> None:
    db: Database = app.extensions["consent.db"]
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter")
        token = links.make_token(db.settings, person, "unsubscribe", purpose="newsletter")
    assert client.get(f"/manage/{token}").status_code == 400
    assert client.post(f"/manage/{token}/delete").status_code in (400, 403)
    with db.reader() as session:
        assert people.find_by_email(session, person.email) is not None
