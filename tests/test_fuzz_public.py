"""Random and hostile input against every public form and link: never a 500, and a refused
request leaves every table exactly as it was."""

from __future__ import annotations

import pytest
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st

from consent import links
from consent.db import Database
from consent.services import people
from tests import factories
from tests.fuzzing import FIXTURES_OK, counts, filled_in
from tests.web import csrf, hidden_fields, written_as_sentences

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
#: Values a parent might type, by field, with a few that look right but are not.
GOOD = {
    "email": ["sam@example.com", "fuzz@example.com", " Sam@Example.COM ", "sam@example"],
    "new_email": ["new.address@example.com", "fuzz@example.com", "sam@@example.com"],
    "name": ["Sam Carer", "Ffion O’Brien-Jones"],
    "phone": ["07700 900123", "+44 20 7946 0958", "0770090012"],
    "postcode": ["ne1 4st", "SW1A 1AA", "NE1"],
    "children_count": ["2", "0", "21", "-1"],
    "children_ages": ["3, 7", "0", "3, seven", "19"],
    "setting": ["Little Acorns Nursery", ""],
}


@pytest.fixture
def world(app: Flask) -> dict[str, tuple[str, str]]:
    """Each public POST path, by name, with the page that holds its form."""
    db: Database = app.extensions["consent.db"]
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="fuzz@example.com")
        panel = factories.panel(session)
        workshop = factories.workshop(session, days=5, capacity=5)
        token = links.make_token(db.settings, person, "manage")
    manage = f"/manage/{token}"
    return {
        "newsletter": ("/newsletter", "/newsletter"),
        "workshop": (f"/workshops/{workshop.id}", f"/workshops/{workshop.id}"),
        "join": (f"/panels/{panel.id}/join", f"/panels/{panel.id}/join"),
        "link": ("/link", "/link"),
        "details": (f"{manage}/details", f"{manage}/details"),
        "email": (f"{manage}/email", f"{manage}/email"),
        "consent": (f"{manage}/consent", manage),
        "stop_everything": (f"{manage}/stop-everything", manage),
    }


@pytest.mark.parametrize(
    "target",
    ["newsletter", "workshop", "join", "link", "details", "email", "consent", "stop_everything"],
)
@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURES_OK)
@given(data=st.data())
def test_hostile_form_posts_never_500_and_never_half_write(
    app: Flask,
    client: FlaskClient,
    world: dict[str, tuple[str, str]],
    target: str,
    data: st.DataObject,
) -> None:
    db: Database = app.extensions["consent.db"]
    path, page_path = world[target]
    page = client.get(page_path).get_data(as_text=True)
    body = filled_in(data, page, GOOD, FORM_FIELDS)
    fields = {**hidden_fields(page), **body, "csrf_token": csrf(page)}
    before = counts(db)
    response = client.post(path, data=fields)
    assert response.status_code < 500, (path, body)
    if response.status_code >= 400:
        assert counts(db) == before, (path, body)
    written_as_sentences(response.get_data(as_text=True))


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
    before = counts(db)
    path = f"/{kind}/{token}".replace("?", "%3F").replace("#", "%23")
    response = client.open(path, method=method, data={"List-Unsubscribe": "One-Click"})
    # 308: the router tidies a doubled slash before anything reads the token.
    assert response.status_code in (308, 400, 404, 405, 410), (path, response.status_code)
    assert counts(db) == before


def test_a_token_for_another_action_is_refused(app: Flask, client: FlaskClient) -> None:
    db: Database = app.extensions["consent.db"]
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter")
        token = links.make_token(db.settings, person, "unsubscribe", purpose="newsletter")
    assert client.get(f"/manage/{token}").status_code == 400
    assert client.post(f"/manage/{token}/delete").status_code in (400, 403)
    with db.reader() as session:
        assert people.find_by_email(session, person.email) is not None
