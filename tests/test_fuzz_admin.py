"""Random and hostile input against every admin form, posted by signed-in staff: never a 500,
and a request refused with an error page leaves every table exactly as it was."""

from __future__ import annotations

import io
from datetime import timedelta

import pytest
from flask import Flask
from flask.testing import FlaskClient
from flask_wtf import FlaskForm
from hypothesis import given, settings
from hypothesis import strategies as st
from wtforms.fields.core import UnboundField

from consent.db import Database
from consent.services import rights
from consent.timeutil import utcnow
from consent.web.admin import forms as admin_forms
from tests import factories
from tests.admin_client import make_staff, staff_client
from tests.fuzzing import FIXTURES_OK, counts, filled_in, hostile_text
from tests.web import csrf, hidden_fields, written_as_sentences

#: Every field any admin form has, and the plain form fields some views read directly.
FIELDS = sorted(
    {
        name
        for form in vars(admin_forms).values()
        if isinstance(form, type) and issubclass(form, FlaskForm)
        for name, value in vars(form).items()
        if isinstance(value, UnboundField)
    }
    | {"booking", "membership", "attended", "recording"}
)
uploads = st.one_of(
    st.binary(max_size=400),
    st.lists(
        st.lists(hostile_text, min_size=1, max_size=5).map(lambda row: ",".join(row)),
        max_size=6,
    ).map(lambda rows: ("email,name,consented_at,evidence\n" + "\n".join(rows)).encode()),
)


@pytest.fixture
def world(app: Flask) -> dict[str, tuple[str, str, FlaskClient]]:
    """Each admin POST path, with the page that holds its form and a client allowed to use it."""
    db: Database = app.extensions["consent.db"]
    dpo, admin = staff_client(app, "dpo"), staff_client(app, "admin")
    make_staff(db, "coordinator")
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", "panel_contact")
        panel = factories.panel(session)
        factories.member(session, panel, person)
        meeting = factories.meeting(session, panel, days=3)
        workshop = factories.workshop(session)
        factories.booking(session, workshop)
        # One past its first deadline, whose page keeps one form whatever is posted; one
        # that can still be given more time, which a post of good data does at once.
        request, fresh = (
            rights.log_request(
                session,
                kind="access",
                channel="post",
                received=f"{utcnow() - timedelta(days=days):%Y-%m-%d}",
                requester="Pat",
                email=None,
                actor_id=1,
                actor="fixture",
            )
            for days in (40, 0)
        )
        colleague = factories.person(session)  # a second person to erase or export
        ids = (person.public_id, panel.id, meeting.id, workshop.id, request.id)
        fresh_id = fresh.id
        other = colleague.public_id
    public_id, panel_id, session_id, workshop_id, request_id = ids
    person_page, panel_page = f"/admin/people/{public_id}", f"/admin/panels/{panel_id}"
    session_page, workshop_page = f"/admin/sessions/{session_id}", f"/admin/workshops/{workshop_id}"
    dpo_targets = {
        "panel_new": ("/admin/panels/new", "/admin/panels/new"),
        "panel_edit": (f"{panel_page}/edit", f"{panel_page}/edit"),
        "panel_diversity": (f"{panel_page}/diversity", panel_page),
        "panel_invite": (f"{panel_page}/invite", panel_page),
        "session_new": (f"{panel_page}/sessions", panel_page),
        "panel_conclude": (f"{panel_page}/conclude", f"{panel_page}/conclude"),
        "attendance": (f"{session_page}/attendance", session_page),
        "session_note": (f"{session_page}/notes", session_page),
        "session_invite": (f"{session_page}/invite", session_page),
        "workshop_new": ("/admin/workshops/new", "/admin/workshops/new"),
        "workshop_edit": (f"{workshop_page}/edit", f"{workshop_page}/edit"),
        "workshop_attendance": (f"{workshop_page}/attendance", workshop_page),
        "workshop_cancel": (f"{workshop_page}/cancel", workshop_page),
        "workshop_evaluation": (f"{workshop_page}/send-evaluation", workshop_page),
        "on_behalf": (f"{person_page}/consent", person_page),
        "send_link": (f"{person_page}/link", person_page),
        "export": (f"{person_page}/export", person_page),
        "reveal": (f"{person_page}/special", person_page),
        "erase": (f"/admin/people/{other}/erase", f"/admin/people/{other}/erase"),
        "rights_new": ("/admin/rights/new", "/admin/rights/new"),
        "rights_update": (f"/admin/rights/{request_id}", f"/admin/rights/{request_id}"),
        "rights_extend": (f"/admin/rights/{fresh_id}/extend", "/admin/rights/new"),
        "retention": ("/admin/retention", "/admin/retention"),
        "audit_verify": ("/admin/audit/verify", "/admin/audit"),
        "import": ("/admin/import", "/admin/import"),
        "import_confirm": ("/admin/import/confirm", "/admin/import"),
    }
    world = {name: (path, page, dpo) for name, (path, page) in dpo_targets.items()}
    world["user_new"] = ("/admin/users/new", "/admin/users/new", admin)
    for action in ("reset-code", "deactivate", "activate"):  # the coordinator's account
        world[f"user_{action}"] = (f"/admin/users/3/{action}", "/admin/users", admin)
    return world


TARGETS = [
    "panel_new",
    "panel_edit",
    "panel_diversity",
    "panel_invite",
    "session_new",
    "panel_conclude",
    "attendance",
    "session_note",
    "session_invite",
    "workshop_new",
    "workshop_edit",
    "workshop_attendance",
    "workshop_cancel",
    "workshop_evaluation",
    "on_behalf",
    "send_link",
    "export",
    "reveal",
    "erase",
    "rights_new",
    "rights_update",
    "rights_extend",
    "retention",
    "audit_verify",
    "import",
    "import_confirm",
    "user_new",
    "user_reset-code",
    "user_deactivate",
    "user_activate",
]
#: Values a coordinator might type, by field, with a few that look right but are not.
GOOD = {
    "received": ["2026-11-20", "2026-11-23", "2026-02-30"],
    "starts_at": ["2027-03-05 10:00", "2027-03-05 18:30", "2020-01-01 09:00", "2027-03-28 01:30"],
    "ends_at": ["2027-03-05 11:30", "2027-03-05 09:00", "2027-03-06 00:00"],
    "capacity": ["12", "1", "0", "-3", "100000"],
    "email": ["", "pat.parent@example.com", "new.colleague@example.gov.uk", "PAT@Example.com"],
    "note": ["Phoned on 3 March; notice read out.", "x" * 5001],
    "outcome": ["", "Sent the export by post."],
    "requester": ["Pat, 1 High Street"],
    "code": ["123456", "000000"],
}


@pytest.mark.parametrize("target", TARGETS)
@settings(max_examples=50, deadline=None, suppress_health_check=FIXTURES_OK)
@given(data=st.data())
def test_hostile_admin_posts_never_500_and_never_half_write(
    app: Flask,
    world: dict[str, tuple[str, str, FlaskClient]],
    target: str,
    data: st.DataObject,
) -> None:
    db: Database = app.extensions["consent.db"]
    path, page_path, client = world[target]
    page = client.get(page_path)
    assert page.status_code < 500, page_path
    html = page.get_data(as_text=True)
    body = filled_in(data, html, GOOD, FIELDS)
    fields: dict[str, object] = {**hidden_fields(html), **body, "csrf_token": csrf(html)}
    if target == "import":
        fields["file"] = (io.BytesIO(data.draw(uploads, label="csv")), "list.csv")
    before = counts(db)
    response = client.post(
        path, data=fields, content_type="multipart/form-data", follow_redirects=True
    )
    first = response.history[0] if response.history else response
    assert response.status_code < 500, (path, body)
    if first.status_code >= 400:
        assert counts(db) == before, (path, body)
    written_as_sentences(response.get_data(as_text=True))
