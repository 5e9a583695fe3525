"""``/api/v1``: API keys, the consent lookup, reports, and the OpenAPI description that
must match what the routes really do."""

from __future__ import annotations

from dataclasses import replace
from datetime import timedelta
from typing import Any

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from openapi_schema_validator import OAS31Validator
from openapi_spec_validator import validate
from sqlalchemy import func, select
from werkzeug.test import TestResponse

from consent import create_app
from consent.config import Settings
from consent.db import Database
from consent.models import ApiKey, AuditEvent, ConsentState, Notice, Purpose
from consent.services import api_keys, ledger, people
from consent.timeutil import LONDON, utcnow
from consent.web.openapi import document
from tests import factories
from tests.admin_client import staff_client
from tests.fuzzing import FIXTURES_OK, counts, hostile_text
from tests.web import csrf, text

LOOKUP = "/api/v1/consents/lookup"


def _db(app: Flask) -> Database:
    return app.extensions["consent.db"]


def _key(db: Database, *scopes: str, name: str = "Family Hub bookings") -> tuple[int, str]:
    with db.transaction() as session:
        key, secret = api_keys.create(session, name, list(scopes), actor="test", actor_id=None)
        return key.id or 0, secret


def _auth(secret: str) -> dict[str, str]:
    return {"Authorization": f"Bearer {secret}"}


def _lookup(client: FlaskClient, secret: str, email: Any) -> TestResponse:
    return client.post(LOOKUP, json={"email": email}, headers=_auth(secret))


def _statuses(response: TestResponse) -> dict[str, str]:
    return {item["purpose"]: item["status"] for item in response.get_json()["consents"]}


def _lookups(db: Database) -> list[AuditEvent]:
    with db.reader() as session:
        return list(
            session.execute(select(AuditEvent).where(AuditEvent.action == "api.consent_lookup"))
            .scalars()
            .all()
        )


# ---- the description matches the code -----------------------------------------------------


def _matches_schema(response: TestResponse, path: str, method: str) -> None:
    """The response body is valid against what openapi.json promises for its status."""
    spec = document()
    promised = spec["paths"][path][method]["responses"][str(response.status_code)]
    (media,) = promised["content"].values()
    schema = {"$ref": media["schema"]["$ref"], "components": spec["components"]}
    OAS31Validator(schema).validate(response.get_json())
    assert response.mimetype == next(iter(promised["content"]))


def test_the_description_is_valid_openapi_and_names_every_route(app: Flask) -> None:
    served = app.test_client().get("/api/v1/openapi.json")
    assert served.status_code == 200
    spec = served.get_json()
    validate(spec)
    described = {(path, method.upper()) for path, item in spec["paths"].items() for method in item}
    routed = {
        (rule.rule.removeprefix("/api/v1").replace("<name>", "{name}"), method)
        for rule in app.url_map.iter_rules()
        if rule.endpoint.startswith("api.")
        for method in rule.methods - {"HEAD", "OPTIONS"}
    }
    assert described == routed
    for path, item in spec["paths"].items():
        for operation in item.values():
            view = app.view_functions[f"api.{operation['operationId']}"]
            scope = getattr(view, "api_scope", None)
            needed = [s for need in operation.get("security", [{}]) for s in need.get("apiKey", [])]
            if path == "/openapi.json":
                assert operation["security"] == [] and not hasattr(view, "api_scope")
            else:
                assert needed == ([scope] if scope else []), path


# ---- keys -----------------------------------------------------------------------------------


def test_calls_without_a_working_key_are_refused(app: Flask) -> None:
    db = _db(app)
    key_id, secret = _key(db, "consents:read")
    client = app.test_client()
    forged = secret[:-4] + ("AAAA" if not secret.endswith("AAAA") else "BBBB")
    for headers in (
        {},
        {"Authorization": secret},
        {"Authorization": f"Basic {secret}"},
        {"Authorization": "Bearer "},
        _auth("ck_nothing"),
        _auth(forged),
    ):
        response = client.post(LOOKUP, json={"email": "a@example.com"}, headers=headers)
        assert response.status_code == 401, headers
        assert response.headers["WWW-Authenticate"].startswith("Bearer")
        _matches_schema(response, "/consents/lookup", "post")
    assert _lookup(client, secret, "a@example.com").status_code == 200
    with db.transaction() as session:
        api_keys.revoke(session, key_id, actor="test", actor_id=None)
    assert _lookup(client, secret, "a@example.com").status_code == 401
    assert client.get("/api/v1/purposes", headers=_auth(secret)).status_code == 401
    assert len(_lookups(db)) == 1


def test_a_key_can_do_only_what_it_was_given(app: Flask) -> None:
    db = _db(app)
    _, reports_only = _key(db, "reports:read")
    _, lookups_only = _key(db, "consents:read")
    client = app.test_client()
    refused = _lookup(client, reports_only, "a@example.com")
    assert refused.status_code == 403 and "consents:read" in refused.get_json()["detail"]
    month = utcnow().astimezone(LONDON).strftime("%Y-%m")
    query = {"from": month, "to": month}
    report = "/api/v1/reports/consents"
    assert client.get(report, query_string=query, headers=_auth(lookups_only)).status_code == 403
    assert client.get(report, query_string=query, headers=_auth(reports_only)).status_code == 200
    for secret in (reports_only, lookups_only):
        assert client.get("/api/v1/purposes", headers=_auth(secret)).status_code == 200
    assert _lookups(db) == []


def test_keys_are_stored_only_as_a_hash_and_checked_whole(db: Database) -> None:
    with db.transaction() as session:
        key, secret = api_keys.create(
            session, "  Bookings  ", ["reports:read", "consents:read"], actor="t", actor_id=None
        )
        assert key.name == "Bookings" and key.scopes == "consents:read reports:read"
        assert secret.startswith(f"ck_{key.prefix}_") and secret not in key.secret_hash
    with db.reader() as session:
        stored = session.execute(select(ApiKey)).scalars().one()
        assert api_keys.authenticate(session, secret) is not None
        assert api_keys.authenticate(session, secret + "x") is None
        assert api_keys.authenticate(session, secret.replace(stored.prefix, "0" * 12)) is None


@pytest.mark.parametrize(
    ("name", "scopes", "field"),
    [
        ("", ["reports:read"], "name"),
        ("Bookings\x07", ["reports:read"], "name"),
        ("x" * 101, ["reports:read"], "name"),
        ("Bookings", [], "scopes"),
        ("Bookings", ["reports:read", "admin:everything"], "scopes"),
    ],
)
def test_a_bad_key_request_is_refused_and_writes_nothing(
    db: Database, name: str, scopes: list[str], field: str
) -> None:
    from consent.errors import InvalidInput

    before = counts(db)
    with pytest.raises(InvalidInput) as refused, db.transaction() as session:
        api_keys.create(session, name, scopes, actor="t", actor_id=None)
    assert refused.value.field == field
    assert counts(db) == before


def test_last_used_is_written_at_most_every_ten_minutes(app: Flask) -> None:
    db = _db(app)
    key_id, secret = _key(db, "reports:read")
    client = app.test_client()

    def last_used() -> Any:
        with db.reader() as session:
            return session.get(ApiKey, key_id).last_used_at  # type: ignore[union-attr]

    assert last_used() is None
    start = utcnow()
    with time_machine.travel(start, tick=False):
        client.get("/api/v1/purposes", headers=_auth(secret))
    assert last_used() == start
    with time_machine.travel(start + timedelta(minutes=9), tick=False):
        client.get("/api/v1/purposes", headers=_auth(secret))
    assert last_used() == start
    with time_machine.travel(start + timedelta(minutes=11), tick=False):
        client.get("/api/v1/purposes", headers=_auth(secret))
    assert last_used() == start + timedelta(minutes=11)


# ---- the consent lookup ---------------------------------------------------------------------


def test_lookup_gives_each_purpose_as_the_ledger_holds_it(app: Flask) -> None:
    db = _db(app)
    _, secret = _key(db, "consents:read")
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", "workshops", email="Pat@Example.com")
        ledger.withdraw(session, person, "workshops", channel="email_link", actor="self")
        public_id = person.public_id
    client = app.test_client()
    response = _lookup(client, secret, "  PAT@example.com ")
    assert response.status_code == 200
    assert response.headers["Cache-Control"] == "no-store"
    _matches_schema(response, "/consents/lookup", "post")
    body = response.get_json()
    assert body["known"] is True
    with db.reader() as session:
        purposes = list(
            session.execute(select(Purpose.key).order_by(Purpose.sort_order, Purpose.id)).scalars()
        )
        given = session.execute(
            select(ConsentState, Notice)
            .join(Purpose, Purpose.id == ConsentState.purpose_id)
            .join(Notice, Notice.id == ConsentState.notice_id)
            .where(Purpose.key == "newsletter")
        ).one()
    assert [item["purpose"] for item in body["consents"]] == purposes
    statuses = _statuses(response)
    assert statuses.pop("newsletter") == "given" and statuses.pop("workshops") == "withdrawn"
    assert set(statuses.values()) == {"none"}
    newsletter = next(item for item in body["consents"] if item["purpose"] == "newsletter")
    assert newsletter["notice_version"] == given[1].version
    assert newsletter["since"] == given[0].changed_at.isoformat(timespec="seconds").replace(
        "+00:00", "Z"
    )
    (event,) = _lookups(db)
    assert event.actor.startswith("api:") and event.actor_id is None
    assert event.object_type == "person" and event.object_id == public_id
    assert "pat" not in event.detail.lower()


def test_a_lapsed_consent_is_expired_before_the_sweep_records_it(app: Flask) -> None:
    db = _db(app)
    _, secret = _key(db, "consents:read")
    with db.transaction() as session:
        someone = factories.person(session, "member@example.com")
        factories.member(session, factories.panel(session), someone)
    client = app.test_client()
    assert _statuses(_lookup(client, secret, "member@example.com"))["panel_contact"] == "given"
    with db.reader() as session:
        expires_at = session.execute(
            select(ConsentState.expires_at)
            .join(Purpose, Purpose.id == ConsentState.purpose_id)
            .where(Purpose.key == "panel_contact")
        ).scalar_one()
    assert expires_at is not None
    with time_machine.travel(expires_at + timedelta(seconds=1), tick=False):
        lapsed = _lookup(client, secret, "member@example.com")
    item = next(i for i in lapsed.get_json()["consents"] if i["purpose"] == "panel_contact")
    assert item["status"] == "expired" and item["expires_at"] is None
    with db.reader() as session:
        state = session.execute(
            select(ConsentState.status)
            .join(Purpose, Purpose.id == ConsentState.purpose_id)
            .where(Purpose.key == "panel_contact")
        ).scalar_one()
    assert state == "given", "the lookup only reads; the sweep records the expiry"


def test_recordings_count_as_expired_once_panel_contact_has_run_out(app: Flask) -> None:
    """Recordings end with panel contact. Given later, they run out later; a system asking
    before it records a meeting must not hear "given" once panel contact has run out."""
    db = _db(app)
    _, secret = _key(db, "consents:read")
    now = utcnow()
    with time_machine.travel(now - timedelta(days=740), tick=False), db.transaction() as s:
        person = factories.person(s, "member@example.com")
        factories.member(s, factories.panel(s), person)
    with time_machine.travel(now - timedelta(days=400), tick=False), db.transaction() as s:
        ledger.give(s, person, "panel_recordings", channel="web_form", actor="self")
    with db.reader() as session:
        someone = people.find_by_email(session, "member@example.com")
        assert not ledger.has_consent(session, someone, "panel_recordings")
    consents = _lookup(app.test_client(), secret, "member@example.com").get_json()["consents"]
    found = {item["purpose"]: item for item in consents}
    assert found["panel_contact"]["status"] == "expired"
    assert found["panel_recordings"]["status"] == "expired"
    assert found["panel_recordings"]["since"] == found["panel_contact"]["since"]


def test_unknown_and_erased_addresses_have_no_consent(app: Flask) -> None:
    db = _db(app)
    _, secret = _key(db, "consents:read")
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="gone@example.com")
    with db.transaction() as session:
        found = people.get_by_public_id(session, person.public_id)
        people.erase(session, found, channel="admin", actor="admin:1", note="Asked by phone")
    client = app.test_client()
    for address in ("gone@example.com", "nobody@example.com"):
        response = _lookup(client, secret, address)
        assert response.status_code == 200 and response.get_json()["known"] is False
        assert set(_statuses(response).values()) == {"none"}
    assert [event.object_id for event in _lookups(db)] == [None, None]


def test_bad_lookups_say_what_is_wrong_and_write_nothing(app: Flask) -> None:
    db = _db(app)
    _, secret = _key(db, "consents:read")
    client = app.test_client()
    before = counts(db)
    cases = [
        (client.post(LOOKUP, data="email=a@example.com", headers=_auth(secret)), 415),
        (
            client.post(
                LOOKUP, data="{not json", content_type="application/json", headers=_auth(secret)
            ),
            400,
        ),
        (client.post(LOOKUP, json=["a@example.com"], headers=_auth(secret)), 400),
        (client.post(LOOKUP, json={}, headers=_auth(secret)), 400),
        (_lookup(client, secret, 42), 400),
        (_lookup(client, secret, "not an address"), 400),
        (_lookup(client, secret, "a\x00b@example.com"), 400),
    ]
    for response, status in cases:
        assert response.status_code == status, response.get_json()
        assert response.mimetype == "application/problem+json"
        _matches_schema(response, "/consents/lookup", "post")
    assert cases[-2][0].get_json()["field"] == "email"
    assert "correct format" in cases[-2][0].get_json()["detail"]
    after = counts(db)
    assert after == before


def test_a_body_nested_too_deep_to_read_is_a_bad_request(app: Flask) -> None:
    app.config["PROPAGATE_EXCEPTIONS"] = False
    db = _db(app)
    _, secret = _key(db, "consents:read")
    before = counts(db)
    response = app.test_client().post(
        LOOKUP, data="[" * 100_000, content_type="application/json", headers=_auth(secret)
    )
    assert response.status_code == 400, response.get_json()
    assert response.mimetype == "application/problem+json"
    _matches_schema(response, "/consents/lookup", "post")
    assert counts(db) == before


@pytest.fixture
def lookup_secret(app: Flask) -> str:
    return _key(_db(app), "consents:read")[1]


@settings(max_examples=40, deadline=None, suppress_health_check=FIXTURES_OK)
@given(
    body=st.one_of(
        st.dictionaries(st.sampled_from(["email", "e-mail", "name"]), hostile_text, max_size=2),
        hostile_text,
    )
)
def test_any_body_is_answered_without_a_server_error(
    app: Flask, lookup_secret: str, body: Any
) -> None:
    response = app.test_client().post(LOOKUP, json=body, headers=_auth(lookup_secret))
    assert response.status_code in (200, 400)
    _matches_schema(response, "/consents/lookup", "post")
    valid = isinstance(body, dict) and response.status_code == 200
    assert valid == (isinstance(body, dict) and _is_address(body.get("email")))


def _is_address(value: Any) -> bool:
    from consent.errors import InvalidInput
    from consent.validation import normalise_email

    try:
        normalise_email(value)
    except InvalidInput:
        return False
    return True


def test_lookups_are_limited_per_key(settings: Settings) -> None:
    app = create_app(replace(settings, rate_limits=True))
    app.config["API_LOOKUP_LIMIT"] = "3 per minute"
    db = _db(app)
    _, first = _key(db, "consents:read", name="One")
    _, second = _key(db, "consents:read", name="Two")
    client = app.test_client()
    codes = [_lookup(client, first, "a@example.com").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    limited = _lookup(client, first, "a@example.com")
    assert limited.mimetype == "application/problem+json" and limited.status_code == 429
    assert _lookup(client, second, "a@example.com").status_code == 200
    assert client.get("/api/v1/purposes", headers=_auth(first)).status_code == 200
    db.dispose()


def test_refused_lookups_do_not_use_up_a_key_s_allowance(settings: Settings) -> None:
    """A key's prefix is shown on the admin page and in the audit log; calls with a made-up
    secret after it are refused without counting against the real key, and too many
    refusals from one address are stopped."""
    app = create_app(replace(settings, rate_limits=True))
    app.config["API_LOOKUP_LIMIT"] = "3 per minute"
    app.config["API_REFUSED_LIMIT"] = "5 per minute"
    db = _db(app)
    _, real = _key(db, "consents:read")
    forged = real[: real.rindex("_") + 1] + "A" * 43
    attacker = app.test_client()
    attacks = [
        attacker.post(
            "/api/v1/consents/lookup",
            json={"email": "a@example.com"},
            headers=_auth(forged),
            environ_base={"REMOTE_ADDR": "203.0.113.9"},
        ).status_code
        for _ in range(6)
    ]
    assert attacks == [401] * 5 + [429]
    system = app.test_client()
    codes = [_lookup(system, real, "a@example.com").status_code for _ in range(4)]
    assert codes == [200, 200, 200, 429]
    db.dispose()


# ---- purposes and reports -------------------------------------------------------------------


def test_purposes_list_each_with_its_newest_notice(app: Flask) -> None:
    db = _db(app)
    _, secret = _key(db, "reports:read")
    response = app.test_client().get("/api/v1/purposes", headers=_auth(secret))
    _matches_schema(response, "/purposes", "get")
    listed = {item["key"]: item["notice"]["version"] for item in response.get_json()["purposes"]}
    with db.reader() as session:
        newest = dict(
            session.execute(
                select(Purpose.key, func.max(Notice.version))
                .join(Notice, Notice.purpose_id == Purpose.id)
                .group_by(Purpose.key)
            ).all()
        )
    assert listed == newest and "newsletter" in listed


def test_reports_give_counts_and_withhold_small_ones(app: Flask) -> None:
    db = _db(app)
    _, secret = _key(db, "reports:read")
    with db.transaction() as session:
        factories.consents_for_a_report(session)
    month = utcnow().astimezone(LONDON).strftime("%Y-%m")
    client = app.test_client()
    response = client.get(
        "/api/v1/reports/consents",
        query_string={"from": month, "to": month, "breakdown": "purpose"},
        headers=_auth(secret),
    )
    assert response.status_code == 200
    _matches_schema(response, "/reports/{name}", "get")
    rows = {row["value"]: row for row in response.get_json()["rows"]}
    assert rows["newsletter"]["count"] == 7
    assert rows["workshops"]["count"] is None and rows["workshops"]["shown"] == "fewer than 5"
    assert rows["family_hub_events"]["count"] is None
    assert rows["family_hub_events"]["shown"] == "withheld"
    plain = client.get(
        "/api/v1/reports/consents",
        query_string={"from": month, "to": month},
        headers=_auth(secret),
    ).get_json()
    assert plain["breakdown"] == "purpose" and plain["rows"] == response.get_json()["rows"]


def test_bad_report_requests_are_refused_plainly(app: Flask) -> None:
    db = _db(app)
    _, secret = _key(db, "reports:read")
    with db.transaction() as session:
        panel = factories.panel(session)
        for _ in range(6):
            factories.member(session, panel, special={"ethnicity": "White"})
    client = app.test_client()
    month = utcnow().astimezone(LONDON).strftime("%Y-%m")

    def get(path: str, **query: str) -> TestResponse:
        response = client.get(path, query_string=query, headers=_auth(secret))
        if response.status_code != 404:
            _matches_schema(response, "/reports/{name}", "get")
        return response

    special = get(
        "/api/v1/reports/panel_joins", **{"from": month, "to": month}, breakdown="ethnicity"
    )
    assert special.status_code == 403 and "special" not in special.get_json()["detail"].lower()
    assert "data protection officer" in special.get_json()["detail"]
    missing = get("/api/v1/reports/consents", **{"from": month})
    assert missing.status_code == 400 and missing.get_json()["field"] == "to"
    wrong = get("/api/v1/reports/consents", **{"from": "March", "to": month})
    assert wrong.status_code == 400 and wrong.get_json()["field"] == "from"
    unknown = get("/api/v1/reports/everyone", **{"from": month, "to": month})
    assert unknown.status_code == 404 and "consents" in unknown.get_json()["reports"]


def test_unknown_paths_and_methods_get_problem_documents(app: Flask) -> None:
    client = app.test_client()
    missing = client.get("/api/v1/people")
    assert missing.status_code == 404 and missing.mimetype == "application/problem+json"
    wrong = client.get(LOOKUP)
    assert wrong.status_code == 405 and wrong.mimetype == "application/problem+json"
    assert "POST" in wrong.headers["Allow"]
    assert client.get("/no-such-page").mimetype == "text/html"


# ---- the admin pages ------------------------------------------------------------------------


def test_an_administrator_makes_a_key_sees_it_once_and_revokes_it(app: Flask) -> None:
    db = _db(app)
    admin = staff_client(app, "admin")
    form = admin.get("/admin/api-keys/new")
    assert form.status_code == 200
    made = admin.post(
        "/admin/api-keys/new",
        data={
            "csrf_token": csrf(text(form)),
            "name": "Family Hub bookings",
            "scopes": ["consents:read"],
        },
    )
    assert made.status_code == 200
    page = text(made)
    secret = page.split('<code class="app-break">')[1].split("<")[0]
    assert secret.startswith("ck_")
    client = app.test_client()
    assert _lookup(client, secret, "a@example.com").status_code == 200
    listing = text(admin.get("/admin/api-keys"))
    assert "Family Hub bookings" in listing and secret not in listing
    with db.reader() as session:
        key = session.execute(select(ApiKey)).scalars().one()
        created = (
            session.execute(select(AuditEvent).where(AuditEvent.action == "api_key.created"))
            .scalars()
            .one()
        )
    assert f"ck_{key.prefix}" in listing and created.actor_id is not None
    revoked = admin.post(f"/admin/api-keys/{key.id}/revoke", data={"csrf_token": csrf(listing)})
    assert revoked.status_code == 302
    assert "Revoked" in text(admin.get("/admin/api-keys"))
    with db.reader() as session:
        revoked_by = session.execute(
            select(AuditEvent.actor_id).where(AuditEvent.action == "api_key.revoked")
        ).scalar_one()
    assert revoked_by == created.actor_id
    assert _lookup(client, secret, "a@example.com").status_code == 401


def test_a_bad_key_form_shows_errors_and_makes_nothing(app: Flask) -> None:
    db = _db(app)
    admin = staff_client(app, "admin")
    form = text(admin.get("/admin/api-keys/new"))
    refused = admin.post(
        "/admin/api-keys/new", data={"csrf_token": csrf(form), "name": "", "scopes": []}
    )
    page = text(refused)
    assert refused.status_code == 400
    assert "Enter the name of the system" in page and "Select what the key may do" in page
    odd = admin.post(
        "/admin/api-keys/new",
        data={"csrf_token": csrf(form), "name": "X", "scopes": ["admin:everything"]},
    )
    assert odd.status_code == 400 and "Select only the permissions listed" in text(odd)
    with db.reader() as session:
        assert session.execute(select(func.count()).select_from(ApiKey)).scalar_one() == 0


def test_only_administrators_manage_keys(app: Flask) -> None:
    _, _ = _key(_db(app), "reports:read")
    for role in ("coordinator", "dpo"):
        client = staff_client(app, role)
        assert client.get("/admin/api-keys").status_code == 403
        assert client.get("/admin/api-keys/new").status_code == 403
        assert client.post("/admin/api-keys/1/revoke").status_code in (400, 403)
    assert app.test_client().get("/admin/api-keys").status_code == 302
