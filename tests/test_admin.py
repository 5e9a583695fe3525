"""The admin pages: sign-in with a second factor, roles on every route, and the work."""

from __future__ import annotations

import csv
import html
import io
import itertools
import json
import re
import stat
import threading
from collections.abc import Callable
from dataclasses import replace
from datetime import UTC, datetime, timedelta

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from hypothesis import given, settings
from hypothesis import strategies as st
from sqlalchemy import func, select
from sqlalchemy import text as sql

from consent import create_app
from consent.config import Settings
from consent.db import Database
from consent.errors import Conflict
from consent.models import (
    AdminUser,
    Attendance,
    AuditEvent,
    Booking,
    ConsentEvent,
    Panel,
    PanelMembership,
    PanelSession,
    Person,
    RightsRequest,
    SessionNote,
    StatCounter,
    Workshop,
)
from consent.services import (
    admin_users,
    api_keys,
    audit,
    ledger,
    notices,
    panels,
    people,
    preferences,
    reports,
    retention,
    rights,
    signups,
    workshops,
)
from consent.timeutil import LONDON, london_date, london_input, utcnow
from tests import factories
from tests.admin_client import (
    PASSWORD,
    code_for,
    make_staff,
    password_step,
    sign_in,
    staff_client,
)
from tests.helpers import crossing_writers_only, deliver_and_purge, find_anywhere, tamper
from tests.web import csrf, link_in, mails, text


def _db(app: Flask) -> Database:
    return app.extensions["consent.db"]


def _post(client: FlaskClient, page: str, path: str, data: dict | None = None):  # type: ignore[no-untyped-def]
    token = csrf(text(client.get(page)))
    return client.post(path, data={"csrf_token": token, **(data or {})})


# ---- signing in ---------------------------------------------------------------------------


def test_sign_in_needs_a_password_and_a_fresh_code(app: Flask) -> None:
    db = _db(app)
    email, secret = make_staff(db, "coordinator")
    client = app.test_client()
    assert client.get("/admin/people").status_code == 302
    response = password_step(client, email, PASSWORD)
    assert response.location.endswith("/admin/sign-in/code")
    enrol = text(client.get("/admin/sign-in/code"))
    assert "Set up your authenticator app" in enrol and secret in enrol
    assert client.get("/admin/people").status_code == 302
    wrong = client.post("/admin/sign-in/code", data={"csrf_token": csrf(enrol), "code": "000000"})
    assert wrong.status_code == 400 and "not right" in text(wrong)
    odd = client.post("/admin/sign-in/code", data={"csrf_token": csrf(enrol), "code": "²²²²²²"})
    assert odd.status_code == 400 and "not right" in text(odd)
    code = code_for(secret)
    good = client.post("/admin/sign-in/code", data={"csrf_token": csrf(enrol), "code": code})
    assert good.status_code == 302 and client.get("/admin/people").status_code == 200
    with db.reader() as session:
        user = session.execute(select(AdminUser)).scalar_one()
        assert user.totp_confirmed_at is not None and user.password_hash.startswith("$argon2id$")

    other = app.test_client()
    password_step(other, email, PASSWORD)
    second = text(other.get("/admin/sign-in/code"))
    assert "Set up your authenticator app" not in second and secret not in second
    replay = other.post("/admin/sign-in/code", data={"csrf_token": csrf(second), "code": code})
    assert replay.status_code == 400, "a code works once"


def test_repeated_failures_lock_the_account(app: Flask) -> None:
    email, secret = make_staff(_db(app), "dpo")
    client = app.test_client()
    for _ in range(5):
        response = password_step(client, email, "wrong")
        assert "not right" in text(response)
    locked = password_step(client, email, PASSWORD)
    assert "locked" in text(locked)
    with time_machine.travel(utcnow() + timedelta(minutes=16)):
        sign_in(app.test_client(), email, secret)
    with _db(app).reader() as session:
        failures = session.execute(
            select(func.count()).where(AuditEvent.action == "admin.sign_in_failed")
        ).scalar()
        assert failures == 5


def test_guesses_sent_at_once_are_each_counted(app: Flask, backend: str) -> None:
    """On PostgreSQL two sign-ins can run at the same moment: twenty wrong passwords sent
    at once must still lock the account after five, and one code must work only once."""
    crossing_writers_only(backend)
    db = _db(app)
    email, secret = make_staff(db, "dpo")
    start = threading.Barrier(20)

    def guess(password: str) -> str:
        start.wait()
        with db.transaction() as session:
            try:
                admin_users.check_password(session, email, password)
            except admin_users.SignInRefused as refused:
                return refused.message
        return "in"

    answers = _at_once(20, lambda: guess("wrong"))
    assert sum("locked" in answer for answer in answers) == 15
    with db.reader() as session:
        failures = session.execute(
            select(func.count()).where(AuditEvent.action == "admin.sign_in_failed")
        ).scalar()
    assert failures == 5
    with time_machine.travel(utcnow() + timedelta(minutes=16)):
        code = code_for(secret)
        start = threading.Barrier(2)

        def use_code() -> str:
            start.wait()
            with db.transaction() as session:
                user = session.scalars(select(AdminUser).where(AdminUser.email == email)).one()
                try:
                    admin_users.check_code(session, user, code)
                except admin_users.SignInRefused as refused:
                    return refused.message
            return "in"

        assert sorted(_at_once(2, use_code)) == [admin_users.GENERIC, "in"]


def _at_once(number: int, work: Callable[[], str]) -> list[str]:
    answers: list[str] = []
    threads = [threading.Thread(target=lambda: answers.append(work())) for _ in range(number)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(timeout=60)
    assert len(answers) == number
    return answers


def test_members_are_emailed_about_a_session_once_each(app: Flask) -> None:
    db = _db(app)
    with db.transaction() as session:
        panel = factories.panel(session)
        recorded = factories.person(session, "rec@example.com")
        factories.member(session, panel, recorded)
        ledger.give(session, recorded, "panel_recordings", channel="web_form", actor="self")
        factories.member(session, panel, factories.person(session, "plain@example.com"))
        left = factories.person(session, "left@example.com")
        factories.member(session, panel, left)
        ledger.withdraw(session, left, "panel_contact", channel="email_link", actor="self")
        coming = factories.meeting(session, panel, days=5)
        over = factories.meeting(session, panel, days=-1)
        panel_id, paths = panel.id, [f"/admin/sessions/{m.id}" for m in (coming, over)]
    client = staff_client(app, "coordinator")

    def invite(path: str) -> str:
        page = text(client.get(path))
        return text(
            client.post(f"{path}/invite", data={"csrf_token": csrf(page)}, follow_redirects=True)
        )

    assert "Email members about this session" in text(client.get(paths[0]))
    assert "Invitations queued for 2 member(s)." in invite(paths[0])
    sent = {m.to_address: m.body_text or "" for m in mails(db, template="panel_session_invitation")}
    assert set(sent) == {"rec@example.com", "plain@example.com"}
    assert "You have agreed to recordings" in sent["rec@example.com"]
    assert "you will not be recorded" in sent["plain@example.com"]
    assert "already been invited" in invite(paths[0])
    with db.transaction() as session:
        panel = session.get(Panel, panel_id)
        factories.member(session, panel, factories.person(session, "new@example.com"))
    assert "Invitations queued for 1 member(s)." in invite(paths[0])
    assert len(mails(db, template="panel_session_invitation")) == 3

    assert "Email members about this session" not in text(client.get(paths[1]))
    assert "already started" in invite(paths[1])
    token = csrf(text(client.get(paths[0])))
    assert (
        client.post("/admin/sessions/99999/invite", data={"csrf_token": token}).status_code == 404
    )
    assert len(mails(db, template="panel_session_invitation")) == 3
    with db.reader() as session:
        logged = session.execute(
            select(func.count())
            .select_from(AuditEvent)
            .where(AuditEvent.action == "panel_session.invited")
        ).scalar()
    assert logged == 3, "each press that was not refused"


def test_an_idle_session_ends_after_thirty_minutes(app: Flask) -> None:
    client = staff_client(app, "coordinator")
    assert client.get("/admin/people").status_code == 200
    with time_machine.travel(utcnow() + timedelta(minutes=31)):
        response = client.get("/admin/people")
    assert response.status_code == 302 and "expired=1" in response.location
    assert client.get("/admin/people").status_code == 302


@pytest.mark.parametrize("from_before_the_limit", [False, True])
def test_even_a_busy_session_ends_after_twelve_hours(
    app: Flask, from_before_the_limit: bool
) -> None:
    """A session signed in before the limit existed has no start time: it counts from now."""
    client = staff_client(app, "coordinator")
    if from_before_the_limit:
        with client.session_transaction() as cookie:
            del cookie["admin_since"]
    start = utcnow()
    assert client.get("/admin/people").status_code == 200
    for minutes in range(20, 12 * 60, 20):
        with time_machine.travel(start + timedelta(minutes=minutes)):
            assert client.get("/admin/people").status_code == 200, minutes
    with time_machine.travel(start + timedelta(hours=12, minutes=1)):
        response = client.get("/admin/people")
    assert response.status_code == 302 and "expired=1" in response.location


def test_a_password_left_without_its_code_is_forgotten_after_five_minutes(app: Flask) -> None:
    email, _ = make_staff(_db(app), "dpo")
    client = app.test_client()
    password_step(client, email, PASSWORD)
    assert client.get("/admin/sign-in/code").status_code == 200
    with time_machine.travel(utcnow() + timedelta(minutes=6)):
        late = client.get("/admin/sign-in/code")
        assert late.status_code == 302 and "/admin/sign-in" in late.location
        assert client.get("/admin/sign-in/code").status_code == 302


def test_staff_stay_signed_in_while_the_old_key_is_kept_after_a_rotation(
    app: Flask, settings: Settings
) -> None:
    staff = staff_client(app, "coordinator")
    cookie = staff.get_cookie("session")
    assert cookie is not None
    new_key = "rotated-secret-key-" + "r" * 40

    def page_with_keys(*keys: str) -> int:
        other = create_app(replace(settings, secret_keys=keys)).test_client()
        other.set_cookie("session", cookie.value)
        return other.get("/admin/people").status_code

    assert page_with_keys(new_key, *settings.secret_keys) == 200
    assert page_with_keys(new_key) == 302
    app.secret_key = new_key
    assert staff.get("/admin/people").status_code == 302, "a signer kept for the old key"


def test_a_deactivated_account_is_signed_out_at_once(app: Flask) -> None:
    coordinator = staff_client(app, "coordinator")
    boss = staff_client(app, "admin")
    with _db(app).reader() as session:
        user_id = session.execute(
            select(AdminUser.id).where(AdminUser.role == "coordinator")
        ).scalar_one()
    _post(boss, "/admin/users", f"/admin/users/{user_id}/deactivate")
    assert coordinator.get("/admin/people").status_code == 302


def test_signing_out_ends_the_session_even_for_a_copy_of_its_cookie(app: Flask) -> None:
    dpo = staff_client(app, "dpo")
    copied = app.test_client()
    for cookie in dpo._cookies.values():  # a cookie taken from the browser before sign-out
        copied.set_cookie(cookie.key, cookie.value, domain=cookie.domain, path=cookie.path)
    assert copied.get("/admin/audit").status_code == 200
    page = text(dpo.get("/admin/people"))
    signed_out = dpo.post("/admin/sign-out", data={"csrf_token": csrf(page)})
    assert signed_out.status_code == 302 and "/admin/sign-in" in signed_out.location
    assert dpo.get("/admin/people").status_code == 302
    assert copied.get("/admin/audit").status_code == 302


def _shown(page: str, label: str) -> str:
    """A value the account details page shows once, beside its label."""
    match = re.search(rf">{label}</dt><dd[^>]*><code>([^<]+)</code>", page)
    assert match, f"no {label} on the page"
    return html.unescape(match.group(1))


def _user_id(app: Flask, email: str) -> int:
    with _db(app).reader() as session:
        return session.execute(select(AdminUser.id).where(AdminUser.email == email)).scalar_one()


def _enrol(client: FlaskClient, email: str, password: str) -> str:
    """Sign in with a password for an account whose code app is not set up: the key the
    code page shows to its owner, and only to them."""
    password_step(client, email, password)
    shown = client.get("/admin/sign-in/code").get_data(as_text=True)
    match = re.search(r'id="secret">([A-Z2-7]+)<', shown)
    assert match, "no key on the code page"
    done = client.post(
        "/admin/sign-in/code", data={"csrf_token": csrf(shown), "code": code_for(match.group(1))}
    )
    assert done.status_code == 302
    return match.group(1)


def test_an_administrator_adds_staff_who_then_make_the_account_their_own(app: Flask) -> None:
    """The administrator learns a first password, never the code app's key; the newcomer
    sets up the app and must choose their own password before anything else."""
    boss = staff_client(app, "admin")
    created = _post(
        boss,
        "/admin/users/new",
        "/admin/users/new",
        {"email": " Nia.New@Example.gov.uk ", "name": "Nia New", "role": "coordinator"},
    )
    page = text(created)
    assert created.status_code == 200 and "shown only once" in page
    password = _shown(page, "Password")
    newcomer = app.test_client()
    secret = _enrol(newcomer, "nia.new@example.gov.uk", password)
    assert secret not in page
    held = newcomer.get("/admin/panels")
    assert held.status_code == 302 and held.location.endswith("/admin/password")
    form = text(newcomer.get("/admin/password"))
    assert "Choose your own password" in form
    fields = {"csrf_token": csrf(form), "current": password, "again": "my own long password"}
    differs = newcomer.post("/admin/password", data={**fields, "new": "another long password"})
    assert differs.status_code == 400 and "Enter the same new password twice." in text(differs)
    changed = newcomer.post("/admin/password", data={**fields, "new": "my own long password"})
    assert changed.status_code == 302
    assert newcomer.get("/admin/panels").status_code == 200
    assert newcomer.get("/admin/users").status_code == 403
    refused = password_step(app.test_client(), "nia.new@example.gov.uk", password)
    assert refused.status_code == 400, "the first password no longer works"
    sign_in(
        app.test_client(), "nia.new@example.gov.uk", secret, password="my own long password", step=1
    )
    assert "code app not set up" not in text(boss.get("/admin/users"))
    with _db(app).reader() as session:
        user = session.get(AdminUser, _user_id(app, "nia.new@example.gov.uk"))
        assert user.role == "coordinator" and user.name == "Nia New"
        assert not user.password_change_due
        for action in ("admin_user.created", "admin.password_changed"):
            assert (
                session.execute(
                    select(func.count()).where(
                        AuditEvent.action == action, AuditEvent.object_id == str(user.id)
                    )
                ).scalar()
                == 1
            ), action


def test_staff_change_their_own_password_and_other_sessions_end(app: Flask) -> None:
    email, secret = make_staff(_db(app), "dpo")
    here, elsewhere = app.test_client(), app.test_client()
    sign_in(here, email, secret)
    sign_in(elsewhere, email, secret, step=1)
    form = text(here.get("/admin/password"))
    assert "Change your password" in form
    wrong = here.post(
        "/admin/password",
        data={"csrf_token": csrf(form), "current": "not it", "new": "x" * 20, "again": "x" * 20},
    )
    assert wrong.status_code == 400 and "Your current password is not right." in text(wrong)
    short = here.post(
        "/admin/password",
        data={"csrf_token": csrf(form), "current": PASSWORD, "new": "short", "again": "short"},
    )
    assert short.status_code == 400 and "12 characters or more" in text(short)
    new = "a brand new long password"
    done = here.post(
        "/admin/password",
        data={"csrf_token": csrf(form), "current": PASSWORD, "new": new, "again": new},
    )
    assert done.status_code == 302
    assert here.get("/admin/audit").status_code == 200
    assert elsewhere.get("/admin/audit").status_code == 302


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"email": "not an address", "name": "X", "role": "dpo"}, "in the correct format"),
        (
            {"email": "Coordinator@example.gov.uk", "name": "X", "role": "dpo"},
            "There is already a staff account with that email address.",
        ),
        ({"email": "x@example.gov.uk", "name": "X", "role": "owner"}, "Select a role."),
        (
            {"email": "x@example.gov.uk", "name": "<b>X</b>\x07", "role": "dpo"},
            "must not contain hidden characters",
        ),
    ],
)
def test_a_new_account_with_a_problem_is_not_made(
    app: Flask, fields: dict[str, str], message: str
) -> None:
    make_staff(_db(app), "coordinator")
    boss = staff_client(app, "admin")
    response = _post(boss, "/admin/users/new", "/admin/users/new", fields)
    page = text(response)
    assert response.status_code == 400 and "govuk-error-summary" in page
    assert message in page and "<b>X</b>" not in page
    with _db(app).reader() as session:
        assert session.execute(select(func.count()).select_from(AdminUser)).scalar() == 2


def test_a_lost_code_app_is_reset_and_only_the_new_key_works(app: Flask) -> None:
    email, old_secret = make_staff(_db(app), "coordinator")
    colleague = app.test_client()
    sign_in(colleague, email, old_secret)
    boss = staff_client(app, "admin")
    user_id = _user_id(app, email)
    reset = _post(boss, "/admin/users", f"/admin/users/{user_id}/reset-code")
    assert "sets up their authenticator app again" in text(reset)
    assert "Password" not in text(reset) and not re.search(r"[A-Z2-7]{32}", text(reset))
    assert colleague.get("/admin/people").status_code == 302
    assert "code app not set up" in text(boss.get("/admin/users"))

    again = app.test_client()
    password_step(again, email, PASSWORD)
    page = again.get("/admin/sign-in/code")
    refused = again.post(
        "/admin/sign-in/code",
        data={"csrf_token": csrf(text(page)), "code": code_for(old_secret, step=1)},
    )
    assert refused.status_code != 302 and "not right" in text(refused)
    new_secret = _enrol(app.test_client(), email, PASSWORD)
    assert new_secret != old_secret
    sign_in(again, email, new_secret, step=1)
    assert again.get("/admin/people").status_code == 200


def test_an_administrator_cannot_lock_themselves_out(app: Flask) -> None:
    boss = staff_client(app, "admin")
    own_id = _user_id(app, "admin@example.gov.uk")
    response = _post(boss, "/admin/users", f"/admin/users/{own_id}/deactivate")
    assert response.status_code == 302
    assert "You cannot deactivate your own account." in text(boss.get("/admin/users"))
    assert boss.get("/admin/users").status_code == 200
    missing = _post(boss, "/admin/users", "/admin/users/99999/deactivate")
    assert missing.status_code == 302
    assert "We could not find that account." in text(boss.get("/admin/users"))
    with _db(app).reader() as session:
        assert session.get(AdminUser, own_id).active


# ---- roles on every route -----------------------------------------------------------------


@pytest.fixture
def world(app: Flask) -> dict[str, str]:
    db = _db(app)
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="someone@example.com")
        panel = factories.panel(session)
        membership = factories.member(session, panel, person)
        panel_session = factories.meeting(session, panel)
        workshop = factories.workshop(session, days=3)
        request = RightsRequest(
            person_id=person.id,
            kind="access",
            channel="post",
            requester="A Person",
            received_at=utcnow(),
            due_at=utcnow() + timedelta(days=30),
        )
        session.add(request)
        session.flush()
        user = session.execute(select(AdminUser).limit(1)).scalar()
        key, _ = api_keys.create(session, "Bookings", ["reports:read"], actor="t", actor_id=None)
        return {
            "key_id": str(key.id),
            "public_id": person.public_id,
            "panel_id": str(panel.id),
            "session_id": str(panel_session.id),
            "workshop_id": str(workshop.id),
            "request_id": str(request.id),
            "user_id": str(user.id if user else 1),
            "membership_id": str(membership.id),
            "token": "0" * 32,
            "action": "cancel",
            "kind": "purpose",
            "key": "newsletter",
        }


def _admin_routes(app: Flask) -> list[tuple[str, str, tuple[str, ...]]]:
    routes = []
    for rule in app.url_map.iter_rules():
        if not rule.endpoint.startswith("admin."):
            continue
        view = app.view_functions[rule.endpoint]
        allowed = getattr(view, "allowed_roles", None)
        for method in sorted((rule.methods or set()) - {"HEAD", "OPTIONS"}):
            routes.append((rule.rule, method, allowed))
    return routes


def test_admin_pages_are_never_cached(app: Flask, world: dict[str, str]) -> None:
    client = staff_client(app, "dpo")
    for path in (
        f"/admin/people/{world['public_id']}",
        f"/admin/exports/panel/{world['panel_id']}.csv",
        "/admin/users",
    ):
        assert client.get(path).headers.getlist("Cache-Control") == ["no-store"], path
    assert app.test_client().get("/admin/sign-in").headers["Cache-Control"] == "no-store"


def test_every_admin_route_is_guarded_by_role(app: Flask, world: dict[str, str]) -> None:
    open_routes = {"/admin/sign-in", "/admin/sign-in/code", "/admin/sign-out"}
    clients = {role: staff_client(app, role) for role in ("coordinator", "dpo", "admin")}
    anonymous = app.test_client()
    tokens = {
        role: csrf(text(client.get("/admin/users" if role == "admin" else "/admin/people")))
        for role, client in clients.items()
    }
    checked = 0
    for rule, method, allowed in _admin_routes(app):
        if rule in open_routes:
            continue
        assert allowed, f"{rule} has no role check"
        path = rule
        for name, value in world.items():
            path = path.replace(f"<{name}>", value).replace(f"<int:{name}>", value)
        assert "<" not in path, path
        for role, client in clients.items():
            if method == "GET":
                response = client.get(path)
            else:
                response = client.post(path, data={"csrf_token": tokens[role]})
            if role in allowed:
                assert response.status_code != 403, (role, method, path)
            else:
                assert response.status_code == 403, (role, method, path, response.status_code)
        response = anonymous.open(path, method=method)
        assert response.status_code in (302, 400), (method, path)
        checked += 1
    assert checked >= 30


#: What a hand-edited form or address might carry: digits ``int`` refuses, numbers bigger
#: than the database holds, and dates it cannot represent.
ODD_VALUES = ("²", "99999999999999999999999", "0001-01-01T00:00+01:00", "-1", "")
ODD_FIELDS = [
    "page",
    "panel",
    "membership",
    "booking",
    "capacity",
    "code",
    "purpose",
    "note",
    "start",
    "end",
    "dimension",
    "report",
    "kind",
    "starts_at",
    "ends_at",
    "title",
    "status",
    "due_at",
]


def test_odd_numbers_anywhere_never_reach_the_database(app: Flask, world: dict[str, str]) -> None:
    """Every admin route, as a role allowed on it, with odd values in its path, query and form."""
    clients = {role: staff_client(app, role) for role in ("dpo", "admin")}
    tokens = {
        role: csrf(text(client.get("/admin/users" if role == "admin" else "/admin/people")))
        for role, client in clients.items()
    }
    open_routes = {"/admin/sign-in", "/admin/sign-in/code", "/admin/sign-out"}
    for rule, method, allowed in _admin_routes(app):
        if rule in open_routes:
            continue
        role = "dpo" if "dpo" in allowed else "admin"
        client = clients[role]
        for odd in ODD_VALUES:
            path = rule
            for name, value in world.items():
                path = path.replace(f"<{name}>", value).replace(f"<int:{name}>", odd or "0")
            fields = dict.fromkeys(ODD_FIELDS, odd)
            if method == "GET":
                response = client.get(path, query_string=fields)
            else:
                response = client.post(path, data={**fields, "csrf_token": tokens[role]})
            assert response.status_code < 500, (method, path, odd)
    dpo = clients["dpo"]
    for path in ("/admin/exports/panel/².csv", "/admin/exports/workshop/99999999999999999999.csv"):
        assert dpo.get(path).status_code == 404, path


def test_a_nul_character_anywhere_is_refused_before_any_view(
    app: Flask, world: dict[str, str]
) -> None:
    """No one types a NUL and PostgreSQL cannot store one, so it never reaches a view."""
    client = staff_client(app, "dpo")
    token = csrf(text(client.get("/admin/people")))
    assert client.get("/admin/audit", query_string={"action": "person\x00"}).status_code == 400
    assert client.get("/admin/people/\x00").status_code == 400
    assert client.get("/admin/reports", query_string={"dimension": "\x00"}).status_code == 400
    response = client.post(
        f"/admin/people/{world['public_id']}/link",
        data={"csrf_token": token, "\x00": "y"},
    )
    assert response.status_code == 400
    assert client.get("/admin/audit", query_string={"action": "person"}).status_code == 200


# ---- people -------------------------------------------------------------------------------


def test_search_finds_by_the_start_of_an_email_or_a_name(app: Flask) -> None:
    with _db(app).transaction() as session:
        people.find_or_create(session, "amira.khan@example.com", name="Amira Khan")
        people.find_or_create(session, "ben@example.com", name="Ben Khan")
        people.find_or_create(session, "em@example.com", name="Élodie Martin")
    client = staff_client(app, "coordinator")
    assert "amira.khan@example.com" in text(client.get("/admin/people?q=AMIRA"))
    assert "em@example.com" in text(client.get("/admin/people?q=%C3%A9lodie"))
    page = text(client.get("/admin/people?q=ben%40"))
    assert "ben@example.com" in page and "amira" not in page
    assert "No one found" in text(client.get("/admin/people?q=zzz"))
    assert client.get("/admin/people?q=" + "x" * 300).status_code == 200


def test_recording_a_withdrawal_by_phone_needs_a_note(app: Flask, world: dict[str, str]) -> None:
    client = staff_client(app, "coordinator")
    page = f"/admin/people/{world['public_id']}"
    missing = _post(client, page, page + "/consent", {"purpose": "newsletter", "action": "Stop"})
    assert missing.status_code == 400 and "Enter a note" in text(missing)
    done = _post(
        client,
        page,
        page + "/consent",
        {"purpose": "newsletter", "action": "Stop", "note": "Phoned 3 March, asked to stop"},
    )
    assert done.status_code == 302
    with _db(app).reader() as session:
        person = people.get_by_public_id(session, world["public_id"])
        event = ledger.events_for(session, person)[-1]
        assert (event.action, event.channel, event.note) == (
            "withdrawn",
            "admin",
            "Phoned 3 March, asked to stop",
        )
        assert event.actor.startswith("admin:")
        assert session.execute(
            select(AuditEvent).where(AuditEvent.action == "consent.recorded_on_behalf")
        ).scalar_one()
    assert mails(_db(app), "someone@example.com")[-1].template == "consent_withdrawn"


def test_consent_taken_by_phone_records_the_wording_the_page_showed(
    app: Flask, db: Database, world: dict[str, str]
) -> None:
    """Staff read out what the page shows; the ledger records that wording and version,
    and a newer wording published since the page was opened (here by another process,
    whose publishing this web process does not hear of) must be read out first."""
    from tests.web import hidden_fields

    client = staff_client(app, "coordinator")
    page_path = f"/admin/people/{world['public_id']}"
    page = text(client.get(page_path))
    with _db(app).reader() as session:
        first = notices.current_notice(session, notices.get_purpose(session, "workshops"))
    assert first.statement in page
    with db.transaction() as session:
        newer = notices.publish(
            session, "workshops", "You may email me about workshops.", "A year."
        )
        newer_id = newer.id
    form = {
        **hidden_fields(page),
        "purpose": "workshops",
        "action": "Agree",
        "note": "Phoned 3 March; wording read out",
    }
    stale = client.post(page_path + "/consent", data=form)
    assert stale.status_code == 400 and "The wording for this has changed" in text(stale)
    fresh = text(client.get(page_path))
    assert "You may email me about workshops." in fresh
    done = client.post(page_path + "/consent", data={**form, **hidden_fields(fresh)})
    assert done.status_code == 302
    with _db(app).reader() as session:
        person = people.get_by_public_id(session, world["public_id"])
        event = ledger.events_for(session, person)[-1]
    assert (event.action, event.notice_id) == ("given", newer_id)
    assert event.wording == "Read out to them: You may email me about workshops."


def test_a_member_phoning_to_stay_on_a_panel_restarts_the_two_year_clock(app: Flask) -> None:
    from tests.web import hidden_fields

    db = _db(app)
    with time_machine.travel(utcnow() - timedelta(days=700), tick=False), db.transaction() as s:
        member = factories.member(s, factories.panel(s), factories.person(s, "old@example.com"))
        public_id = s.get(Person, member.person_id).public_id
    with db.reader() as session:
        before = session.execute(select(PanelMembership.expires_at)).scalar_one()
    client = staff_client(app, "coordinator")
    page = f"/admin/people/{public_id}"
    form = {
        **hidden_fields(text(client.get(page))),
        "purpose": "panel_contact",
        "action": "Agree",
        "note": "Phoned today; read the notice; wants to stay on",
    }
    done = client.post(page + "/consent", data=form)
    assert "Nothing changed" not in text(client.get(done.location))
    with db.reader() as session:
        after = session.execute(select(PanelMembership.expires_at)).scalar_one()
        event = ledger.events_for(session, session.get(Person, member.person_id))[-1]
        logged = session.execute(select(AuditEvent.detail).order_by(AuditEvent.id.desc())).first()
    assert after > before + timedelta(days=600)
    assert (event.action, event.channel) == ("renewed", "admin")
    assert event.wording.startswith("Read out to them: ")
    assert json.loads(logged[0])["change"] == "renewed"


def test_the_consent_timeline_shows_the_version_of_the_notice_not_its_id(
    app: Flask, world: dict[str, str]
) -> None:
    with _db(app).transaction() as session:
        notice = notices.publish(session, "workshops", "You may email me.", "We keep it a year.")
        person = people.get_by_public_id(session, world["public_id"])
        ledger.give(session, person, "workshops", channel="web_form", actor="self")
        notice_id, version = notice.id, notice.version
    assert (version, notice_id != version) == (2, True)
    page = text(staff_client(app, "dpo").get(f"/admin/people/{world['public_id']}"))
    timeline = page.split("Every consent event, oldest first", 1)[1].split("</table>", 1)[0]
    rows = re.findall(r'<tr class="govuk-table__row">(.*?)</tr>', timeline, re.S)
    shown = [re.findall(r'<td class="govuk-table__cell">(.*?)</td>', row)[-1] for row in rows[1:]]
    assert shown[-1] == "version 2" and set(shown[:-1]) == {"version 1"}


def test_special_category_is_for_the_dpo_and_each_view_is_audited(
    app: Flask, world: dict[str, str]
) -> None:
    page = f"/admin/people/{world['public_id']}"
    with _db(app).transaction() as session:
        contact = notices.current_notice(session, notices.get_purpose(session, "panel_contact"))
        signups.request_panel(
            session,
            factories.panel(session, "Riverside Parent Carer Panel"),
            email="someone@example.com",
            name=None,
            phone=None,
            profile=panels.ProfileInput(
                postcode="RV1 2AB",
                age_band="35 to 44",
                special_category={"ethnicity": "Asian or Asian British"},
            ),
            recordings=False,
            shown={"panel_contact": contact.id},
        )
    coordinator = staff_client(app, "coordinator")
    assert "Mixed or multiple" not in text(coordinator.get(page))
    assert _post(coordinator, page, page + "/special").status_code == 403
    exported = json.loads(_post(coordinator, page, page + "/export").data)
    assert exported["panel_memberships"][0]["profile"]["special_category"].startswith("withheld")
    assert exported["rights_requests"].startswith("withheld")
    [signup] = exported["unconfirmed_signups"]
    assert signup["answers"]["profile"]["postcode"] == "RV1 2AB"
    assert "Asian" not in json.dumps(exported) and "Mixed" not in json.dumps(exported)
    dpo = staff_client(app, "dpo")
    everything = json.loads(_post(dpo, page, page + "/export").data)
    assert everything["rights_requests"][0]["kind"]
    assert everything["unconfirmed_signups"][0]["answers"]["profile"]["special_category"] == {
        "ethnicity": "Asian or Asian British"
    }
    assert "Mixed or multiple" not in text(dpo.get(page))
    shown = text(_post(dpo, page, page + "/special"))
    assert "Mixed or multiple ethnic groups" in shown
    with _db(app).reader() as session:
        views = (
            session.execute(
                select(AuditEvent).where(AuditEvent.action == "special_category.viewed")
            )
            .scalars()
            .all()
        )
        assert len(views) == 1 and views[0].object_id == world["public_id"]
        assert "Mixed" not in views[0].detail
        assert audit.verify(session).ok


def test_the_dpo_erases_with_a_note(app: Flask, world: dict[str, str]) -> None:
    dpo = staff_client(app, "dpo")
    page = f"/admin/people/{world['public_id']}/erase"
    assert _post(dpo, page, page, {"note": ""}).status_code == 400
    assert _post(dpo, page, page, {"note": "Erasure request 12, by post"}).status_code == 302
    deliver_and_purge(_db(app))
    assert find_anywhere(_db(app).engine, ["someone@example.com"]) == []
    person = f"/admin/people/{world['public_id']}"
    response = _post(dpo, person, f"{person}/link")
    assert response.status_code == 302
    assert "no one to email" in text(dpo.get(response.location))


# ---- panels -------------------------------------------------------------------------------


def test_running_a_panel(app: Flask) -> None:
    client = staff_client(app, "coordinator")
    db = _db(app)
    created = _post(
        client,
        "/admin/panels/new",
        "/admin/panels/new",
        {
            "name": "Eastgate panel",
            "family_hub": "Eastgate Family Hub",
            "description": "Parents in Eastgate.",
        },
    )
    assert created.status_code == 302
    panel_path = created.location
    invited = _post(
        client, panel_path, panel_path + "/invite", {"email": "invitee@example.com", "name": "Ivy"}
    )
    assert invited.status_code == 302
    [invitation] = mails(db, "invitee@example.com")
    join = link_in(invitation, "join")
    public = app.test_client()
    form = text(public.get(join))
    assert "invitee@example.com" in form and "Prefer not to say" in form
    from tests.web import hidden_fields

    fields = hidden_fields(form)
    joined = public.post(
        join,
        data={
            **fields,
            "name": "Ivy Invitee",
            "postcode": "E1 6AN",
            "age_band": "35 to 44",
            "children_count": "1",
            "panel_contact": "y",
            "panel_recordings": "y",
        },
    )
    assert "You have joined the panel" in text(joined)
    with db.reader() as session:
        person = people.find_by_email(session, "invitee@example.com")
        assert ledger.states_for(session, person)["panel_contact"].channel == "email_link"
        membership = session.execute(select(PanelMembership)).scalar_one()

    created = _post(
        client,
        panel_path,
        panel_path + "/sessions",
        {
            "title": "Spring meeting",
            "starts_at": "2030-03-05 18:30",
            "format": "online",
            "recorded": "y",
        },
    )
    session_path = created.location
    assert "/admin/sessions/" in session_path
    with db.transaction() as session:
        meeting = session.get(PanelSession, int(session_path.rsplit("/", 1)[1]))
        meeting.starts_at = utcnow() - timedelta(minutes=15)
    _post(
        client,
        session_path,
        session_path + "/attendance",
        {"membership": str(membership.id), "attended": "yes", "recording": "yes"},
    )
    _post(client, session_path, session_path + "/notes", {"note": "Good ideas about opening hours"})
    _post(
        client,
        session_path,
        session_path + "/notes",
        {"note": "Ivy will bring her own interpreter", "membership": str(membership.id)},
    )
    with db.reader() as session:
        row = session.execute(select(Attendance)).scalar_one()
        assert row.attended and row.recording_consent
        stored = session.execute(select(SessionNote.text)).scalars().all()
        assert len(stored) == 2 and not any("opening hours" in note for note in stored)
    assert "Good ideas about opening hours" in text(client.get(session_path))

    summary = text(_post(client, panel_path, panel_path + "/diversity"))
    assert "fewer than 5" in summary and "Ivy" not in summary

    phone = f"/admin/people/{person.public_id}"
    _post(
        client,
        phone,
        phone + "/consent",
        {"purpose": "panel_contact", "action": "Stop", "note": "Rang to say she is leaving"},
    )
    with db.reader() as session:
        assert session.execute(select(Attendance)).scalars().all() == []
        [general] = session.execute(select(SessionNote)).scalars().all()
        assert general.membership_id is None
    assert "interpreter" not in text(client.get(session_path))
    assert find_anywhere(db.engine, ["E1 6AN"]) == []


def test_reading_a_session_s_notes_is_audited(app: Flask, world: dict[str, str]) -> None:
    """Notes may hold special category details (promise 7: each view is audited)."""
    db = _db(app)
    with db.transaction() as session:
        panel = session.get(Panel, int(world["panel_id"]))
        quiet, noted = factories.meeting(session, panel), factories.meeting(session, panel)
        author, _ = admin_users.create_admin(
            session, "writer@example.gov.uk", "coordinator", "a long enough password"
        )
        panels.add_note(session, noted, "Needs a quiet room", author_id=author.id)
        paths = [f"/admin/sessions/{quiet.id}", f"/admin/sessions/{noted.id}"]
    client = staff_client(app, "coordinator")
    for path in paths:
        assert client.get(path).status_code == 200
    with db.reader() as session:
        viewed = (
            session.execute(
                select(AuditEvent.object_id).where(AuditEvent.action == "session_notes.viewed")
            )
            .scalars()
            .all()
        )
    assert viewed == [paths[1].rsplit("/", 1)[1]]


def test_concluding_a_panel_schedules_destruction(app: Flask, world: dict[str, str]) -> None:
    from consent.services import retention

    client = staff_client(app, "coordinator")
    path = f"/admin/panels/{world['panel_id']}/conclude"
    assert "cannot be undone" in text(client.get(path))
    _post(client, path, path)
    retention.sweep(_db(app))
    with _db(app).reader() as session:
        panel = session.get(Panel, int(world["panel_id"]))
        assert panel.status == "concluded" and panel.data_destroyed_at is not None


def test_no_invitation_goes_to_someone_who_asked_us_to_stop_or_to_a_closed_panel(
    app: Flask,
) -> None:
    db = _db(app)
    with db.transaction() as session:
        panel_id = factories.panel(session).id
        people.suppress(session, "gone@example.com", "erased")
        closed_id = factories.panel(session, name="Closed panel").id
        closed = session.get(Panel, closed_id)
        closed.status = "closed"
    client = staff_client(app, "coordinator")
    path = f"/admin/panels/{panel_id}"
    refused = _post(client, path, path + "/invite", {"email": "Gone@Example.com", "name": "G"})
    assert "asked not to be contacted" in html.unescape(text(client.get(refused.location)))
    path = f"/admin/panels/{closed_id}"
    refused = _post(client, path, path + "/invite", {"email": "new@example.com", "name": "N"})
    assert "not taking new members" in text(client.get(refused.location))
    assert mails(db) == []
    with db.reader() as session:
        assert session.execute(select(func.count()).select_from(Person)).scalar() == 0


def test_a_member_who_withdrew_panel_contact_is_not_invited_again(app: Flask) -> None:
    """Leaving by 'stop' is an opt-out from panel contact, not only from one panel."""
    db = _db(app)
    with db.transaction() as session:
        panel = factories.panel(session)
        other = factories.panel(session, name="Another panel")
        member = factories.member(session, panel, factories.person(session, "leaver@example.com"))
        leaver = session.get(Person, member.person_id)
        preferences.unsubscribe(session, leaver, "panel_contact", one_click=False)
        expired = factories.member(session, panel, factories.person(session, "old@example.com"))
        ledger.expire(
            session, session.get(Person, expired.person_id), "panel_contact", actor="system"
        )
        panel_id, other_id = panel.id, other.id
    client = staff_client(app, "coordinator")
    for target in (panel_id, other_id):
        path = f"/admin/panels/{target}"
        refused = _post(client, path, path + "/invite", {"email": "leaver@example.com"})
        assert "asked us to stop contacting them about panels" in html.unescape(
            text(client.get(refused.location))
        )
    assert mails(db, "leaver@example.com", "panel_invitation") == []
    path = f"/admin/panels/{other_id}"
    _post(client, path, path + "/invite", {"email": "old@example.com"})
    assert len(mails(db, "old@example.com", "panel_invitation")) == 1


def _panel(app: Flask, panel_id: int) -> Panel:
    with _db(app).reader() as session:
        return session.get(Panel, panel_id)


def test_editing_a_panel_and_closing_it_to_new_members(app: Flask) -> None:
    with _db(app).transaction() as session:
        panel_id = factories.panel(session, name="Northfield panel").id
    client = staff_client(app, "coordinator")
    path = f"/admin/panels/{panel_id}/edit"
    assert 'value="Northfield panel"' in text(client.get(path))
    saved = _post(
        client,
        path,
        path,
        {
            "name": "Northfield and Eastgate panel",
            "family_hub": "Eastgate Family Hub",
            "description": "Parents from both towns.",
            "status": "closed",
        },
    )
    assert saved.status_code == 302 and saved.location.endswith(f"/admin/panels/{panel_id}")
    panel = _panel(app, panel_id)
    assert (panel.name, panel.family_hub, panel.status) == (
        "Northfield and Eastgate panel",
        "Eastgate Family Hub",
        "closed",
    )
    assert "Northfield and Eastgate panel" not in text(app.test_client().get("/panels"))
    _post(
        client,
        path,
        path,
        {"name": panel.name, "family_hub": "Eastgate", "description": "D", "status": "open"},
    )
    assert "Northfield and Eastgate panel" in text(app.test_client().get("/panels"))
    with _db(app).reader() as session:
        assert (
            session.execute(
                select(func.count()).where(
                    AuditEvent.action == "panel.updated", AuditEvent.object_id == str(panel_id)
                )
            ).scalar()
            == 2
        )


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"name": "N" * 201}, "Panel name must be 200 characters or fewer"),
        ({"name": "   "}, "Enter a panel name."),
        ({"description": "Line\x00"}, "there is a problem with that request"),
        ({"status": "concluded"}, "Select whether the panel is taking new members."),
    ],
)
def test_a_panel_edit_with_a_problem_changes_nothing(
    app: Flask, fields: dict[str, str], message: str
) -> None:
    with _db(app).transaction() as session:
        panel_id = factories.panel(session, name="Northfield panel").id
    client = staff_client(app, "coordinator")
    path = f"/admin/panels/{panel_id}/edit"
    data = {"name": "Renamed", "family_hub": "Hub", "description": "D", "status": "open"}
    response = _post(client, path, path, {**data, **fields})
    assert response.status_code == 400 and message in html.unescape(text(response))
    assert _panel(app, panel_id).name == "Northfield panel"


def test_a_concluded_panel_cannot_be_edited(app: Flask) -> None:
    with _db(app).transaction() as session:
        panel_id = factories.panel(session, name="Northfield panel").id
    client = staff_client(app, "coordinator")
    conclude = f"/admin/panels/{panel_id}/conclude"
    _post(client, conclude, conclude)
    path = f"/admin/panels/{panel_id}/edit"
    data = {"name": "Renamed", "family_hub": "Hub", "description": "D", "status": "open"}
    response = _post(client, path, path, data)
    assert response.status_code == 400
    assert "A concluded panel cannot be changed." in text(response)
    panel = _panel(app, panel_id)
    assert (panel.name, panel.status) == ("Northfield panel", "concluded")


def test_nothing_new_is_written_about_a_concluded_panel(app: Flask) -> None:
    """The sweep destroys a concluded panel's records once and never returns to it."""
    db = _db(app)
    with db.transaction() as session:
        panel = factories.panel(session)
        factories.member(session, panel)
        meeting = factories.meeting(session, panel)
        panel_id, session_path = panel.id, f"/admin/sessions/{meeting.id}"
    client = staff_client(app, "coordinator")
    panel_path = f"/admin/panels/{panel_id}"

    def post_then_read(page: str, path: str, data: dict[str, str] | None = None) -> str:
        _post(client, page, path, data)
        return text(client.get(page))

    with db.transaction() as session:
        panel = session.get(Panel, panel_id)
        assert panel is not None
        panel.status = "closed"
    invited = post_then_read(session_path, session_path + "/invite")
    assert "Invitations queued for 1 member(s)." in invited, "a closed panel still meets"
    _post(client, panel_path + "/conclude", panel_path + "/conclude")
    retention.sweep(db)
    assert "Save note" not in text(client.get(session_path))
    refused = post_then_read(session_path, session_path + "/notes", {"note": "Jane said"})
    assert "so notes are no longer kept" in refused
    data = {"title": "Extra", "starts_at": "2030-03-05 18:30", "format": "online"}
    refused = post_then_read(panel_path, panel_path + "/sessions", data)
    assert "so sessions cannot be added" in refused
    with db.reader() as session:
        assert session.execute(select(func.count()).select_from(SessionNote)).scalar_one() == 0
        assert session.execute(select(func.count()).select_from(PanelSession)).scalar_one() == 1


# ---- workshops ----------------------------------------------------------------------------


def test_running_a_workshop(app: Flask) -> None:
    db = _db(app)
    with time_machine.travel(utcnow() - timedelta(days=3), tick=False), db.transaction() as session:
        workshop = factories.workshop(session, days=2, title="Toddler talk")
        booking_id = factories.booking(session, workshop, "bob@example.com", "Bob Booker").id
        workshop_id = workshop.id
    client = staff_client(app, "coordinator")
    path = f"/admin/workshops/{workshop_id}"
    assert "Bob Booker" in text(client.get(path))
    _post(client, path, path + "/attendance", {"booking": str(booking_id), "attended": "yes"})
    _post(client, path, path + "/send-evaluation")
    _post(client, path, path + "/send-evaluation")
    _post(client, path, path + "/close-evaluation")
    assert [m.template for m in mails(db, "bob@example.com")] == ["workshop_evaluation"]
    assert "Cancel the workshop" not in text(client.get(path))
    _post(client, path, path + "/cancel")
    assert "has already started, so it cannot be cancelled" in text(client.get(path))
    assert [m.template for m in mails(db, "bob@example.com")] == ["workshop_evaluation"]
    with db.reader() as session:
        booking = session.get(Booking, booking_id)
        assert booking.attended is True
        found = workshops.get_workshop(session, workshop_id)
        assert found.evaluation_closed_at is not None and found.status == "scheduled"


def test_attendance_corrections_and_cancellations_are_counted_once(app: Flask) -> None:
    db = _db(app)
    with time_machine.travel(utcnow() - timedelta(days=3), tick=False), db.transaction() as session:
        workshop = factories.workshop(session, days=2)
        came = factories.booking(session, workshop, "came@example.com").id
        gone = factories.booking(session, workshop, "gone@example.com")
        preferences.cancel_booking(session, session.get(Person, gone.person_id), gone.id)
        workshop_id, month = workshop.id, reports.period_of(workshop.starts_at)
    client = staff_client(app, "coordinator")
    path = f"/admin/workshops/{workshop_id}"
    for answer in ("no", "yes", "no", "yes", "yes", ""):
        _post(client, path, path + "/attendance", {"booking": str(came), "attended": answer})
    assert "Select whether they came to the workshop" in text(client.get(path))
    _post(client, path, path + "/attendance", {"booking": str(gone.id), "attended": "yes"})
    assert "That booking was cancelled" in text(client.get(path))

    def counted(report: str) -> int:
        with db.reader() as session:
            cells = reports.table(session, report, start=month, end=month)
        return sum(cell.count for cell in cells)

    assert counted("attendance") == 1
    assert counted("cancellations") == 1 and counted("bookings") == 2


def test_no_one_is_counted_as_attending_a_cancelled_workshop(app: Flask) -> None:
    db = _db(app)
    with db.transaction() as session:
        workshop = factories.workshop(session, days=2)
        booked = factories.booking(session, workshop, "booked@example.com").id
        workshops.cancel_workshop(session, workshop)
        workshop_id, month = workshop.id, reports.period_of(workshop.starts_at)
    client = staff_client(app, "coordinator")
    path = f"/admin/workshops/{workshop_id}"
    _post(client, path, path + "/attendance", {"booking": str(booked), "attended": "yes"})
    assert "This workshop was cancelled" in text(client.get(path))
    with db.reader() as session:
        assert reports.table(session, "attendance", start=month, end=month) == []


def test_attendance_waits_until_the_workshop_has_started(app: Flask) -> None:
    """Marked beforehand, then cancelled, the workshop would count someone as attending
    a workshop that never took place."""
    db = _db(app)
    with db.transaction() as session:
        workshop = factories.workshop(session, days=2)
        booked = factories.booking(session, workshop, "booked@example.com").id
        workshop_id, month = workshop.id, reports.period_of(workshop.starts_at)
    client = staff_client(app, "coordinator")
    path = f"/admin/workshops/{workshop_id}"
    _post(client, path, path + "/attendance", {"booking": str(booked), "attended": "yes"})
    assert "once the workshop has started" in text(client.get(path))
    with time_machine.travel(utcnow() + timedelta(days=2, minutes=5)), db.transaction() as session:
        workshops.set_attended(session, workshops.get_workshop(session, workshop_id), booked, True)
    with db.reader() as session:
        assert [c.count for c in reports.table(session, "attendance", start=month, end=month)] == [
            1
        ]


def test_correcting_a_finished_workshop_s_date_takes_its_attendance_to_the_new_month(
    app: Flask,
) -> None:
    db = _db(app)
    start = datetime(2027, 3, 30, 10, tzinfo=UTC)
    made = datetime(2027, 3, 28, 9, tzinfo=UTC)
    with time_machine.travel(made, tick=False), db.transaction() as session:
        workshop = factories.workshop(session, starts_at=start)
        workshop_id = workshop.id
        booking_id = factories.booking(session, workshop).id
    with time_machine.travel(datetime(2027, 4, 3, 9, tzinfo=UTC), tick=False):
        with db.transaction() as session:
            workshops.set_attended(
                session, workshops.get_workshop(session, workshop_id), booking_id, True
            )
        with db.transaction() as session:
            found = workshops.get_workshop(session, workshop_id)
            new = datetime(2027, 4, 1, 10, tzinfo=UTC)
            workshops.update_workshop(
                session,
                found,
                title=found.title,
                description=found.description,
                starts_at=new,
                ends_at=new + timedelta(hours=1),
                capacity=found.capacity,
                location=found.location,
            )
    with db.reader() as session:
        march = reports.table(session, "attendance", start="2027-03", end="2027-03")
        april = reports.table(session, "attendance", start="2027-04", end="2027-04")
        assert sum(c.count for c in march) == 0
        assert [c.count for c in april] == [1]
    later = datetime(2027, 4, 3, 10, tzinfo=UTC)
    with time_machine.travel(later, tick=False), db.transaction() as session:
        workshop = workshops.get_workshop(session, workshop_id)
        workshops.set_attended(session, workshop, booking_id, False)
    with db.reader() as session:
        april = reports.table(session, "attendance", start="2027-04", end="2027-04")
        assert sum(c.count for c in april) == 0 and all(c.count >= 0 for c in april)


@pytest.mark.parametrize("cancelled", ["booking", "workshop"])
def test_no_feedback_for_a_cancelled_place_or_before_the_workshop(
    app: Flask, cancelled: str
) -> None:
    db = _db(app)
    with db.transaction() as session:
        workshop = factories.workshop(session, days=3)
        booking = factories.booking(session, workshop)
        person_id, booking_id = booking.person_id, booking.id
    with db.transaction() as session:
        person = session.get(Person, person_id)
        with pytest.raises(Conflict, match="once it has taken place"):
            workshops.record_evaluation(session, person, booking_id, rating="Useful", comments=None)
        if cancelled == "booking":
            preferences.cancel_booking(session, person, booking_id)
        else:
            workshops.cancel_workshop(session, workshops.get_workshop(session, workshop.id))
    with (
        time_machine.travel(utcnow() + timedelta(days=4)),
        db.transaction() as session,
        pytest.raises(Conflict, match="was cancelled"),
    ):
        workshops.record_evaluation(
            session, session.get(Person, person_id), booking_id, rating="Useful", comments=None
        )
    with db.reader() as session:
        assert (
            session.execute(
                select(StatCounter).where(StatCounter.metric == "workshop.evaluated")
            ).first()
            is None
        )


def test_no_attendance_is_recorded_for_a_concluded_panel(app: Flask) -> None:
    """The sweep destroys a concluded panel's records once and never comes back: anything
    written after it concluded would be kept for ever."""
    db = _db(app)
    with db.transaction() as session:
        panel = factories.panel(session)
        membership = factories.member(session, panel)
        meeting = factories.meeting(session, panel, days=0)
        panels.conclude(session, panel)
        path, membership_id = f"/admin/sessions/{meeting.id}", membership.id
    client = staff_client(app, "coordinator")
    response = _post(
        client, path, path + "/attendance", {"membership": str(membership_id), "attended": "yes"}
    )
    assert response.status_code == 302
    assert "This panel has concluded, so attendance is no longer kept." in text(
        client.get(response.location)
    )
    with db.reader() as session:
        assert session.execute(select(Attendance)).first() is None


def test_who_came_and_who_agreed_to_be_recorded_wait_until_the_session_has_started(
    app: Flask,
) -> None:
    """Nobody has come to a session still to come; and an agreement to be recorded ticked
    weeks ahead could outlast the member's change of mind (withdrawing is as easy as
    giving). The workshop register waits in the same way."""
    db = _db(app)
    with db.transaction() as session:
        panel = factories.panel(session)
        someone = factories.person(session, "recorded@example.com")
        membership = factories.member(session, panel, someone)
        ledger.give(session, someone, "panel_recordings", channel="web_form", actor="self")
        held = factories.meeting(session, panel, days=-1)
        coming = factories.meeting(session, panel, days=10)
    client = staff_client(app, "coordinator")
    refused = ""
    for meeting in (held, coming):
        path = f"/admin/sessions/{meeting.id}"
        answer = _post(
            client,
            path,
            path + "/attendance",
            {"membership": str(membership.id), "attended": "yes", "recording": "yes"},
        )
        refused = text(client.get(answer.location))
    assert "You can record who came once the session has started." in refused
    assert 'name="attended"' not in text(client.get(f"/admin/sessions/{coming.id}"))
    assert 'name="attended"' in text(client.get(f"/admin/sessions/{held.id}"))
    with db.reader() as session:
        rows = session.execute(
            select(Attendance.session_id, Attendance.attended, Attendance.recording_consent)
        ).all()
    assert rows == [(held.id, True, True)]


def test_a_changed_rating_is_counted_once_under_the_new_one(app: Flask) -> None:
    """In the month the first rating was counted, however much later it is changed."""
    db = _db(app)
    given = datetime(2027, 4, 1, 10, tzinfo=UTC)
    with time_machine.travel(given - timedelta(days=3), tick=False), db.transaction() as session:
        booking = factories.booking(session, factories.workshop(session, days=1))
        person_id, booking_id = booking.person_id, booking.id
    for at, rating in (
        (given, "Useful"),
        (given + timedelta(days=40), "Very useful"),
        (given + timedelta(days=41), "Very useful"),
    ):
        with time_machine.travel(at, tick=False), db.transaction() as session:
            workshops.record_evaluation(
                session, session.get(Person, person_id), booking_id, rating=rating, comments=None
            )
    with db.reader() as session:
        counted = session.execute(
            select(StatCounter.period, StatCounter.value, StatCounter.count).where(
                StatCounter.metric == "workshop.evaluated", StatCounter.count != 0
            )
        ).all()
    assert counted == [(reports.period_of(given), "Very useful", 1)]


def test_workshops_and_sessions_far_in_the_future_or_past_are_refused(app: Flask) -> None:
    client = staff_client(app, "coordinator")
    form = {
        "title": "T",
        "description": "D",
        "starts_at": "9999-12-31 22:00",
        "ends_at": "9999-12-31 23:00",
        "capacity": "5",
        "location": "Online",
    }
    refused = _post(client, "/admin/workshops/new", "/admin/workshops/new", form)
    assert refused.status_code == 400 and "within the next five years" in text(refused)
    with _db(app).transaction() as session:
        panel_id = factories.panel(session).id
    path = f"/admin/panels/{panel_id}"
    for when, message in (
        ("9999-12-31 18:30", "within the next five years"),
        ("1900-01-01 18:30", "within the last year"),
    ):
        data = {"title": "Extra", "starts_at": when, "format": "online"}
        _post(client, path, path + "/sessions", data)
        assert message in text(client.get(path))
    with _db(app).reader() as session:
        assert session.execute(select(func.count()).select_from(Workshop)).scalar() == 0
        assert session.execute(select(func.count()).select_from(PanelSession)).scalar() == 0


def test_panel_attendance_needs_an_answer(app: Flask) -> None:
    db = _db(app)
    with db.transaction() as session:
        panel = factories.panel(session)
        membership = factories.member(session, panel)
        meeting = factories.meeting(session, panel, days=0)
        path, membership_id = f"/admin/sessions/{meeting.id}", membership.id
    client = staff_client(app, "coordinator")
    _post(client, path, path + "/attendance", {"membership": str(membership_id)})
    assert "Select whether they came to the session" in text(client.get(path))
    with db.reader() as session:
        assert session.execute(select(Attendance)).scalars().all() == []


def test_workshop_form_errors(app: Flask) -> None:
    client = staff_client(app, "coordinator")
    response = _post(
        client,
        "/admin/workshops/new",
        "/admin/workshops/new",
        {
            "title": "T",
            "description": "D",
            "starts_at": "tomorrow",
            "ends_at": "2030-01-01 10:00",
            "capacity": "lots",
            "location": "Online",
        },
    )
    assert response.status_code == 400 and "as a number" in text(response)


@pytest.mark.parametrize(
    ("starts_at", "ends_at", "message"),
    [
        ("2020-05-01 10:00", "2020-05-01 11:30", "The start time must be in the future."),
        ("2030-05-01 10:00", "2030-05-04 11:30", "must end within 24 hours of when it starts"),
        ("2030-05-01 10:00", "2031-05-01 11:30", "add each day as its own workshop"),
    ],
)
def test_a_new_workshop_must_be_one_sitting_in_the_future(
    app: Flask, starts_at: str, ends_at: str, message: str
) -> None:
    """A mistyped year would make a workshop no one can book, or keep bookers' details
    for years after the day."""
    client = staff_client(app, "coordinator")
    form = {
        "title": "Toddler talk",
        "description": "Talking with toddlers.",
        "capacity": "12",
        "location": "Online",
    }
    response = _post(
        client,
        "/admin/workshops/new",
        "/admin/workshops/new",
        {**form, "starts_at": starts_at, "ends_at": ends_at},
    )
    assert response.status_code == 400 and message in text(response)
    with _db(app).reader() as session:
        assert workshops.all_workshops(session) == []
    good = {**form, "starts_at": "2030-05-01 18:00", "ends_at": "2030-05-02 09:30"}
    made = _post(client, "/admin/workshops/new", "/admin/workshops/new", good)
    assert made.status_code == 302
    with _db(app).reader() as session:
        assert [w.title for w in workshops.all_workshops(session)] == ["Toddler talk"]


def _edit_workshop(client: FlaskClient, workshop_id: int, **changes: str):  # type: ignore[no-untyped-def]
    path = f"/admin/workshops/{workshop_id}/edit"
    data = {
        "title": "Toddler talk",
        "description": "Talking with toddlers.",
        "starts_at": "2030-05-01 10:00",
        "ends_at": "2030-05-01 11:30",
        "capacity": "5",
        "location": "Northfield Family Hub",
        **changes,
    }
    return _post(client, path, path, data)


def test_editing_a_workshop_keeps_its_bookings(app: Flask) -> None:
    db = _db(app)
    with db.transaction() as session:
        workshop = factories.workshop(session, capacity=9, title="Baby sleep")
        factories.booking(session, workshop, "ann@example.com", "Ann")
        factories.booking(session, workshop, "ben@example.com", "Ben")
        workshop_id = workshop.id
    client = staff_client(app, "coordinator")
    assert 'value="Baby sleep"' in text(client.get(f"/admin/workshops/{workshop_id}/edit"))
    saved = _edit_workshop(client, workshop_id)
    assert saved.status_code == 302
    with db.reader() as session:
        found = workshops.get_workshop(session, workshop_id)
        assert found.title == "Toddler talk" and found.capacity == 5
        assert found.starts_at.astimezone(LONDON).strftime("%Y-%m-%d %H:%M") == "2030-05-01 10:00"
        assert found.starts_at.utcoffset() == timedelta(0) and found.starts_at.hour == 9
        assert workshops.places_taken(session, found) == 2
    listing = text(app.test_client().get(f"/workshops/{workshop_id}"))
    assert "Toddler talk" in listing and "Baby sleep" not in listing


def test_those_booked_are_told_when_the_time_or_place_changes(app: Flask) -> None:
    db = _db(app)
    with db.transaction() as session:
        workshop = factories.workshop(session, capacity=9, title="Baby sleep")
        factories.booking(session, workshop, "ann@example.com", "Ann")
        gone = factories.booking(session, workshop, "ben@example.com", "Ben")
        preferences.cancel_booking(session, session.get(Person, gone.person_id), gone.id)
        erased = factories.booking(session, workshop, "cy@example.com", "Cy")
        people.erase(
            session,
            session.get(Person, erased.person_id),
            channel="admin",
            actor="dpo",
            note="Asked",
        )
        workshop_id = workshop.id
    client = staff_client(app, "coordinator")
    saved = _edit_workshop(client, workshop_id, starts_at="2030-05-01 10:30")
    assert saved.status_code == 302
    assert "emailed the new time and place to the 1 person booked" in text(
        client.get(saved.location)
    )
    [changed] = mails(db, "ann@example.com", "workshop_changed")
    assert "1 May 2030 at 10:30am" in changed.body_text
    assert "Northfield Family Hub" in changed.body_text
    assert "Your place is still booked" in changed.body_text
    assert mails(db, "ben@example.com", "workshop_changed") == []
    assert [m.to_address for m in mails(db, template="workshop_changed")] == ["ann@example.com"]

    def told_after(**changes: str) -> int:
        _edit_workshop(client, workshop_id, **{"starts_at": "2030-05-01 10:30", **changes})
        return len(mails(db, "ann@example.com", "workshop_changed"))

    assert told_after() == 1
    assert told_after(capacity="7", title="New", description="Other") == 1
    assert told_after(location="Online") == 2
    assert "Where: Online" in mails(db, "ann@example.com", "workshop_changed")[-1].body_text
    assert told_after(location="Online") == 2
    assert told_after(location="Online", ends_at="2030-05-01 12:00") == 3


def test_correcting_a_past_workshop_tells_nobody(app: Flask) -> None:
    db = _db(app)
    with time_machine.travel(utcnow() - timedelta(days=3), tick=False), db.transaction() as session:
        workshop = factories.workshop(session, days=1, title="Baby sleep")
        factories.booking(session, workshop, "ann@example.com", "Ann")
        workshop_id, starts_at = workshop.id, workshop.starts_at
    client = staff_client(app, "coordinator")
    earlier = starts_at - timedelta(hours=1)
    moved = _edit_workshop(
        client,
        workshop_id,
        starts_at=london_input(earlier),
        ends_at=london_input(earlier + timedelta(hours=1)),
    )
    assert moved.status_code == 302
    assert mails(db, "ann@example.com", "workshop_changed") == []


def test_a_workshop_that_has_taken_place_cannot_be_moved_into_the_future(app: Flask) -> None:
    """Moved to a later date it would be open for booking again, its bookers' details kept
    until then, and an attendance already counted could be cancelled with the workshop."""
    db = _db(app)
    with time_machine.travel(utcnow() - timedelta(days=3), tick=False), db.transaction() as session:
        workshop = factories.workshop(session, days=1, title="Baby sleep")
        booking_id = factories.booking(session, workshop, "ann@example.com", "Ann").id
        workshop_id, starts_at = workshop.id, workshop.starts_at
    with db.transaction() as session:
        found = workshops.get_workshop(session, workshop_id)
        workshops.set_attended(session, found, booking_id, True)
    client = staff_client(app, "coordinator")
    response = _edit_workshop(client, workshop_id, starts_at="2030-05-01 10:30")
    assert response.status_code == 400
    assert "has already started, so it cannot be moved to a time still to come" in (
        html.unescape(text(response))
    )
    with db.reader() as session:
        assert workshops.get_workshop(session, workshop_id).starts_at == starts_at
    assert "Toddler talk" not in text(app.test_client().get("/workshops"))


@pytest.mark.parametrize(
    ("changes", "message"),
    [
        ({"capacity": "1"}, "There are already more bookings than that."),
        ({"capacity": "0"}, "Number of places must be between 1 and 10,000."),
        ({"capacity": "ten"}, "Enter the number of places as a number."),
        ({"ends_at": "2030-05-01 09:00"}, "The workshop must end after it starts."),
        ({"ends_at": "2031-05-01 11:30"}, "must end within 24 hours of when it starts"),
        (
            {"starts_at": "2020-05-01 10:00", "ends_at": "2020-05-01 11:30"},
            "The start time must be in the future.",
        ),
        (
            {"starts_at": "2030-03-31 01:30", "ends_at": "2030-03-31 03:00"},
            "01:30 on 31 March 2030 does not exist in the UK",
        ),
        (
            {"starts_at": "2030-10-27 01:30", "ends_at": "2030-10-27 03:00"},
            "01:30 on 27 October 2030 happens twice in the UK",
        ),
        ({"starts_at": "1 May"}, "Enter when it starts like 2027-03-05 18:30."),
        ({"title": "T" * 201}, "Title must be 200 characters or fewer"),
    ],
)
def test_a_workshop_edit_with_a_problem_changes_nothing(
    app: Flask, changes: dict[str, str], message: str
) -> None:
    with _db(app).transaction() as session:
        workshop = factories.workshop(session, capacity=9, title="Baby sleep")
        factories.booking(session, workshop, "ann@example.com", "Ann")
        factories.booking(session, workshop, "ben@example.com", "Ben")
        workshop_id = workshop.id
    client = staff_client(app, "coordinator")
    response = _edit_workshop(client, workshop_id, **changes)
    assert response.status_code == 400 and message in html.unescape(text(response))
    with _db(app).reader() as session:
        found = workshops.get_workshop(session, workshop_id)
        assert (found.title, found.capacity) == ("Baby sleep", 9)


def test_a_cancelled_workshop_cannot_be_edited(app: Flask) -> None:
    with _db(app).transaction() as session:
        workshop_id = factories.workshop(session, title="Baby sleep").id
    client = staff_client(app, "coordinator")
    path = f"/admin/workshops/{workshop_id}"
    _post(client, path, path + "/cancel")
    response = _edit_workshop(client, workshop_id)
    assert response.status_code == 400
    assert "A cancelled workshop cannot be changed." in text(response)
    with _db(app).reader() as session:
        assert workshops.get_workshop(session, workshop_id).title == "Baby sleep"


def test_a_finished_workshop_whose_bookings_were_deleted_cannot_be_moved(app: Flask) -> None:
    """Moved to a new date it could be booked again, and the sweep, which has finished
    with it, would never delete the new bookers' details."""
    db = _db(app)
    with (
        time_machine.travel(utcnow() - timedelta(days=40), tick=False),
        db.transaction() as session,
    ):
        workshop = factories.workshop(session, days=1, title="Baby sleep")
        factories.booking(session, workshop, "ann@example.com", "Ann")
        workshop_id, starts_at = workshop.id, workshop.starts_at
    retention.sweep(db)
    client = staff_client(app, "coordinator")
    page = text(client.get(f"/admin/workshops/{workshop_id}"))
    assert "Baby sleep" in page and f"/admin/workshops/{workshop_id}/edit" not in page
    response = _edit_workshop(client, workshop_id)
    assert response.status_code == 400
    assert "the details of those who booked have been deleted, so it cannot be changed" in (
        html.unescape(text(response))
    )
    with db.reader() as session:
        found = workshops.get_workshop(session, workshop_id)
        assert (found.title, found.starts_at) == ("Baby sleep", starts_at)
    assert "Toddler talk" not in text(app.test_client().get("/workshops"))


# ---- rights requests ----------------------------------------------------------------------


def test_a_request_is_overdue_only_once_its_due_day_has_ended(app: Flask) -> None:
    email, secret = make_staff(_db(app), "dpo")
    data = {"kind": "access", "channel": "post", "received": "2030-01-31", "requester": "Pat"}
    for moment, overdue in (
        (datetime(2030, 2, 1, 9, 0, tzinfo=LONDON), None),
        (datetime(2030, 2, 28, 23, 30, tzinfo=LONDON), False),
        (datetime(2030, 3, 1, 0, 30, tzinfo=LONDON), True),
    ):
        with time_machine.travel(moment, tick=False):
            dpo = app.test_client()
            sign_in(dpo, email, secret)
            if overdue is None:
                assert _post(dpo, "/admin/rights/new", "/admin/rights/new", data).status_code == 302
                with _db(app).reader() as session:
                    page = f"/admin/rights/{session.execute(select(RightsRequest.id)).scalar_one()}"
                continue
            assert ("Overdue" in text(dpo.get("/admin/rights"))) is overdue, moment
            assert ("(overdue)" in text(dpo.get(page))) is overdue, moment
            assert ("Overdue: 1." in text(dpo.get("/admin/"))) is overdue, moment
            if overdue:
                assert 'href="/admin/rights"' in text(dpo.get("/admin/"))
                coordinator = staff_client(app, "coordinator")
                dashboard = text(coordinator.get("/admin/"))
                assert "1 rights request overdue" in dashboard
                assert 'href="/admin/rights"' not in dashboard
                assert coordinator.get("/admin/rights").status_code == 403


def test_a_request_cannot_be_logged_as_received_tomorrow_in_london(app: Flask) -> None:
    email, secret = make_staff(_db(app), "dpo")
    form = {"kind": "access", "channel": "post", "requester": "Pat"}
    for moment, tries in (
        (datetime(2030, 6, 10, 23, 30, tzinfo=LONDON), {"2030-06-11": False, "2030-06-10": True}),
        # 23:30 on 10 June in UTC, but already 11 June in London.
        (datetime(2030, 6, 11, 0, 30, tzinfo=LONDON), {"2030-06-12": False, "2030-06-11": True}),
    ):
        with time_machine.travel(moment, tick=False):
            dpo = app.test_client()
            sign_in(dpo, email, secret)
            for received, allowed in tries.items():
                data = {**form, "received": received}
                response = _post(dpo, "/admin/rights/new", "/admin/rights/new", data)
                assert (response.status_code == 302) is allowed, (moment, received)
                if not allowed:
                    assert "The date received must be today or in the past." in text(response)
    with _db(app).reader() as session:
        assert session.scalar(select(func.count()).select_from(RightsRequest)) == 2


def test_rights_requests_have_a_statutory_due_date(app: Flask) -> None:
    """Received 31 January 2026, due the last day of February; that is a Saturday, so the
    council has until Monday 2 March, as the ICO counts it."""
    dpo = staff_client(app, "dpo")
    response = _post(
        dpo,
        "/admin/rights/new",
        "/admin/rights/new",
        {
            "kind": "erasure",
            "channel": "post",
            "received": "2026-01-31",
            "requester": "Pat, 1 High Street",
        },
    )
    assert response.status_code == 302
    with _db(app).reader() as session:
        item = session.execute(select(RightsRequest)).scalar_one()
    due = item.due_at.astimezone(LONDON)
    assert (due.year, due.month, due.day) == (2026, 3, 2)
    assert "overdue" in text(dpo.get("/admin/")).lower()
    bad = _post(
        dpo,
        "/admin/rights/new",
        "/admin/rights/new",
        {"kind": "erasure", "channel": "post", "received": "31/01/2026", "requester": "Pat"},
    )
    assert bad.status_code == 400 and "like 2027-03-05" in text(bad)
    closing = _post(
        dpo,
        f"/admin/rights/{item.id}",
        f"/admin/rights/{item.id}",
        {"status": "completed", "outcome": ""},
    )
    assert closing.status_code == 400 and "Enter the outcome" in text(closing)


@pytest.mark.parametrize(
    ("received", "due"),
    [
        ("2027-11-25", "2027-12-29"),  # Saturday 25 December; 27 and 28 are bank holidays
        ("2023-04-08", "2023-05-09"),  # Monday 8 May 2023 was the coronation bank holiday
        ("2026-03-31", "2026-04-30"),  # no 31 April: the last day, a Thursday
        ("2026-11-23", "2026-12-23"),  # a Wednesday: no change
    ],
)
def test_a_due_date_at_a_weekend_or_on_a_bank_holiday_moves_to_the_next_working_day(
    received: str, due: str
) -> None:
    """ICO: if the corresponding date falls on a weekend or a public holiday, the council
    has until the next working day."""
    day = datetime.fromisoformat(received).replace(hour=12, tzinfo=LONDON).astimezone(UTC)
    assert rights.due_date(day).astimezone(LONDON).date().isoformat() == due


def _log_request(dpo: FlaskClient, received: str, **extra: str) -> int:
    form = {"kind": "access", "channel": "post", "received": received, "requester": "Pat"}
    logged = _post(dpo, "/admin/rights/new", "/admin/rights/new", {**form, **extra})
    assert logged.status_code == 302
    with_request = re.search(r"/admin/rights/(\d+)", text(dpo.get("/admin/rights")))
    assert with_request is not None
    return int(with_request.group(1))


@time_machine.travel(datetime(2026, 11, 25, 10, tzinfo=UTC), tick=False)
def test_a_complex_rights_request_can_be_given_two_more_months_once(app: Flask) -> None:
    """The ICO allows two months more for a complex request, if the person is told, with
    the reason, within the first month: three calendar months from receipt, counted as the
    first is. Received 1 November 2026: due 1 December; extended, 1 February 2027."""
    dpo = staff_client(app, "dpo")
    request_id = _log_request(dpo, "2026-11-01")
    page = f"/admin/rights/{request_id}"
    extend = f"{page}/extend"
    unreasoned = _post(dpo, page, extend, {"reason": "  "})
    assert unreasoned.status_code == 400
    assert "There is a problem" in text(unreasoned)
    assert 'href="#reason">Enter why the request needs more time.' in text(unreasoned)
    done = _post(dpo, page, extend, {"reason": "Records held in three offices; told on 20 Nov."})
    assert done.status_code == 302
    shown = text(dpo.get(page))
    assert "Records held in three offices" in shown and "1 February 2027" in shown
    assert "Give two more months" not in shown
    again = _post(dpo, page, extend, {"reason": "More again"})
    assert "already been given two more months" in text(dpo.get(again.location))
    with _db(app).reader() as session:
        item = session.get(RightsRequest, request_id)
        assert item is not None
        assert item.due_at.astimezone(LONDON).date().isoformat() == "2027-02-01"
        assert (
            session.scalar(
                select(func.count()).where(AuditEvent.action == "rights_request.extended")
            )
            == 1
        )
    coordinator = staff_client(app, "coordinator")
    refused = _post(coordinator, "/admin/", extend, {"reason": "Only the DPO may"})
    assert refused.status_code == 403


@time_machine.travel(datetime(2026, 11, 25, 10, tzinfo=UTC), tick=False)
def test_more_time_is_refused_once_the_first_deadline_has_passed(app: Flask) -> None:
    dpo = staff_client(app, "dpo")
    request_id = _log_request(dpo, "2026-10-20")
    page = f"/admin/rights/{request_id}"
    assert "Give two more months" not in text(dpo.get(page))
    refused = _post(dpo, page, f"{page}/extend", {"reason": "Too late"})
    assert "past its first deadline" in text(dpo.get(refused.location))
    with _db(app).reader() as session:
        item = session.get(RightsRequest, request_id)
        assert item is not None and item.extended_at is None
        assert item.due_at.astimezone(LONDON).date().isoformat() == "2026-11-20"


def test_a_rights_request_is_linked_to_the_person_by_email_and_bad_ones_are_refused(
    app: Flask,
) -> None:
    with _db(app).transaction() as session:
        known = factories.person(session, email="pat.parent@example.com").public_id
    dpo = staff_client(app, "dpo")
    form = {"kind": "access", "channel": "email", "received": "2026-11-20", "requester": "Pat"}
    refused = [
        ({"email": "someone.else@example.com"}, "No one with that email address"),
        ({"received": "2099-01-01"}, "must be today or in the past"),
        ({"received": "1027-03-05"}, "must be on or after 25 May 2018. Check the year."),
        ({"received": "0001-01-01"}, "must be on or after 25 May 2018. Check the year."),
        ({"requester": "   "}, "Enter who made the request"),
        ({"requester": "Pat\x1b[31m"}, "must not contain hidden characters"),
    ]
    for change, message in refused:
        bad = _post(dpo, "/admin/rights/new", "/admin/rights/new", {**form, **change})
        assert bad.status_code == 400, change
        assert message in text(bad), change
    with _db(app).reader() as session:
        assert session.scalar(select(func.count()).select_from(RightsRequest)) == 0

    logged = _post(
        dpo, "/admin/rights/new", "/admin/rights/new", {**form, "email": " Pat.Parent@Example.com "}
    )
    assert logged.status_code == 302
    with _db(app).reader() as session:
        item = session.execute(select(RightsRequest)).scalar_one()
        person = session.execute(select(Person).where(Person.public_id == known)).scalar_one()
        assert item.person_id == person.id
    page = dpo.get(f"/admin/rights/{item.id}")
    assert f'href="/admin/people/{known}"' in page.get_data(as_text=True)
    assert "pat.parent@example.com" in text(page)
    assert dpo.get(f"/admin/rights/{item.id + 1}").status_code == 404
    assert dpo.get("/admin/rights/99999999999").status_code == 404


# ---- import -------------------------------------------------------------------------------


def _upload(client: FlaskClient, content: bytes, purpose: str = "newsletter"):  # type: ignore[no-untyped-def]
    token = csrf(text(client.get("/admin/import")))
    return client.post(
        "/admin/import",
        data={"csrf_token": token, "purpose": purpose, "file": (io.BytesIO(content), "list.csv")},
        content_type="multipart/form-data",
    )


CSV = (
    "email,name,consented_at,evidence\n"
    "new.one@example.com,New One,2026-09-01,Paper form at Northfield hub\n"
    "New.Two@Example.com,New Two,2026-09-02 14:30,Paper form at Riverside hub\n"
    "gone@example.com,Gone,2026-09-03,Paper form\n"
)


def test_import_previews_then_imports_all_or_nothing(app: Flask) -> None:
    db = _db(app)
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="gone@example.com")
        people.erase(session, person, channel="email_link", actor="self")
    client = staff_client(app, "coordinator")
    response = _upload(client, CSV.encode())
    assert response.status_code == 302
    preview = text(client.get(response.location))
    assert "Will be imported" in preview and "Asked not to be contacted" in preview
    with db.reader() as session:
        assert people.find_by_email(session, "new.one@example.com") is None
    token = csrf(preview)
    from tests.web import hidden_fields

    fields = hidden_fields(preview)
    done = client.post("/admin/import/confirm", data={**fields, "csrf_token": token})
    assert "2 row(s) imported" in text(done)
    with db.reader() as session:
        for address in ("new.one@example.com", "new.two@example.com"):
            found = people.find_by_email(session, address)
            event = ledger.events_for(session, found)[0]
            assert (event.channel, event.action) == ("import", "given")
            assert event.note.startswith("Paper form")
        assert people.find_by_email(session, "gone@example.com") is None
        assert ledger.verify(session).ok
        imported = session.execute(
            select(func.sum(sql("count")))
            .select_from(sql("stat_counter"))
            .where(sql("metric = 'consent.imported'"))
        ).scalar()
        assert imported == 2
    assert not list((app.config["SETTINGS"].instance_path / "imports").glob("*.csv"))


def test_a_list_of_several_megabytes_is_taken_and_kept_private(app: Flask) -> None:
    """Any other request may send 2 MB; an import list up to 50 MB must reach the page
    (the form's token check reads the body first), and wait where only we can read it."""
    rows = "".join(
        f"parent{index}@example.com,Parent {index},2026-09-01,Paper form at Northfield hub\n"
        for index in range(50_000)
    )
    content = ("email,name,consented_at,evidence\n" + rows).encode()
    assert len(content) > 3 * 1024 * 1024
    client = staff_client(app, "coordinator")
    response = _upload(client, content)
    assert response.status_code == 302
    folder = app.config["SETTINGS"].instance_path / "imports"
    [stored] = folder.glob("*.csv")
    assert stat.S_IMODE(folder.stat().st_mode) == 0o700
    assert stat.S_IMODE(stored.stat().st_mode) == 0o600
    too_big = {"csrf_token": "x", "rows": "x" * (3 * 1024 * 1024)}
    assert client.post("/admin/import/confirm", data=too_big).status_code == 413


@pytest.mark.parametrize(
    ("content", "message"),
    [
        (b"mail,when\nx@example.com,2026-01-01\n", "missing email, consented_at, evidence"),
        (
            "email,consented_at,evidence\nzoë@example.com,2026-01-01,form\n".encode("latin-1"),
            "not UTF-8",
        ),
    ],
)
def test_a_file_that_cannot_be_used_is_refused_clearly(
    app: Flask, content: bytes, message: str
) -> None:
    client = staff_client(app, "coordinator")
    response = _upload(client, content)
    page = text(client.get(response.location)) if response.status_code == 302 else text(response)
    assert message in page


def test_an_old_agreement_never_undoes_a_later_withdrawal(app: Flask) -> None:
    """Promise 10: a re-imported spreadsheet does not restart mail to someone who stopped."""
    db = _db(app)
    now = utcnow()
    with time_machine.travel(now - timedelta(days=10), tick=False), db.transaction() as session:
        for address in ("stopped@example.com", "again@example.com"):
            person = factories.consenting(session, "newsletter", email=address)
            ledger.withdraw(session, person, "newsletter", channel="email_link", actor="self")
    day = (now - timedelta(days=20)).astimezone(LONDON).date().isoformat()
    later = (now - timedelta(days=2)).astimezone(LONDON).date().isoformat()
    content = (
        f"email,consented_at,evidence\nstopped@example.com,{day},Old paper form\n"
        f"again@example.com,{later},New paper form at Northfield hub\n"
    )
    client = staff_client(app, "coordinator")
    preview = text(client.get(_upload(client, content.encode()).location))
    assert "Asked us to stop on" in preview
    from tests.web import hidden_fields

    done = client.post(
        "/admin/import/confirm", data={**hidden_fields(preview), "csrf_token": csrf(preview)}
    )
    assert "1 row(s) imported" in text(done)
    with db.reader() as session:
        stopped = people.find_by_email(session, "stopped@example.com")
        again = people.find_by_email(session, "again@example.com")
        assert ledger.states_for(session, stopped)["newsletter"].status == "withdrawn"
        assert ledger.states_for(session, again)["newsletter"].status == "given"


def test_an_impossible_date_is_a_row_problem(app: Flask) -> None:
    content = b"email,consented_at,evidence\nx@example.com,0001-01-01T00:00+01:00,form\n"
    client = staff_client(app, "coordinator")
    response = _upload(client, content)
    assert response.status_code == 302
    preview = text(client.get(response.location))
    assert "Rows with problems" in preview and "like 2026-03-05" in preview


def test_rows_with_problems_block_the_whole_import(app: Flask) -> None:
    bad = (
        CSV + "not-an-email,X,2026-01-01,form\nnew.one@example.com,Dup,2026-01-01,form\n"
        "late@example.com,L,2099-01-01,form\n"
    )
    client = staff_client(app, "coordinator")
    preview = text(client.get(_upload(client, bad.encode()).location))
    assert "Rows with problems" in preview
    for message in ("correct format", "appears earlier", "in the future"):
        assert message in preview
    assert "Import " not in preview.split("Problems")[0].split("Rows with problems")[1]
    with _db(app).reader() as session:
        assert session.execute(select(func.count()).select_from(ConsentEvent)).scalar() == 0


# ---- reports and audit --------------------------------------------------------------------


def test_reports_suppress_small_numbers(app: Flask) -> None:
    db = _db(app)
    with db.transaction() as session:
        factories.consents_for_a_report(session)
    client = staff_client(app, "coordinator")
    month = utcnow().astimezone(LONDON).strftime("%Y-%m")
    page = text(
        client.get(f"/admin/reports?report=consents&dimension=purpose&start={month}&end={month}")
    )
    assert ">7<" in page and "fewer than 5" in page
    csv_text = client.get(
        f"/admin/reports.csv?report=consents&dimension=purpose&start={month}&end={month}"
    )
    body = csv_text.get_data(as_text=True)
    assert "newsletter,7" in body and "workshops,fewer than 5" in body
    assert "family_hub_events,withheld" in body, "the one small count cannot be worked out"
    bad = client.get("/admin/reports?start=March")
    assert bad.status_code == 400 and "like 2027-03" in text(bad)
    assert reports.suppressed(0) == "0"
    with db.transaction() as session:
        panel = factories.panel(session)
        for _ in range(6):
            factories.member(session, panel)
    switched = client.get(
        f"/admin/reports?report=panel_joins&dimension=purpose&start={month}&end={month}"
    )
    assert "Nothing recorded" not in text(switched) and ">6<" in text(switched)
    assert '<option value="all" selected>' in switched.get_data(as_text=True)


def _possible(counts: list[int], withheld: set[int]) -> list[tuple[int, ...]]:
    """Every set of withheld counts a reader could not rule out, knowing the total, the
    counts shown, and that a suppressed one is 1 to 4 and a withheld larger one 5 or more."""
    hidden = sorted(withheld)
    total = sum(counts[i] for i in hidden)
    ranges = [range(1, 5) if counts[i] < 5 else range(5, total + 1) for i in hidden]
    return [combo for combo in itertools.product(*ranges) if sum(combo) == total]


@given(st.lists(st.integers(min_value=1, max_value=14), min_size=2, max_size=5))
@settings(max_examples=300, deadline=None)
def test_no_withheld_count_can_be_worked_out_from_the_total(counts: list[int]) -> None:
    withheld = {i for i, n in enumerate(counts) if n < 5} | reports.withheld_too(counts)
    if not withheld or len(withheld) == len(counts):
        return
    possible = _possible(counts, withheld)
    for position in range(len(withheld)):
        assert len({combo[position] for combo in possible}) > 1, (counts, withheld)


def test_two_small_counts_summing_to_two_are_not_given_away(app: Flask) -> None:
    db = _db(app)
    _joins_by_age(db, {JANUARY: {"16 to 17": 1, "18 to 24": 1, "25 to 34": 10}})
    assert _published_by_age(db, "2027-01", "2027-01") == {
        "16 to 17": None,
        "18 to 24": None,
        "25 to 34": None,
    }


def test_each_view_of_a_special_category_report_is_audited(app: Flask) -> None:
    db = _db(app)
    with db.transaction() as session:
        panel = factories.panel(session)
        for _ in range(6):
            factories.member(session, panel, special={"ethnicity": "White"})
    month = utcnow().astimezone(LONDON).strftime("%Y-%m")
    query = f"report=panel_joins&dimension=ethnicity&start={month}&end={month}"
    dpo = staff_client(app, "dpo")
    assert "White" in dpo.get(f"/admin/reports.csv?{query}").get_data(as_text=True)
    assert "White" in text(dpo.get(f"/admin/reports?{query}"))
    dpo.get(f"/admin/reports?report=panel_joins&dimension=age_band&start={month}&end={month}")
    with db.reader() as session:
        seen = session.execute(
            select(AuditEvent.detail).where(AuditEvent.action == "report.special_category_viewed")
        ).scalars()
        views = [json.loads(detail) for detail in seen]
    assert [(v["dimension"], v["shown_as"]) for v in views] == [
        ("ethnicity", "csv"),
        ("ethnicity", "page"),
    ]


def test_correcting_a_closed_rights_request_keeps_when_it_was_closed(
    app: Flask, world: dict[str, str]
) -> None:
    db = _db(app)
    dpo = staff_client(app, "dpo")
    path = f"/admin/rights/{world['request_id']}"
    _post(dpo, path, path, {"status": "completed", "outcome": "Sent their export"})
    closed = datetime(2026, 1, 5, 12, tzinfo=UTC)
    with db.transaction() as session:
        session.get(RightsRequest, int(world["request_id"])).closed_at = closed
    _post(dpo, path, path, {"status": "completed", "outcome": "Sent their export by post"})
    with db.reader() as session:
        request = session.get(RightsRequest, int(world["request_id"]))
        assert (request.closed_at, request.outcome) == (closed, "Sent their export by post")
    assert "5 January 2026" in text(dpo.get(path))
    _post(dpo, path, path, {"status": "open", "outcome": ""})
    _post(dpo, path, path, {"status": "refused", "outcome": "Manifestly unfounded"})
    with db.reader() as session:
        assert session.get(RightsRequest, int(world["request_id"])).closed_at > closed


def test_a_request_closed_after_its_person_was_erased_keeps_no_outcome_text(
    app: Flask, world: dict[str, str]
) -> None:
    """The DPO logs the request, erases the person, then closes it: an outcome naming them,
    written after the erasure blanked the rest, would keep them for ever."""
    db = _db(app)
    dpo = staff_client(app, "dpo")
    with db.transaction() as session:
        people.erase(
            session,
            people.find_by_email(session, "someone@example.com"),
            channel="admin",
            actor="admin:1",
            note="Erasure request by post",
        )
    path = f"/admin/rights/{world['request_id']}"
    page = text(dpo.get(path))
    assert "This person's details have been deleted" in page and 'name="outcome"' not in page
    outcome = "Erased everything about Ophelia Marchbanks (someone@example.com)"
    _post(dpo, path, path, {"status": "completed", "outcome": outcome})
    with db.reader() as session:
        request = session.get(RightsRequest, int(world["request_id"]))
        assert (request.status, request.outcome) == ("completed", rights.ERASED_OUTCOME)
        assert request.closed_at is not None
    assert find_anywhere(db.engine, ["Marchbanks", "someone@example.com"]) == []


def test_why_a_request_was_given_more_time_is_in_the_export_and_goes_with_the_person(
    app: Flask, world: dict[str, str]
) -> None:
    """The reason may name the person: their export shows it, and erasing them blanks it,
    as it does the outcome."""
    db = _db(app)
    dpo = staff_client(app, "dpo")
    path = f"/admin/rights/{world['request_id']}"
    reason = "Ophelia Marchbanks asked for files from three offices"
    assert _post(dpo, path, f"{path}/extend", {"reason": reason}).status_code == 302
    with db.reader() as session:
        person = people.find_by_email(session, "someone@example.com")
        [exported] = rights.export_person(session, person)["rights_requests"]
    assert exported["extension_reason"] == reason and exported["extended_at"]
    with db.transaction() as session:
        people.erase(
            session,
            people.find_by_email(session, "someone@example.com"),
            channel="admin",
            actor="admin:1",
            note="Erasure request by post",
        )
    assert find_anywhere(db.engine, ["Marchbanks", "someone@example.com"]) == []


def _joins_by_age(db: Database, months: dict[datetime, dict[str, int]]) -> None:
    """Panel joins per age group in each month, with the overall count beside them."""
    with db.transaction() as session:
        for at, bands in months.items():
            for band, number in bands.items():
                for dimension, value in (("age_band", band), ("all", "all")):
                    reports.count(
                        session,
                        "panel.joined",
                        scope="panel:1",
                        dimension=dimension,
                        value=value,
                        at=at,
                        by=number,
                    )


def _published_by_age(db: Database, start: str, end: str) -> dict[str, int | None]:
    with db.reader() as session:
        cells = reports.table(session, "panel_joins", start=start, end=end, dimension="age_band")
    return {cell.value: cell.published for cell in cells}


JANUARY, FEBRUARY = datetime(2027, 1, 15, tzinfo=UTC), datetime(2027, 2, 15, tzinfo=UTC)


def test_a_small_month_cannot_be_worked_out_from_overlapping_periods(app: Flask) -> None:
    """January's two under-18s must not be found as (January and February) less February."""
    db = _db(app)
    _joins_by_age(
        db,
        {
            JANUARY: {"Under 18": 2, "25 to 34": 9},
            FEBRUARY: {"Under 18": 6, "25 to 34": 8},
        },
    )
    both = _published_by_age(db, "2027-01", "2027-02")
    feb = _published_by_age(db, "2027-02", "2027-02")
    assert feb == {"Under 18": 6, "25 to 34": 8}
    assert both == {"Under 18": None, "25 to 34": None}
    assert _published_by_age(db, "2027-01", "2027-01") == {"Under 18": None, "25 to 34": None}


def test_a_small_month_cannot_be_worked_out_from_the_count_withheld_beside_it(
    app: Flask,
) -> None:
    """January 2, 6 and 50; February 10, 100 and 5. January withholds its 6 beside the 2;
    the two months together must not publish 106 against February's 100, which with
    January's 50 and its total of 58 would give the 2 away."""
    db = _db(app)
    _joins_by_age(
        db,
        {
            JANUARY: {"Under 18": 2, "18 to 24": 6, "25 to 34": 50},
            FEBRUARY: {"Under 18": 10, "18 to 24": 100, "25 to 34": 5},
        },
    )
    january = _published_by_age(db, "2027-01", "2027-01")
    assert january == {"Under 18": None, "18 to 24": None, "25 to 34": 50}
    both = _published_by_age(db, "2027-01", "2027-02")
    february = _published_by_age(db, "2027-02", "2027-02")
    assert february == {"Under 18": 10, "18 to 24": 100, "25 to 34": 5}
    assert both["18 to 24"] is None and both["Under 18"] is None


def test_report_csvs_never_carry_a_formula(app: Flask) -> None:
    """Panel names are typed by staff; a spreadsheet must not run one as a formula."""
    with _db(app).transaction() as session:
        panel = factories.panel(session, name="=HYPERLINK(1)")
        for _ in range(6):
            factories.member(session, panel)
    month = utcnow().astimezone(LONDON).strftime("%Y-%m")
    client = staff_client(app, "coordinator")
    body = client.get(f"/admin/reports.csv?report=panel_joins&start={month}&end={month}")
    rows = list(csv.reader(io.StringIO(body.get_data(as_text=True))))
    assert ["'=HYPERLINK(1)", "panel.joined", "all", "all", "6"] in rows


def test_special_category_breakdowns_are_for_the_dpo_and_small_groups_stay_hidden(
    app: Flask,
) -> None:
    db = _db(app)
    with db.transaction() as session:
        panel = factories.panel(session)
        for _ in range(6):
            factories.member(session, panel, special={"ethnicity": "White"})
        for _ in range(7):
            factories.member(session, panel, special={"ethnicity": "Asian or Asian British"})
        factories.member(
            session, panel, special={"ethnicity": "Black, Black British, Caribbean or African"}
        )
        panel_id = panel.id
    month = utcnow().astimezone(LONDON).strftime("%Y-%m")
    query = f"report=panel_joins&dimension=ethnicity&start={month}&end={month}"
    coordinator = staff_client(app, "coordinator")
    refused = coordinator.get(f"/admin/reports?{query}")
    assert refused.status_code == 400 and "Only the data protection officer" in text(refused)
    assert coordinator.get(f"/admin/reports.csv?{query}").status_code == 400
    assert "ethnicity" not in text(coordinator.get("/admin/reports?report=panel_joins"))
    dpo = staff_client(app, "dpo")
    body = dpo.get(f"/admin/reports.csv?{query}").get_data(as_text=True)
    assert "Asian or Asian British,7" in body and "White,withheld" in body
    assert "fewer than 5" in body
    page = f"/admin/panels/{panel_id}"
    summary = text(_post(dpo, page, f"{page}/diversity"))
    assert ">7<" in summary and "withheld" in summary and ">6<" not in summary
    assert "Asian or Asian British" in summary
    limited = text(_post(coordinator, page, f"{page}/diversity"))
    assert "Age group" in limited and "shown only to the data protection officer" in limited
    assert "Asian" not in limited and ">7<" not in limited
    with db.reader() as session:
        viewed = session.execute(
            select(AuditEvent.object_id).where(AuditEvent.action == "panel.diversity_viewed")
        ).scalars()
        assert list(viewed) == [str(panel_id)] * 2, "each view of the summary is audited"


def test_the_audit_log_records_admin_actions_and_verifies(
    app: Flask, world: dict[str, str]
) -> None:
    dpo = staff_client(app, "dpo")
    page = f"/admin/people/{world['public_id']}"
    _post(dpo, page, page + "/link")
    log = text(dpo.get("/admin/audit?action=person"))
    assert "person.link_sent" in log
    checked = text(_post(dpo, "/admin/audit", "/admin/audit/verify"))
    assert "The audit log is intact" in checked
    tamper(_db(app).engine, "UPDATE audit_event SET actor = 'someone else' WHERE seq = 1")
    assert "has been altered" in text(_post(dpo, "/admin/audit", "/admin/audit/verify"))


def test_filtering_the_audit_log_by_who_finds_every_action_of_one_account(app: Flask) -> None:
    db = _db(app)
    email, secret = make_staff(db, "admin", "boss@example.gov.uk")
    boss = app.test_client()
    page = text(boss.get("/admin/sign-in"))
    boss.post(
        "/admin/sign-in", data={"csrf_token": csrf(page), "email": email, "password": "wrong"}
    )
    sign_in(boss, email, secret)
    _post(
        boss,
        "/admin/users/new",
        "/admin/users/new",
        {"email": "new@example.gov.uk", "name": "New", "role": "coordinator"},
    )
    boss_id, other = _user_id(app, email), _user_id(app, "new@example.gov.uk")
    for action in ("deactivate", "activate", "reset-code"):
        _post(boss, "/admin/users", f"/admin/users/{other}/{action}")
    done = {
        "admin.sign_in_failed",
        "admin.totp_enrolled",
        "admin.signed_in",
        "admin_user.created",
        "admin_user.deactivated",
        "admin_user.activated",
        "admin_user.totp_reset",
    }
    with db.transaction() as session:
        by_boss = session.execute(
            select(AuditEvent.action, AuditEvent.actor).where(AuditEvent.actor_id == boss_id)
        ).all()
        assert {action for action, _ in by_boss} == done
        assert {actor for _, actor in by_boss} == {f"admin:{boss_id}"}
        audit.record(session, "admin.before_labels", actor=email, actor_id=boss_id)
    log = text(staff_client(app, "dpo").get(f"/admin/audit?actor=admin:{boss_id}"))
    shown = set(re.findall(r'<td class="govuk-table__cell">([a-z_]+\.[a-z_]+)', log))
    assert shown == done | {"admin.before_labels"}


def test_the_retention_page_lists_memberships_ending_by_their_day(app: Flask) -> None:
    start = utcnow()
    ends = start + timedelta(days=20)
    with (
        time_machine.travel(ends - timedelta(days=730), tick=False),
        _db(app).transaction() as session,
    ):
        factories.member(session, factories.panel(session))
    page = text(staff_client(app, "dpo").get("/admin/retention"))
    cells = re.findall(r'<td class="govuk-table__cell[^"]*">([^<]*)</td>', page)
    assert cells[:2] == [london_date(ends), "1"]


def test_dry_run_from_the_retention_page_changes_nothing(app: Flask) -> None:
    start = utcnow()
    with (
        time_machine.travel(start - timedelta(days=731), tick=False),
        _db(app).transaction() as session,
    ):
        factories.member(session, factories.panel(session))
    dpo = staff_client(app, "dpo")
    page = text(_post(dpo, "/admin/retention", "/admin/retention"))
    assert "would expire" in page
    with _db(app).reader() as session:
        [logged] = session.execute(
            select(AuditEvent).where(AuditEvent.action == "retention.dry_run")
        ).scalars()
        assert json.loads(logged.detail)["would_remove"]["consents_expired.panel_contact"] == 1
    with _db(app).reader() as session:
        assert (
            session.execute(
                select(func.count())
                .select_from(PanelMembership)
                .where(PanelMembership.left_at.is_(None))
            ).scalar()
            == 1
        )


def test_lists_download_as_csv_and_are_audited(app: Flask, world: dict[str, str]) -> None:
    with _db(app).transaction() as session:
        person = factories.person(session, "formula@example.com", name="=HYPERLINK(1)")
        ledger.give(session, person, "newsletter", channel="web_form", actor="self")
    client = staff_client(app, "coordinator")
    body = client.get("/admin/exports/purpose/newsletter.csv").get_data(as_text=True)
    assert body.splitlines()[0] == "email,name,agreed,how"
    assert "someone@example.com" in body and "'=HYPERLINK(1)" in body
    members = client.get(f"/admin/exports/panel/{world['panel_id']}.csv").get_data(as_text=True)
    assert "someone@example.com" in members and "Mixed" not in members
    assert client.get("/admin/exports/panel/999.csv").status_code == 404
    assert client.get("/admin/exports/person/1.csv").status_code == 404
    with _db(app).reader() as session:
        assert (
            session.execute(
                select(func.count()).where(AuditEvent.action == "list.exported")
            ).scalar()
            == 2
        )


def test_a_workshop_list_downloads_without_cancelled_bookings(app: Flask) -> None:
    with _db(app).transaction() as session:
        workshop = factories.workshop(session, title="Baby sleep")
        factories.booking(session, workshop, "ann@example.com", "=cmd|' /C calc'!A0")
        gone = factories.booking(session, workshop, "ben@example.com", "Ben")
        assert gone.person_id is not None
        ben = session.get(Person, gone.person_id)
        preferences.cancel_booking(session, ben, gone.id)
        workshop_id = workshop.id
    client = staff_client(app, "coordinator")
    response = client.get(f"/admin/exports/workshop/{workshop_id}.csv")
    assert response.status_code == 200 and response.mimetype == "text/csv"
    assert response.headers["Cache-Control"] == "no-store"
    rows = list(csv.reader(io.StringIO(text(response))))
    assert rows == [
        ["name", "email", "setting", "district", "role", "attended"],
        ["'=cmd|' /C calc'!A0", "ann@example.com", "Little Acorns", "Riverside", "Volunteer", ""],
    ]
    assert client.get("/admin/exports/workshop/999.csv").status_code == 404
    with _db(app).reader() as session:
        event = session.execute(
            select(AuditEvent).where(AuditEvent.action == "list.exported")
        ).scalar_one()
        assert (event.object_type, event.object_id) == ("workshop", str(workshop_id))


def test_downloaded_lists_leave_out_panel_agreements_past_their_two_years(app: Flask) -> None:
    """A list leaves the system; in the hour before the sweep records that someone's two
    years ran out, it must not carry them as a member who agreed to be contacted."""
    db = _db(app)
    now = utcnow()
    with time_machine.travel(now - timedelta(days=730, hours=1), tick=False), db.transaction() as s:
        panel_id = factories.panel(s).id
        factories.member(s, s.get(Panel, panel_id), factories.person(s, "lapsed@example.com"))
    with db.transaction() as s:
        factories.member(s, s.get(Panel, panel_id), factories.person(s, "current@example.com"))
    client = staff_client(app, "coordinator")
    for path in (
        f"/admin/exports/panel/{panel_id}.csv",
        "/admin/exports/purpose/panel_contact.csv",
    ):
        body = client.get(path).get_data(as_text=True)
        assert "current@example.com" in body, path
        assert "lapsed@example.com" not in body, path
