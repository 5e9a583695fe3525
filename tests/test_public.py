"""Parents' pages through the real app: sign up, confirm, manage, unsubscribe, delete."""

from __future__ import annotations

import json
import logging
import re
from dataclasses import replace
from datetime import timedelta

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import func
from sqlmodel import Session, select
from werkzeug.test import TestResponse

from consent import create_app, links
from consent.config import Settings
from consent.db import Database
from consent.errors import Conflict
from consent.models import (
    Booking,
    ConsentEvent,
    LinkRequest,
    MailchimpChange,
    Notice,
    Outbox,
    Panel,
    PanelMembership,
    PanelProfile,
    PendingSignup,
    Person,
    PersonChange,
    Purpose,
)
from consent.services import (
    admin_users,
    audit,
    ledger,
    notices,
    outbox,
    panels,
    people,
    preferences,
    reminders,
    retention,
    rights,
    signups,
    workshops,
)
from consent.timeutil import london_date, utcnow
from mailers.outbox import OutboxWorker
from tests import factories
from tests.helpers import crossing_writers_only, find_anywhere, meanwhile, meanwhile_erased
from tests.web import buttons, csrf, hidden_fields, link_in, mails, one_click, submit, text


def _db(app: Flask) -> Database:
    return app.extensions["consent.db"]


def _person(db: Database, email: str) -> Person | None:
    with db.reader() as session:
        return people.find_by_email(session, email)


def _state(db: Database, email: str, key: str) -> str | None:
    with db.reader() as session:
        person = people.find_by_email(session, email)
        state = ledger.states_for(session, person).get(key) if person else None
        return state.status if state else None


def _manage_path(db: Database, email: str) -> str:
    with db.reader() as session:
        person = people.find_by_email(session, email)
        return "/manage/" + links.make_token(db.settings, person, "manage")


# ---- newsletter and double opt-in ---------------------------------------------------------


def test_newsletter_boxes_are_unticked_and_show_the_current_wording(client: FlaskClient) -> None:
    page = text(client.get("/newsletter"))
    assert 'name="newsletter"' in page and 'name="family_hub_events"' in page
    assert "checked" not in page
    assert "Yes, email me the Family Hubs newsletter." in page
    assert "Lawful basis:" in page and "Version 1" in page


def test_newsletter_sign_up_needs_confirmation_by_a_post(app: Flask, client: FlaskClient) -> None:
    db = _db(app)
    response = submit(
        client, "/newsletter", {"email": " Parent@Example.com ", "name": "Pat", "newsletter": "y"}
    )
    assert response.status_code == 302 and response.location.endswith("/check-your-email")
    assert _state(db, "parent@example.com", "newsletter") is None
    [mail] = mails(db, "parent@example.com")
    assert mail.template == "confirm_newsletter"
    confirm = link_in(mail, "confirm")

    page = client.get(confirm)
    assert page.status_code == 200 and "Yes, email me the Family Hubs newsletter." in text(page)
    assert page.headers["Referrer-Policy"] == "no-referrer"
    assert page.headers["Cache-Control"] == "no-store"
    client.get(confirm)
    assert _state(db, "parent@example.com", "newsletter") is None

    done = client.post(confirm, data={"csrf_token": csrf(text(page))})
    assert done.status_code == 200 and "You are signed up" in text(done)
    assert _state(db, "parent@example.com", "newsletter") == "given"
    assert _state(db, "parent@example.com", "family_hub_events") is None
    with db.reader() as session:
        event = session.exec(select(ConsentEvent)).one()
        assert (event.channel, event.actor) == ("web_form", "self")
    assert [m.template for m in mails(db, "parent@example.com")] == [
        "confirm_newsletter",
        "welcome",
    ]

    again = client.post(confirm, data={"csrf_token": csrf(text(page))})
    assert "already confirmed" in text(again)
    with db.reader() as session:
        assert session.exec(select(func.count()).select_from(ConsentEvent)).one() == 1


def test_the_confirmation_names_what_was_asked_for(app: Flask, client: FlaskClient) -> None:
    """Ticking only Family Hub events must not be confirmed as 'the newsletter'."""
    db = _db(app)
    submit(client, "/newsletter", {"email": "events@example.com", "family_hub_events": "y"})
    [mail] = mails(db, "events@example.com")
    assert mail.template == "confirm_subscription"
    with db.reader() as session:
        title = notices.get_purpose(session, "family_hub_events").title
    for body in (mail.body_text or "", mail.body_html or ""):
        assert title in body and "newsletter" not in body.lower()
    assert "newsletter" not in mail.subject.lower()
    done = client.post(
        link_in(mail, "confirm"),
        data={"csrf_token": csrf(text(client.get(link_in(mail, "confirm"))))},
    )
    assert "You are signed up" in text(done)
    assert _state(db, "events@example.com", "family_hub_events") == "given"


def test_a_form_cannot_name_someone_else_s_record_until_its_link_is_used(
    app: Flask, client: FlaskClient
) -> None:
    """Our emails greet people by the name on their record; a stranger typing their
    address into a form must not choose it."""
    db = _db(app)
    with db.transaction() as session:
        factories.consenting(session, "workshops", email="quiet@example.com")
    submit(
        client,
        "/newsletter",
        {"email": "quiet@example.com", "name": "Someone Else", "newsletter": "y"},
    )
    with db.reader() as session:
        person = people.find_by_email(session, "quiet@example.com")
        assert person.name is None
        assert session.exec(select(PersonChange)).all() == []
    [mail] = mails(db, "quiet@example.com", template="confirm_newsletter")
    assert "Someone Else" not in (mail.body_text or "")
    confirm = link_in(mail, "confirm")
    submit(client, confirm, {})
    with db.reader() as session:
        assert people.find_by_email(session, "quiet@example.com").name == "Someone Else"
        [change] = session.exec(select(PersonChange)).all()
        assert change.fields == "name"


def test_a_stranger_s_name_is_not_kept_on_a_new_address_its_owner_then_confirms(
    app: Flask, client: FlaskClient
) -> None:
    """The first form for an address creates its record; the name typed in it is as
    unproved as any other until its link is used."""
    db = _db(app)
    submit(
        client,
        "/newsletter",
        {"email": "new@example.com", "name": "Stranger Name", "newsletter": "y"},
    )
    with db.reader() as session:
        assert people.find_by_email(session, "new@example.com").name is None
    [stranger] = mails(db, "new@example.com", template="confirm_newsletter")
    assert "Stranger Name" not in (stranger.body_text or "")
    submit(
        client, "/newsletter", {"email": "new@example.com", "name": "Real Owner", "newsletter": "y"}
    )
    owner = link_in(mails(db, "new@example.com", template="confirm_newsletter")[1], "confirm")
    submit(client, owner, {})
    with db.reader() as session:
        assert people.find_by_email(session, "new@example.com").name == "Real Owner"
    [welcome] = mails(db, "new@example.com", template="welcome")
    assert "Real Owner" in (welcome.body_text or "")


def test_the_unsubscribe_link_in_a_confirmation_stops_only_what_it_was_about(
    app: Flask, client: FlaskClient, member: str
) -> None:
    """Anyone can make us send a confirmation to any address; its link must not stop the
    subscriber's other emails."""
    db = _db(app)
    submit(client, "/newsletter", {"email": member, "family_hub_events": "y"})
    [mail] = mails(db, member, template="confirm_subscription")
    one_click(client, link_in(mail, "unsubscribe"))
    assert _state(db, member, "newsletter") == "given"
    assert _state(db, member, "workshops") == "given"


def test_the_version_shown_is_the_version_recorded(app: Flask, client: FlaskClient) -> None:
    db = _db(app)
    page = text(client.get("/newsletter"))
    with db.transaction() as session:
        notices.publish(session, "newsletter", "Yes, send me the new newsletter.", "New words.")
    client.post(
        "/newsletter",
        data={
            "csrf_token": csrf(page),
            "email": "v1@example.com",
            "newsletter": "y",
            "newsletter_notice": _hidden(page, "newsletter_notice"),
            "family_hub_events_notice": _hidden(page, "family_hub_events_notice"),
        },
    )
    confirm = link_in(mails(db, "v1@example.com")[0], "confirm")
    submit(client, confirm, {})
    with db.reader() as session:
        event = session.exec(select(ConsentEvent)).one()
        assert session.get(Notice, event.notice_id).version == 1
        assert event.wording == "Yes, email me the Family Hubs newsletter."


def test_confirming_an_older_sign_up_after_a_newer_one_keeps_the_newer_wording(
    app: Flask, client: FlaskClient
) -> None:
    db = _db(app)
    submit(client, "/newsletter", {"email": "twice@example.com", "newsletter": "y"})
    with db.transaction() as session:
        notices.publish(session, "newsletter", "Yes, send me the new newsletter.", "New words.")
    submit(client, "/newsletter", {"email": "twice@example.com", "newsletter": "y"})
    older, newer = (link_in(m, "confirm") for m in mails(db, "twice@example.com"))
    for confirm in (newer, older):
        submit(client, confirm, {})
    with db.reader() as session:
        [event] = session.exec(select(ConsentEvent)).all()
        assert session.get(Notice, event.notice_id).version == 2
        person = people.find_by_email(session, "twice@example.com")
        assert ledger.states_for(session, person)["newsletter"].notice_id == event.notice_id
    assert len(mails(db, "twice@example.com", template="welcome")) == 1


@pytest.mark.parametrize(
    ("path", "notice"),
    [
        ("/newsletter", "newsletter_notice"),
        ("/newsletter", "family_hub_events_notice"),
        ("/manage", "notice"),
    ],
)
def test_a_form_that_does_not_say_which_wording_it_showed_records_nothing(
    app: Flask, client: FlaskClient, path: str, notice: str
) -> None:
    """Every consent must point at the notice version shown; a form that lost that, or names
    another purpose's notice, is refused with a message rather than recorded on a guess."""
    db = _db(app)
    with db.transaction() as session:
        factories.person(session, email="pat@example.com")
        other = notices.current_notice(session, notices.get_purpose(session, "workshops")).id
    if path == "/manage":
        page_path = _manage_path(db, "pat@example.com")
        target, data = page_path + "/consent", {"purpose": "newsletter", "agree": "yes"}
    else:
        page_path = target = path
        data = {"email": "pat@example.com", "newsletter": "y", "family_hub_events": "y"}
    for wrong in ("", "x", str(other), "99999"):
        response = submit(client, target, {**data, notice: wrong}, form_page=page_path)
        if path == "/manage":
            response = client.get(response.location)
        assert "We could not tell which wording you were shown" in text(response), wrong
        with db.reader() as session:
            assert session.exec(select(func.count()).select_from(ConsentEvent)).one() == 0
            assert session.exec(select(func.count()).select_from(PendingSignup)).one() == 0
        assert mails(db, "pat@example.com") == []


def _hidden(html: str, name: str) -> str:
    from tests.web import hidden_fields

    return hidden_fields(html)[name]


@pytest.mark.parametrize(
    ("data", "field", "message"),
    [
        ({"email": "parent@example.com"}, "newsletter", "Select at least one thing"),
        ({"email": "not-an-email", "newsletter": "y"}, "email", "correct format"),
        ({"email": "", "newsletter": "y"}, "email", "Enter your email address"),
        (
            {"email": "a@example.com", "name": "x" * 201, "newsletter": "y"},
            "name",
            "200 characters",
        ),
        (
            {"email": "a@example.com", "name": "Pat\u200b", "newsletter": "y"},
            "name",
            "hidden characters",
        ),
    ],
)
def test_bad_sign_ups_show_gov_uk_errors_and_write_nothing(
    app: Flask, client: FlaskClient, data: dict, field: str, message: str
) -> None:
    response = submit(client, "/newsletter", data)
    page = text(response)
    assert response.status_code == 400
    assert "There is a problem" in page and message in page
    assert f'href="#{field}"' in page
    if data.get("email"):
        assert f'value="{data["email"]}"' in page
    with _db(app).reader() as session:
        assert session.exec(select(func.count()).select_from(Person)).one() == 0
        assert session.exec(select(func.count()).select_from(PendingSignup)).one() == 0


def test_html_in_any_field_is_shown_as_text(app: Flask, client: FlaskClient) -> None:
    name = '<script>alert("x")</script><b>bold</b>'
    submit(client, "/newsletter", {"email": "x@example.com", "name": name, "newsletter": "y"})
    db = _db(app)
    confirm = link_in(mails(db, "x@example.com")[0], "confirm")
    submit(client, confirm, {})
    page = text(client.get(_manage_path(db, "x@example.com")))
    assert "<script>alert" not in page and "&lt;script&gt;" in page
    bad = submit(client, "/newsletter", {"email": "<script>@example.com", "newsletter": "y"})
    assert "<script>@" not in text(bad)


# ---- workshops ----------------------------------------------------------------------------


def _workshop(db: Database, capacity: int = 10, days: int = 7) -> int:
    with db.transaction() as session:
        return factories.workshop(session, days=days, capacity=capacity).id


BOOKING = {
    "name": "Sam Carer",
    "email": "sam@example.com",
    "district": "Riverside",
    "job_role": "Parent or carer",
}


def test_booking_a_workshop(app: Flask, client: FlaskClient) -> None:
    db = _db(app)
    workshop_id = _workshop(db, capacity=2)
    listing = text(client.get("/workshops"))
    assert "Helping your baby sleep" in listing and "Places left" in listing
    response = submit(client, f"/workshops/{workshop_id}", BOOKING)
    assert response.status_code == 302
    assert "Your place is booked" in text(client.get(response.location))
    again = submit(client, f"/workshops/{workshop_id}", {**BOOKING, "email": "SAM@example.com"})
    assert again.status_code == 302
    with db.reader() as session:
        assert session.exec(select(func.count()).select_from(Booking)).one() == 1
    assert [m.template for m in mails(db, "sam@example.com")] == ["workshop_booked"] * 2
    assert _state(db, "sam@example.com", "newsletter") is None

    submit(
        client,
        f"/workshops/{workshop_id}",
        {**BOOKING, "email": "two@example.com", "newsletter": "y"},
    )
    assert [m.template for m in mails(db, "two@example.com")] == [
        "workshop_booked",
        "confirm_newsletter",
    ]
    full = text(client.get(f"/workshops/{workshop_id}"))
    assert "This workshop is full" in full and 'name="email"' not in full
    refused = submit(
        client,
        f"/workshops/{workshop_id}",
        {**BOOKING, "email": "three@example.com"},
        form_page="/newsletter",
    )
    assert "This workshop is full" in text(refused)
    with db.reader() as session:
        assert session.exec(select(func.count()).select_from(Booking)).one() == 2


@pytest.mark.parametrize(("hours", "reminded"), [(13, True), (11, False)])
def test_only_a_booker_who_will_be_reminded_is_promised_a_reminder(
    app: Flask, client: FlaskClient, hours: int, reminded: bool
) -> None:
    """Booked in the last 12 hours before the start, the booking email is the reminder:
    neither the page nor the email may promise another."""
    db = _db(app)
    with db.transaction() as session:
        workshop = factories.workshop(session, starts_at=utcnow() + timedelta(hours=hours))
        workshop_id = workshop.id
    response = submit(client, f"/workshops/{workshop_id}", BOOKING)
    page = text(client.get(response.location))
    assert "Your place is booked" in page
    assert ("reminder the day before" in page) is reminded
    [booked] = mails(db, "sam@example.com")
    assert ("with a reminder" in (booked.body_text or "")) is reminded
    assert ("with a reminder" in (booked.body_html or "")) is reminded
    with db.transaction() as session:
        later = utcnow() + timedelta(hours=hours - 1)
        assert reminders.workshop_reminders(session, now=later) == int(reminded)


def test_a_booking_email_never_carries_words_typed_into_the_form(
    app: Flask, client: FlaskClient, member: str
) -> None:
    """Anyone can book with anyone's address, so the name typed is not put in our email
    to it: that would let a stranger send their words in the council's name. Someone whose
    name we hold from a confirmed link is greeted by it."""
    db = _db(app)
    with db.transaction() as session:
        named = people.find_by_email(session, member)
        assert named is not None
        named.name = "Pat Parent"
    workshop_id = _workshop(db, capacity=5)
    lure = "your refund is ready at https://evil.example/refund"
    for address in ("victim@example.com", member):
        submit(client, f"/workshops/{workshop_id}", {**BOOKING, "email": address, "name": lure})
    [stranger] = mails(db, "victim@example.com", template="workshop_booked")
    [known] = mails(db, member, template="workshop_booked")
    assert "evil.example" not in (stranger.body_text or "") + (stranger.body_html or "")
    assert "\nHello,\n" in (stranger.body_text or "")
    assert "\nHello Pat Parent,\n" in (known.body_text or "")


def test_a_past_workshop_says_so(app: Flask, client: FlaskClient) -> None:
    workshop_id = _workshop(_db(app), days=1)
    with time_machine.travel(utcnow() + timedelta(days=2)):
        page = text(client.get(f"/workshops/{workshop_id}"))
    assert "already taken place" in page


def test_a_feedback_link_says_feedback_has_closed_before_asking_for_it(
    app: Flask, client: FlaskClient
) -> None:
    """A booker opening the request late must not fill in the form only to be told that."""
    db = _db(app)
    with time_machine.travel(utcnow() - timedelta(days=3), tick=False), db.transaction() as s:
        workshop = factories.workshop(s, days=1)
        booking = factories.booking(s, workshop, "late@example.com")
        workshop_id, booking_id = workshop.id, booking.id
    with db.transaction() as session:
        assert reminders.evaluation_requests(session) == 1
        person = people.find_by_email(session, "late@example.com")
        token = links.make_token(db.settings, person, "feedback", ref=booking_id)
    assert "How useful was the workshop?" in text(client.get(f"/feedback/{token}"))
    with db.transaction() as session:
        workshops.close_evaluation(session, workshops.get_workshop(session, workshop_id))
    closed = client.get(f"/feedback/{token}")
    assert closed.status_code == 409
    assert "Feedback for this workshop has closed" in text(closed)
    assert "How useful was the workshop?" not in text(closed)


def test_booking_needs_a_district_and_a_role(app: Flask, client: FlaskClient) -> None:
    workshop_id = _workshop(_db(app))
    response = submit(
        client,
        f"/workshops/{workshop_id}",
        {"name": "Sam", "email": "s@example.com", "district": "Atlantis"},
    )
    page = text(response)
    assert response.status_code == 400
    assert ("Select your role" in page and "Not a valid choice" not in page) or "district" in page


def test_unknown_and_absurd_ids_are_404s(client: FlaskClient) -> None:
    for path in (
        "/workshops/999",
        "/workshops/99999999999999999999999",
        "/panels/0/join",
        "/panels/99999999999999999999/join",
        "/workshops/abc",
    ):
        assert client.get(path).status_code == 404, path


# ---- panels -------------------------------------------------------------------------------


def _panel(db: Database) -> int:
    with db.transaction() as session:
        return factories.panel(session).id


def _invite(session: Session, panel_id: int, email: str) -> None:
    panels.invite(session, panels.get_panel(session, panel_id), email=email, name=None)


JOIN = {
    "name": "Morgan Parent",
    "email": "morgan@example.com",
    "phone": "07700 900123",
    "postcode": "ne1 4st",
    "age_band": "25 to 34",
    "children_count": "2",
    "children_ages": "3, 7",
    "services_used": ["Stay and play sessions", "Youth activities"],
    "ethnicity": "Prefer not to say",
    "needs": "Needs a hearing loop",
    "panel_contact": "y",
}


def test_joining_a_panel_with_double_opt_in(app: Flask, client: FlaskClient) -> None:
    db = _db(app)
    panel_id = _panel(db)
    page = text(client.get(f"/panels/{panel_id}/join"))
    assert "Prefer not to say" in page and "two years" in page and "checked" not in page
    response = submit(client, f"/panels/{panel_id}/join", JOIN)
    assert response.status_code == 302
    assert find_anywhere(db.engine, ["hearing loop"]) == []
    assert _state(db, "morgan@example.com", "panel_contact") is None
    [mail] = mails(db, "morgan@example.com")
    assert mail.template == "confirm_panel" and "hearing loop" not in mail.body_text
    confirm = link_in(mail, "confirm")
    submit(client, confirm, {})
    assert _state(db, "morgan@example.com", "panel_contact") == "given"
    assert _state(db, "morgan@example.com", "panel_recordings") is None
    with db.reader() as session:
        profile = session.exec(select(PanelProfile)).one()
        assert profile.postcode == "NE1 4ST" and profile.children_ages == "3, 7"
        person = people.find_by_email(session, "morgan@example.com")
        assert person.phone == "+447700900123"
        pending = session.exec(select(PendingSignup)).one()
        assert pending.confirmed_at is not None and pending.payload is None
    assert find_anywhere(db.engine, ["hearing loop"]) == []


@pytest.mark.parametrize(
    ("change", "message"),
    [
        ({"panel_contact": ""}, "Select the box to agree to join"),
        ({"children_count": "lots"}, "as a number"),
        ({"children_count": "99"}, "between 0 and 20"),
        ({"children_ages": "3, seven"}, "numbers separated by commas"),
        ({"children_count": "²"}, "as a number"),
        ({"children_ages": "3, ²"}, "numbers separated by commas"),
        ({"postcode": "NOT A CODE"}, "real postcode"),
        ({"ethnicity": "Martian"}, "Select an answer from the list"),
        ({"services_used": ["Teleportation"]}, "Select the services you have used"),
        ({"phone": "12"}, "telephone number"),
    ],
)
def test_join_form_errors_keep_what_was_typed(
    app: Flask, client: FlaskClient, change: dict, message: str
) -> None:
    panel_id = _panel(_db(app))
    response = submit(client, f"/panels/{panel_id}/join", {**JOIN, **change})
    page = text(response)
    assert response.status_code == 400, page[:500]
    assert message in page
    assert 'value="Morgan Parent"' in page
    with _db(app).reader() as session:
        assert session.exec(select(func.count()).select_from(PendingSignup)).one() == 0


def _close(db: Database, panel_id: int) -> None:
    with db.transaction() as session:
        panel = panels.get_panel(session, panel_id)
        panels.update_panel(
            session,
            panel,
            name=panel.name,
            family_hub=panel.family_hub,
            description=panel.description,
            status="closed",
        )


def test_a_closed_panel_takes_no_one_even_from_a_form_opened_before(
    app: Flask, client: FlaskClient
) -> None:
    db = _db(app)
    panel_id = _panel(db)
    page = client.get(f"/panels/{panel_id}/join")
    _close(db, panel_id)
    response = client.post(
        f"/panels/{panel_id}/join", data={**JOIN, "csrf_token": csrf(text(page))}
    )
    assert "This panel is not taking new members." in text(response)
    assert 'name="postcode"' not in text(client.get(f"/panels/{panel_id}/join"))
    assert mails(db) == [] and _person(db, "morgan@example.com") is None
    assert find_anywhere(db.engine, ["hearing loop", "NE1 4ST"]) == []


def test_confirming_after_the_panel_closed_says_so_and_records_nothing(
    app: Flask, client: FlaskClient
) -> None:
    db = _db(app)
    panel_id = _panel(db)
    submit(client, f"/panels/{panel_id}/join", JOIN)
    confirm = link_in(mails(db, "morgan@example.com")[0], "confirm")
    page = text(client.get(confirm))
    _close(db, panel_id)
    response = client.post(confirm, data={"csrf_token": csrf(page)})
    assert response.status_code == 409
    assert "This panel is not taking new members." in text(response)
    assert _state(db, "morgan@example.com", "panel_contact") is None
    with db.reader() as session:
        assert session.exec(select(func.count()).select_from(PanelMembership)).one() == 0
        assert session.exec(select(func.count()).select_from(PanelProfile)).one() == 0


def test_an_invitation_to_a_panel_that_has_since_closed_says_so(
    app: Flask, client: FlaskClient
) -> None:
    db = _db(app)
    panel_id = _panel(db)
    with db.transaction() as session:
        panels.invite(
            session, panels.get_panel(session, panel_id), email="ivy@example.com", name="Ivy"
        )
    join = link_in(mails(db, "ivy@example.com")[0], "join")
    page = text(client.get(join))
    _close(db, panel_id)
    response = client.post(join, data={**JOIN, "csrf_token": csrf(page)})
    assert "This panel is not taking new members." in text(response)
    assert _state(db, "ivy@example.com", "panel_contact") is None
    with db.reader() as session:
        assert session.exec(select(func.count()).select_from(PanelMembership)).one() == 0


def test_joining_from_an_invitation_keeps_the_name_typed(app: Flask, client: FlaskClient) -> None:
    db = _db(app)
    panel_id = _panel(db)
    with db.transaction() as session:
        _invite(session, panel_id, "rowan@example.com")
    join = link_in(mails(db, "rowan@example.com")[0], "join")
    assert "You have joined" in text(submit(client, join, {**JOIN, "name": "Rowan Invited"}))
    with db.reader() as session:
        person = people.find_by_email(session, "rowan@example.com")
        assert (person.name, person.phone) == ("Rowan Invited", "+447700900123")


# ---- manage ---------------------------------------------------------------------------------


@pytest.fixture
def member(app: Flask) -> str:
    db = _db(app)
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", "workshops", email="pat@example.com")
        factories.member(session, factories.panel(session), person)
    return "pat@example.com"


def test_each_button_on_the_preferences_page_is_named_by_the_words_it_shows(
    app: Flask, client: FlaskClient, member: str
) -> None:
    """WCAG 2.5.3: someone using voice control says what they see, so a button's accessible
    name must start with its visible words; hidden text may add which item it is for. It
    starts with a space: Chrome puts one before hidden text anyway ("Stop : ...")."""
    db = _db(app)
    with db.transaction() as session:
        factories.booking(
            session, factories.workshop(session, days=7, title="Toddler talk"), member
        )
    page = text(client.get(_manage_path(db, member)))
    found = buttons(page)
    assert {
        ("Stop", "Stop Family Hubs newsletter"),
        ("Cancel this booking", "Cancel this booking for Toddler talk"),
    } <= set(found)
    assert "Agree" in {visible for visible, _ in found}
    for visible, name in found:
        assert visible and (name == visible or name.startswith(visible + " ")), (visible, name)
    assert not re.search(r"<button[^>]*aria-label", page), "the name is the text, not a label"


def test_a_panel_that_closed_is_not_said_to_have_ended_after_two_years(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)
    with db.transaction() as session:
        panel = session.exec(select(Panel)).one()
        panels.conclude(session, panel)
    retention.sweep(db)
    assert _state(db, member, "panel_contact") == "expired"
    page = text(client.get(_manage_path(db, member)))
    assert "Ended when the panel closed" in page and "Ended after two years" not in page


def test_a_member_corrects_their_panel_answers_from_the_preferences_page(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)
    page = client.get(_manage_path(db, member)).get_data(as_text=True)
    form_path = re.search(r'href="(/panels/\d+/join)"', page)
    assert form_path and "fill in the panel form again" in page
    submit(client, form_path.group(1), {**JOIN, "email": member, "postcode": "SW9 8QZ"})
    confirm = link_in(mails(db, member, template="confirm_panel")[-1], "confirm")
    submit(client, confirm, {})
    with db.reader() as session:
        [profile] = session.exec(select(PanelProfile)).all()
        assert profile.postcode == "SW9 8QZ"
        assert session.exec(select(func.count()).select_from(PanelMembership)).one() == 1


def test_manage_shows_every_purpose_and_when_and_how(
    app: Flask, client: FlaskClient, member: str
) -> None:
    path = _manage_path(_db(app), member)
    response = client.get(path)
    page = text(response)
    assert response.headers["Referrer-Policy"] == "no-referrer"
    assert response.headers["Cache-Control"] == "no-store"
    for title in (
        "Family Hubs newsletter",
        "Free online workshops",
        "Parent Carer Panel membership",
        "Recording panel meetings",
        "Family Hub events",
    ):
        assert title in page
    assert "using a form on our website" in page
    assert "The wording you agreed to (version 1)" in page
    assert "Leave the panel" in page


def test_manage_lists_current_panels_and_upcoming_bookings_only(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)
    with time_machine.travel(utcnow() - timedelta(days=30), tick=False), db.transaction() as s:
        factories.booking(s, factories.workshop(s, days=7, title="Weaning, last month"), member)
    with db.transaction() as session:
        pat = people.find_by_email(session, member)
        left = factories.panel(session, "Southfield Parent Carer Panel")
        factories.member(session, left, pat)
        panels.end_memberships_of(session, [pat.id], reason="left", at=utcnow(), panel_id=left.id)
        soon = factories.booking(
            session, factories.workshop(session, days=3, title="Toddler talk"), member
        )
        later = factories.workshop(session, days=9, title="Fussy <eaters>")
        factories.booking(session, later, member)
        membership = session.exec(
            select(PanelMembership).where(
                PanelMembership.person_id == pat.id, PanelMembership.left_at.is_(None)
            )
        ).one()
        joined, expires = membership.joined_at, membership.expires_at
    path = _manage_path(db, member)
    page = text(client.get(path))
    assert (
        f"Northfield Parent Carer Panel, Northfield Family Hub: member since "
        f"{london_date(joined)}, until {london_date(expires)} unless you renew"
    ) in page
    assert "Southfield" not in page and "Weaning, last month" not in page
    assert page.index("Toddler talk") < page.index("Fussy &lt;eaters&gt;")
    assert f'action="{path}/bookings/{soon.id}/cancel"' in page
    cancelled = client.post(f"{path}/bookings/{soon.id}/cancel", data={"csrf_token": csrf(page)})
    assert "Your booking is cancelled" in text(client.get(cancelled.location))
    assert "Toddler talk" not in text(client.get(path))


def test_a_booking_that_is_not_yours_or_has_started_cannot_be_cancelled(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)
    with db.transaction() as session:
        other = factories.booking(session, factories.workshop(session, title="Not mine"))
        started = factories.booking(session, factories.workshop(session, days=1), member)
        other_id, started_id = other.id, started.id
    path = _manage_path(db, member)
    refused = _post_manage(client, path, f"bookings/{other_id}/cancel", {})
    assert "We could not find that booking." in text(client.get(refused.location))
    with time_machine.travel(utcnow() + timedelta(days=1, minutes=5)):
        refused = _post_manage(client, path, f"bookings/{started_id}/cancel", {})
        assert "already started, so the booking cannot be cancelled" in text(
            client.get(refused.location)
        )
    with db.reader() as session:
        cancelled = session.exec(select(Booking).where(Booking.cancelled_at.is_not(None))).all()
        assert cancelled == []


def test_the_overview_sees_changes_not_yet_flushed(app: Flask, member: str) -> None:
    with _db(app).transaction() as session:
        pat = people.find_by_email(session, member)
        membership = session.exec(
            select(PanelMembership).where(PanelMembership.person_id == pat.id)
        ).one()
        assert len(preferences.overview(session, pat).memberships) == 1
        membership.left_at = utcnow()
        assert preferences.overview(session, pat).memberships == []


def test_a_page_query_that_does_not_fill_its_record_in_order_is_refused() -> None:
    """The page fills its records from rows by position, so a reordered query must not run."""
    place = preferences._memberships("sqlite")
    swapped = place.with_only_columns(*reversed(place.selected_columns))
    with pytest.raises(TypeError, match="not the fields of PanelPlace"):
        preferences._filling(preferences.PanelPlace, swapped)


def _post_manage(client: FlaskClient, path: str, action: str, data: dict) -> object:
    token = csrf(text(client.get(path)))
    return client.post(f"{path}/{action}", data={"csrf_token": token, **data})


def test_changing_a_preference_from_the_manage_page(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)
    path = _manage_path(db, member)
    response = _post_manage(client, path, "consent", {"purpose": "newsletter", "agree": "no"})
    assert response.status_code == 302
    assert _state(db, member, "newsletter") == "withdrawn"
    assert mails(db, member)[-1].template == "consent_withdrawn"
    assert "We have stopped that" in text(client.get(path))
    with db.reader() as session:
        notice = notices.current_notice(session, notices.get_purpose(session, "family_hub_events"))
    _post_manage(
        client,
        path,
        "consent",
        {"purpose": "family_hub_events", "agree": "yes", "notice": str(notice.id)},
    )
    assert _state(db, member, "family_hub_events") == "given"
    with db.reader() as session:
        person = people.find_by_email(session, member)
        event = ledger.events_for(session, person)[-1]
        assert (event.purpose_id, event.channel) == (notice.purpose_id, "email_link")
    bad = _post_manage(client, path, "consent", {"purpose": "family_hub_events", "agree": "maybe"})
    assert bad.status_code == 400
    stale = _post_manage(
        client, path, "consent", {"purpose": "newsletter", "agree": "yes", "notice": "999999"}
    )
    assert stale.status_code == 302 and _state(db, member, "newsletter") == "withdrawn"
    odd = _post_manage(
        client, path, "consent", {"purpose": "newsletter", "agree": "yes", "notice": "²"}
    )
    assert odd.status_code == 302 and _state(db, member, "newsletter") == "withdrawn"
    for booking in ("99999999999999999999999", "²"):
        assert _post_manage(client, path, f"bookings/{booking}/cancel", {}).status_code == 404


def test_two_sign_ups_for_one_new_address_at_once_make_one_record(
    app: Flask, client: FlaskClient, backend: str
) -> None:
    """A double click on Continue, or a booking beside a newsletter sign-up: two requests
    create the same new person at the same moment, and the second uses the first's."""
    crossing_writers_only(backend)
    db = _db(app)
    page = text(client.get("/newsletter"))
    form = {**hidden_fields(page), "csrf_token": csrf(page)}
    form.update({"email": "twice@example.com", "newsletter": "y"})
    posting = meanwhile(
        db,
        lambda session: people.find_or_create(session, "twice@example.com", fill_name=False),
        lambda: client.post("/newsletter", data=form),
    )
    assert posting.error is None
    assert posting.result.status_code == 302
    with db.reader() as session:
        found = session.exec(select(Person).where(Person.email == "twice@example.com")).all()
        assert len(found) == 1
        waiting = select(func.count()).where(PendingSignup.person_id == found[0].id)
        assert session.exec(waiting).one() == 1


def test_a_change_that_arrives_as_the_person_is_erased_gets_the_link_page(
    app: Flask, client: FlaskClient, member: str, backend: str
) -> None:
    crossing_writers_only(backend)
    db = _db(app)
    path = _manage_path(db, member)
    token = csrf(text(client.get(path)))
    person = _person(db, member)
    assert person is not None
    form = {"csrf_token": token, "purpose": "newsletter", "agree": "no"}

    def events() -> int:
        with db.reader() as session:
            mine = select(func.count()).where(ConsentEvent.person_id == person.id)
            return session.exec(mine).one()

    before = events()
    posting = meanwhile_erased(db, person.id, lambda: client.post(f"{path}/consent", data=form))
    assert posting.error is None
    assert posting.result.status_code == 410
    assert "Your details have been deleted" in text(posting.result)
    assert events() == before


def test_an_unsubscribe_that_arrives_as_the_person_is_erased_still_says_done(
    app: Flask, client: FlaskClient, member: str, backend: str
) -> None:
    """A mail app's one-click unsubscribe and the page's button: the person is gone, which
    is more than they asked, so both answer as if it had worked."""
    crossing_writers_only(backend)
    db = _db(app)
    person = _person(db, member)
    assert person is not None
    token = links.make_token(db.settings, person, "unsubscribe", purpose="newsletter")
    path = f"/unsubscribe/{token}"
    quick = meanwhile_erased(db, person.id, lambda: one_click(client, path))
    assert quick.error is None
    assert (quick.result.status_code, quick.result.get_data(as_text=True)) == (200, "Unsubscribed.")


def test_stop_everything_in_one_step(app: Flask, client: FlaskClient, member: str) -> None:
    db = _db(app)
    path = _manage_path(db, member)
    _post_manage(client, path, "stop-everything", {})
    for key in ("newsletter", "workshops", "panel_contact"):
        assert _state(db, member, key) == "withdrawn"
    with db.reader() as session:
        assert session.exec(select(PanelProfile)).all() == []


def test_after_stop_everything_no_coordinator_can_invite_them_to_a_panel(
    app: Flask, client: FlaskClient, member: str
) -> None:
    """The page promises no more emails from us; a panel invitation is one."""
    db = _db(app)
    done = _post_manage(client, _manage_path(db, member), "stop-everything", {})
    assert "You will not get any more emails" in text(client.get(done.location))
    with db.transaction() as session:
        other = factories.panel(session, name="Southfield Parent Carer Panel").id
    for panel_id in (_panel_of(db), other):
        with db.transaction() as session, pytest.raises(Conflict) as refused:
            _invite(session, panel_id, member)
        assert "asked not to be invited to panels" in refused.value.message
    assert mails(db, member, template="panel_invitation") == []


def _panel_of(db: Database) -> int:
    with db.reader() as session:
        return session.exec(select(Panel.id).order_by(Panel.id)).first()


def test_stop_everything_also_stops_booking_reminders(app: Flask, client: FlaskClient) -> None:
    db = _db(app)
    _booked(db, "bea@example.com")
    path = _manage_path(db, "bea@example.com")
    done = _post_manage(client, path, "stop-everything", {})
    assert "You will not get any more emails" in text(client.get(done.location))
    with db.transaction() as session:
        assert reminders.workshop_reminders(session) == 0


def test_a_refusal_is_shown_as_a_problem_and_a_success_as_a_success(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)
    path = _manage_path(db, member)
    refused = submit(client, f"{path}/bookings/99999/cancel", {}, form_page=path)
    assert refused.status_code == 302
    page = text(client.get(path))
    assert "There is a problem" in page and "We could not find that booking." in page
    assert "Success" not in page and "<title>Error: " in page
    saved = submit(client, f"{path}/details", {"name": "Pat"})
    assert saved.status_code == 302
    page = text(client.get(path))
    assert "Success" in page and "Your details are saved." in page
    assert "There is a problem" not in page and "<title>Error: " not in page


def test_correcting_details(app: Flask, client: FlaskClient, member: str) -> None:
    db = _db(app)
    path = _manage_path(db, member)
    response = submit(
        client,
        f"{path}/details",
        {"name": "Pat New", "phone": "01632 960001", "postcode": "sw1a 1aa"},
    )
    assert response.status_code == 302
    person = _person(db, member)
    assert (person.name, person.phone, person.postcode) == ("Pat New", "+441632960001", "SW1A 1AA")
    bad = submit(client, f"{path}/details", {"name": "Pat", "postcode": "ZZZ"})
    assert bad.status_code == 400 and "real postcode" in text(bad) and 'value="ZZZ"' in text(bad)
    with db.reader() as session:
        assert session.exec(select(PersonChange)).one().fields == "name,phone,postcode"


def test_the_details_page_asks_for_a_phone_number_only_from_panel_members(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)
    with db.transaction() as session:
        factories.consenting(session, "newsletter", email="news@example.com")
    assert 'name="phone"' in text(client.get(_manage_path(db, member) + "/details"))
    path = _manage_path(db, "news@example.com") + "/details"
    assert 'name="phone"' not in text(client.get(path))
    typed = submit(client, path, {"name": "Nat", "phone": "07700 900982", "postcode": ""})
    assert typed.status_code == 400 and "only keep a phone number for members" in text(typed)
    assert _person(db, "news@example.com").phone is None


def test_a_new_email_address_must_be_confirmed_from_it(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)
    path = _manage_path(db, member)
    response = submit(client, f"{path}/email", {"new_email": "pat.new@example.com"})
    assert response.status_code == 302
    assert _person(db, member) is not None
    [mail] = mails(db, "pat.new@example.com")
    assert mail.template == "confirm_email"
    confirm = link_in(mail, "confirm-email")
    page = client.get(confirm)
    assert "pat.new@example.com" in text(page) and _person(db, member) is not None
    done = client.post(confirm, data={"csrf_token": csrf(text(page))})
    assert "Email address changed" in text(done)
    assert _person(db, member) is None and _person(db, "pat.new@example.com") is not None
    assert client.get(path).status_code == 410
    same = submit(
        client,
        _manage_path(db, "pat.new@example.com") + "/email",
        {"new_email": "pat.new@example.com"},
    )
    assert same.status_code == 400 and "already have" in text(same)


def test_the_confirmation_to_a_new_address_carries_none_of_the_persons_links(
    app: Flask, client: FlaskClient, member: str
) -> None:
    """The new mailbox may be a typo's stranger: it must not get the keys to the record."""
    db = _db(app)
    with db.transaction() as session:
        person = people.find_by_email(session, member)
        assert person is not None
        person.name = "Pat Parent"
        outbox.queue(session, "preferences_link", person=person, context={"name": person.name})
    submit(client, _manage_path(db, member) + "/email", {"new_email": "typo@exmaple.com"})
    [mail] = mails(db, "typo@exmaple.com")
    body = (mail.body_text or "") + (mail.body_html or "")
    assert "/confirm-email/" in body
    for leak in ("/manage/", "/unsubscribe/", "Pat"):
        assert leak not in body, leak
    assert "List-Unsubscribe" not in json.loads(mail.headers)
    [own] = mails(db, member, template="preferences_link")
    assert "/manage/" in (own.body_text or "") and "List-Unsubscribe" in json.loads(own.headers)


def test_moving_back_to_an_address_once_deleted_keeps_the_mail_they_agreed_to(
    app: Flask, client: FlaskClient
) -> None:
    """Someone deleted everything under old@, later joined a panel as new@, then moved back
    to old@, confirming it from that mailbox: their meeting invitations must still come.
    Someone agreeing to nothing who does the same stays on the list."""
    db = _db(app)
    with db.transaction() as session:
        for earlier in ("old@example.com", "quiet@example.com"):
            gone = factories.consenting(session, "newsletter", email=earlier)
            people.erase(session, gone, channel="email_link", actor="self")
        person = factories.person(session, "new@example.com")
        panel = factories.panel(session)
        factories.member(session, panel, person)
        factories.person(session, "booker@example.com")
    for before, after in (
        ("new@example.com", "old@example.com"),
        ("booker@example.com", "quiet@example.com"),
    ):
        manage = _manage_path(db, before)
        assert submit(client, f"{manage}/email", {"new_email": after}).status_code == 302
        confirm = link_in(mails(db, after)[-1], "confirm-email")
        done = client.post(confirm, data={"csrf_token": csrf(text(client.get(confirm)))})
        assert done.status_code == 200
    with db.transaction() as session:
        assert not people.is_suppressed(session, "old@example.com")
        assert people.is_suppressed(session, "quiet@example.com")
        meeting = factories.meeting(session, panels.get_panel(session, panel.id))
        assert panels.invite_to_session(session, meeting) == 1
        assert people.opted_out_at(session, "old@example.com") is not None, "for imports"


def test_a_confirmation_link_confirms_only_the_address_it_was_sent_to(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)
    path = _manage_path(db, member)
    submit(client, f"{path}/email", {"new_email": "right@example.com"})
    submit(client, f"{path}/email", {"new_email": "typo@exmaple.com"})
    first = link_in(mails(db, "right@example.com")[-1], "confirm-email")
    page = client.get(first)
    assert page.status_code == 409 and "newest email" in text(page)
    assert "typo@exmaple.com" not in text(page)
    refused = client.post(first, data={"csrf_token": csrf(text(client.get(path)))})
    assert refused.status_code == 409 and "newest email" in text(refused)
    assert _person(db, member) is not None and _person(db, "typo@exmaple.com") is None
    second = link_in(mails(db, "typo@exmaple.com")[-1], "confirm-email")
    page = client.get(second)
    assert page.status_code == 200 and "typo@exmaple.com" in text(page)


def test_an_address_someone_else_uses_is_refused_only_when_confirmed(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)
    with db.transaction() as session:
        factories.person(session, "taken@example.com")
    asked = submit(client, _manage_path(db, member) + "/email", {"new_email": "taken@example.com"})
    assert asked.status_code == 302, "the page does not reveal who else is on our records"
    confirm = link_in(mails(db, "taken@example.com")[-1], "confirm-email")
    page = client.get(confirm)
    refused = client.post(confirm, data={"csrf_token": csrf(text(page))})
    assert refused.status_code == 409 and "already used" in text(refused)
    assert _person(db, member) is not None


def test_download_everything_as_json_and_as_a_page(
    app: Flask, client: FlaskClient, member: str
) -> None:
    path = _manage_path(_db(app), member)
    response = client.get(f"{path}/download")
    assert response.headers["Content-Disposition"] == 'attachment; filename="my-data.json"'
    data = json.loads(response.data)
    assert data["person"]["email"] == member
    assert {e["purpose"] for e in data["consent_events"]} == {
        "newsletter",
        "workshops",
        "panel_contact",
    }
    page = text(client.get(f"{path}/data"))
    assert "Everything we hold about you" in page and member in page and "Mixed or multiple" in page


def test_download_holds_notes_about_them_and_what_waits_for_confirmation(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)
    with db.transaction() as session:
        person = people.find_by_email(session, member)
        membership = session.exec(
            select(PanelMembership).where(PanelMembership.person_id == person.id)
        ).one()
        meeting = factories.meeting(session, session.get(Panel, membership.panel_id))
        author, _ = admin_users.create_admin(
            session, "coordinator@example.gov.uk", "coordinator", "a long enough password"
        )
        panels.add_note(session, meeting, "Pat asked for a ramp", author_id=author.id)
        panels.add_note(
            session, meeting, "Pat uses a ramp", author_id=author.id, membership_id=membership.id
        )
        preferences.request_email_change(session, person, "pat.new@example.com")
        contact = notices.current_notice(session, notices.get_purpose(session, "panel_contact"))
        signups.request_panel(
            session,
            factories.panel(session, "Riverside Parent Carer Panel"),
            email=member,
            name=None,
            phone=None,
            profile=panels.ProfileInput(postcode="RV1 2AB", age_band="35 to 44"),
            recordings=False,
            shown={"panel_contact": contact.id},
        )
    path = _manage_path(db, member)
    data = json.loads(client.get(f"{path}/download").data)
    [held] = data["panel_memberships"]
    assert [note["text"] for note in held["notes"]] == ["Pat uses a ramp"]
    assert data["person"]["new_email_waiting_to_be_confirmed"] == "pat.new@example.com"
    [waiting] = data["unconfirmed_signups"]
    assert waiting["panel"] == "Riverside Parent Carer Panel"
    assert waiting["answers"]["profile"]["postcode"] == "RV1 2AB"
    page = text(client.get(f"{path}/data"))
    for shown in (
        "Pat uses a ramp",
        "pat.new@example.com",
        "Joining Riverside Parent Carer Panel",
        "RV1 2AB",
    ):
        assert shown in page, shown
    assert "Pat asked for a ramp" not in page


def test_download_holds_staff_notes_requests_sync_and_who_looked(
    app: Flask, client: FlaskClient, member: str
) -> None:
    """Everything held about them, including what staff wrote and did about their record."""
    db = _db(app)
    with db.transaction() as session:
        person = people.find_by_email(session, member)
        assert person is not None
        staff, _ = admin_users.create_admin(
            session, "dpo@example.gov.uk", "dpo", "a long enough password"
        )
        people.correct_details(
            session,
            person,
            {"postcode": "NE2 1AA"},
            channel="admin",
            actor=f"admin:{staff.id}",
            note="Called by her social worker Ms Grey",
        )
        rights.log_request(
            session,
            kind="access",
            channel="post",
            received=utcnow().date().isoformat(),
            requester="Ms Grey, on Pat's behalf",
            email=member,
            actor_id=staff.id,
            actor=f"admin:{staff.id}",
        )
        session.add(MailchimpChange(action="subscribe", person_id=person.id, status="done"))
        other = factories.panel(session, "Southfield Parent Carer Panel")
        panels.invite(session, other, email=member, name=None)
        person.invitations_declined_at = utcnow()
        audit.record(
            session,
            "special_category.viewed",
            actor=f"admin:{staff.id}",
            actor_id=staff.id,
            object_type="person",
            object_id=person.public_id,
        )
    path = _manage_path(db, member)
    data = json.loads(client.get(f"{path}/download").data)
    [change] = data["detail_changes"]
    assert (change["note"], change["by"]) == (
        "Called by her social worker Ms Grey",
        f"admin:{staff.id}",
    )
    [asked] = data["rights_requests"]
    assert (asked["requester"], asked["channel"]) == ("Ms Grey, on Pat's behalf", "post")
    assert data["person"]["panel_invitation_link_works_until"] is not None
    assert data["person"]["declined_panel_invitations_at"] is not None
    [invitation] = [m for m in data["emails"] if m["template"] == "panel_invitation"]
    assert invitation["to"] == member
    assert [c["change"] for c in data["newsletter_mailing_list_changes"]] == ["subscribe"]
    uses = {(a["action"], a["by"]) for a in data["uses_of_your_record"]}
    assert ("special_category.viewed", "our staff") in uses
    page = text(client.get(f"{path}/data"))
    for shown in (
        "Called by her social worker Ms Grey",
        "made by Ms Grey, on Pat&#39;s behalf",
        "Your invitation to join a panel works until",
        "You asked not to be invited to panels",
        f"You are invited to join a Parent Carer Panel, to {member}",
        "Subscribe, asked",
        "A member of staff looked at the answers you gave about yourself to join a panel.",
    ):
        assert shown in page, shown

    def downloads() -> int:
        uses = json.loads(client.get(f"{path}/download").data)["uses_of_your_record"]
        return sum(1 for a in uses if (a["action"], a["by"]) == ("person.downloaded", "you"))

    before = downloads()
    assert client.head(f"{path}/download").status_code == 200
    assert downloads() == before + 1, "the GET before was one; a HEAD request downloads nothing"
    assert "A copy of your record was downloaded from your preferences page." in text(
        client.get(f"{path}/data")
    )


def test_delete_everything(app: Flask, client: FlaskClient, member: str) -> None:
    db = _db(app)
    path = _manage_path(db, member)
    confirm_page = client.get(f"{path}/delete")
    assert "cannot undo" in text(confirm_page)
    assert _person(db, member) is not None
    done = client.post(f"{path}/delete", data={"csrf_token": csrf(text(confirm_page))})
    assert "Your data has been deleted" in text(done)
    assert _person(db, member) is None
    [last] = mails(db, template="data_deleted")
    assert last.to_address == member and last.purge_on_send and last.person_id is None
    assert last.body_text and last.body_html
    for link in ("/manage/", "/unsubscribe/"):
        assert link not in last.body_text + last.body_html, "a link that no longer works"
    assert "List-Unsubscribe" not in json.loads(last.headers)
    assert client.get(path).status_code == 410


def test_pressing_delete_twice_says_the_data_has_been_deleted(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)
    path = _manage_path(db, member)
    confirm_page = text(client.get(f"{path}/delete"))
    assert re.search(
        r'<button[^>]*data-prevent-double-click="true"[^>]*>\s*Delete all my data', confirm_page
    )
    pressed = [
        client.post(f"{path}/delete", data={"csrf_token": csrf(confirm_page)}) for _ in range(2)
    ]
    assert [response.status_code for response in pressed] == [200, 200]
    assert text(pressed[1]) == text(pressed[0])
    assert "Your data has been deleted" in text(pressed[1])
    assert len(mails(db, template="data_deleted")) == 1
    assert client.get(f"{path}/delete").status_code == 410, "only the button's answer is kept"


# ---- unsubscribe --------------------------------------------------------------------------


def test_staying_on_a_panel_records_the_wording_shown_and_asks_about_recordings_apart(
    app: Flask, client: FlaskClient
) -> None:
    """The renewal page is where the member agrees again, so the ledger must point at the
    wording it showed, even if a newer one is published meanwhile; recordings are their
    own purpose and are never renewed by the button alone."""
    db = _db(app)
    with db.transaction() as session:
        person = factories.person(session, email="stella@example.com")
        factories.member(session, factories.panel(session), person)
        ledger.give(session, person, "panel_recordings", channel="web_form", actor="self")
        contact = notices.publish(session, "panel_contact", "Yes, keep me on.", "Text two.")
        recordings = notices.publish(session, "panel_recordings", "Yes, record.", "Text two.")
        path = "/renew/" + links.make_token(db.settings, person, "renew", purpose="panel_contact")
    page = text(client.get(path))
    assert "Yes, keep me on." in page and "Yes, record." in page
    assert 'name="panel_recordings" type="checkbox" value="y">' in page
    with db.transaction() as session:
        for key in ("panel_contact", "panel_recordings"):
            notices.publish(session, key, "Newer than the page.", "Text three.")

    def renewals() -> list[tuple[str, int]]:
        with db.reader() as session:
            found = people.find_by_email(session, "stella@example.com")
            events = ledger.events_for(session, found)
            keys = {p.id: p.key for p in session.exec(select(Purpose)).all()}
            return [(keys[e.purpose_id], e.notice_id) for e in events if e.action == "renewed"]

    blank = {**hidden_fields(page), "panel_contact_notice": ""}
    refused = client.post(path, data=blank)
    assert refused.status_code == 400 and "which wording you were shown" in text(refused)
    assert renewals() == []
    client.post(path, data=hidden_fields(page))
    assert renewals() == [("panel_contact", contact.id)]
    client.post(path, data={**hidden_fields(page), "panel_recordings": "y"})
    assert renewals()[1:] == [("panel_contact", contact.id), ("panel_recordings", recordings.id)]


def test_a_renewal_page_older_than_the_agreement_in_force_is_refused(
    app: Flask, client: FlaskClient
) -> None:
    """A page left open while the member agreed to newer wording must not move their
    agreement back to the wording it showed."""
    db = _db(app)
    with db.transaction() as session:
        person = factories.person(session, email="stella@example.com")
        factories.member(session, factories.panel(session), person)
        path = "/renew/" + links.make_token(db.settings, person, "renew", purpose="panel_contact")
    page = text(client.get(path))
    with db.transaction() as session:
        newer = notices.publish(session, "panel_contact", "Yes, newer.", "Text two.")
        found = people.find_by_email(session, "stella@example.com")
        ledger.give(session, found, "panel_contact", channel="web_form", actor="self")
    refused = client.post(path, data=hidden_fields(page))
    assert refused.status_code == 400 and "The wording has changed" in text(refused)
    assert 'href="#submit"' in text(refused)
    with db.reader() as session:
        found = people.find_by_email(session, "stella@example.com")
        assert [e.action for e in ledger.events_for(session, found)] == ["given", "given"]
        assert ledger.states_for(session, found)["panel_contact"].notice_id == newer.id


def _unsubscribe_path(db: Database, email: str, purpose: str | None) -> str:
    with db.reader() as session:
        person = people.find_by_email(session, email)
        return "/unsubscribe/" + links.make_token(
            db.settings, person, "unsubscribe", purpose=purpose
        )


def test_unsubscribe_page_changes_nothing_until_the_button(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)
    path = _unsubscribe_path(db, member, "newsletter")
    page = client.get(path)
    assert "Family Hubs newsletter" in text(page) and page.headers["Cache-Control"] == "no-store"
    assert _state(db, member, "newsletter") == "given"
    done = client.post(path, data={})
    assert "You are unsubscribed" in text(done)
    assert _state(db, member, "newsletter") == "withdrawn"
    assert _state(db, member, "workshops") == "given"
    assert mails(db, member)[-1].template == "consent_withdrawn"


def test_the_confirmation_of_a_last_withdrawal_outlives_the_erasure_it_leads_to(
    app: Flask, client: FlaskClient, member: str
) -> None:
    """Someone who stops the only thing we held them for is erased by the next sweep. The
    email confirming it must still go, and must not offer links that erasure kills."""
    db = _db(app)
    with db.transaction() as session:
        factories.consenting(session, "newsletter", email="only@example.com")
    _post_manage(
        client, _manage_path(db, member), "consent", {"purpose": "newsletter", "agree": "no"}
    )
    [still_held] = mails(db, member, template="consent_withdrawn")
    assert still_held.person_id is not None and "/manage/" in still_held.body_text
    _post_manage(
        client,
        _manage_path(db, "only@example.com"),
        "consent",
        {"purpose": "newsletter", "agree": "no"},
    )
    retention.sweep(db)
    with db.reader() as session:
        assert people.find_by_email(session, "only@example.com") is None
    [last] = mails(db, "only@example.com", template="consent_withdrawn")
    assert last.status == "queued" and last.person_id is None
    assert "we will delete your details within 30 days" in last.body_text
    assert "/manage/" not in last.body_text and "/unsubscribe/" not in last.body_text
    assert OutboxWorker(db).run_once().sent >= 1
    assert find_anywhere(db.engine, ["only@example.com"]) == [], "kept once it was sent"


def test_rfc_8058_one_click_unsubscribe_is_idempotent(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)
    path = _unsubscribe_path(db, member, "newsletter")
    for _ in range(2):
        response = one_click(client, path)
        assert response.status_code == 200
    assert _state(db, member, "newsletter") == "withdrawn"
    with db.reader() as session:
        events = session.exec(
            select(ConsentEvent).where(ConsentEvent.channel == "one_click_unsubscribe")
        ).all()
        assert len(events) == 1
    assert mails(db, member) == []


@pytest.mark.parametrize("mail_app", [False, True])
def test_unsubscribe_without_a_purpose_stops_all_mail_but_does_not_leave_the_panel(
    app: Flask, client: FlaskClient, member: str, mail_app: bool
) -> None:
    """Leaving a panel destroys the member's panel information at once: only the
    preferences page, which says so, does that, never a mail app's button."""
    db = _db(app)
    path = _unsubscribe_path(db, member, None)
    page = text(client.get(path))
    assert "Leaving the panel" not in page and "does not take you off the Parent Carer" in page
    if mail_app:
        one_click(client, path)
    else:
        client.post(path)
    for key in ("newsletter", "workshops"):
        assert _state(db, member, key) == "withdrawn"
    assert _state(db, member, "panel_contact") == "given"


def _booked(db: Database, email: str) -> int:
    """A booking made well ahead (reminders skip last-minute ones) on a workshop tomorrow."""
    with time_machine.travel(utcnow() - timedelta(days=2), tick=False), db.transaction() as s:
        booking, _ = workshops.book_and_confirm(
            s,
            factories.workshop(s, days=3),
            name="Bea Booker",
            email=email,
            setting=None,
            district="Riverside",
            job_role="Volunteer",
            opt_ins={},
        )
        return booking.id


@pytest.mark.parametrize("mail_app", [False, True])
def test_unsubscribing_from_a_booking_email_stops_its_reminders_and_feedback_requests(
    app: Flask, client: FlaskClient, mail_app: bool
) -> None:
    """The booker never asked for news of workshops; the link in their booking email must
    still stop something: the reminder and the feedback request. The place stays booked."""
    db = _db(app)
    booking_id = _booked(db, "bea@example.com")
    [booked] = mails(db, "bea@example.com", template="workshop_booked")
    path = link_in(booked, "unsubscribe")
    page = text(client.get(path))
    assert "Reminders and requests for feedback" in page and "not subscribed" not in page
    if mail_app:
        one_click(client, path)
    else:
        assert "Reminders and requests for feedback" in text(client.post(path))
    with db.transaction() as session:
        assert reminders.workshop_reminders(session) == 0
    with time_machine.travel(utcnow() + timedelta(days=2)), db.transaction() as session:
        assert reminders.evaluation_requests(session) == 0
    with db.reader() as session:
        assert session.get(Booking, booking_id).cancelled_at is None
    assert "nothing to stop" in text(client.get(path)).lower()


def test_a_booker_whose_address_was_suppressed_still_gets_the_reminder(app: Flask) -> None:
    """Suppression keeps mail people did not ask for from an address they once erased;
    a reminder about a place they have since booked is mail they asked for."""
    db = _db(app)
    with db.transaction() as session:
        earlier = factories.consenting(session, "newsletter", email="back@example.com")
        people.erase(session, earlier, channel="email_link", actor="self")
    _booked(db, "back@example.com")
    with db.transaction() as session:
        assert reminders.workshop_reminders(session) == 1


def test_unsubscribing_from_an_invitation_stops_further_invitations(
    app: Flask, client: FlaskClient
) -> None:
    db = _db(app)
    panel_id = _panel(db)
    with db.transaction() as session:
        _invite(session, panel_id, "no@example.com")
    path = link_in(mails(db, "no@example.com")[0], "unsubscribe")
    assert "Invitations to join a Parent Carer Panel" in text(client.get(path))
    one_click(client, path)
    with db.transaction() as session:
        ledger.give(
            session,
            people.find_by_email(session, "no@example.com"),
            "newsletter",
            channel="web_form",
            actor="self",
        )
    with db.transaction() as session, pytest.raises(Conflict) as refused:
        _invite(session, panel_id, "no@example.com")
    assert "asked not to be invited to panels" in refused.value.message
    assert "nothing to stop" in text(client.get(path)).lower()
    assert "You have joined" in text(
        submit(client, link_in(mails(db, "no@example.com")[0], "join"), dict(JOIN))
    ), "the person can still join with the link they were sent"


def test_unsubscribe_after_erasure_says_so(app: Flask, client: FlaskClient, member: str) -> None:
    db = _db(app)
    path = _unsubscribe_path(db, member, "newsletter")
    with db.transaction() as session:
        people.erase(
            session,
            people.find_by_email(session, member),
            channel="admin",
            actor="admin:1",
            note="By post",
        )
    for response in (client.get(path), client.post(path, data="List-Unsubscribe=One-Click")):
        assert response.status_code == 200 and "no longer hold your details" in text(response)


@pytest.fixture
def recorded_member(app: Flask) -> str:
    with _db(app).transaction() as session:
        person = factories.consenting(session, "newsletter", email="rec@example.com")
        factories.member(session, factories.panel(session), person)
        ledger.give(session, person, "panel_recordings", channel="web_form", actor="self")
    return "rec@example.com"


def test_leaving_the_panel_ends_recordings_and_they_cannot_be_agreed_alone(
    app: Flask, client: FlaskClient, recorded_member: str
) -> None:
    db = _db(app)
    path = _manage_path(db, recorded_member)
    token = csrf(text(client.get(path)))
    left = client.post(
        path + "/consent",
        data={"csrf_token": token, "purpose": "panel_contact", "agree": "no"},
        follow_redirects=True,
    )
    assert _state(db, recorded_member, "panel_recordings") == "withdrawn"
    assert "You can agree to this when you join a panel." in text(left)
    [confirmation] = mails(db, recorded_member, template="consent_withdrawn")
    assert confirmation.body_text and "Recording panel meetings" in confirmation.body_text
    with db.reader() as session:
        purpose = notices.get_purpose(session, "panel_recordings")
        notice = notices.current_notice(session, purpose).id
    refused = client.post(
        path + "/consent",
        data={"csrf_token": token, "purpose": "panel_recordings", "agree": "yes", "notice": notice},
        follow_redirects=True,
    )
    assert "once you have joined a panel" in text(refused)
    assert _state(db, recorded_member, "panel_recordings") == "withdrawn"


def _panels_of(db: Database, email: str) -> dict[str, str | None]:
    """Each panel this person joined, with why they left it (None while they are on it)."""
    with db.reader() as session:
        person = people.find_by_email(session, email)
        assert person is not None
        rows = session.exec(
            select(Panel.name, PanelMembership.left_reason)
            .join(PanelMembership, PanelMembership.panel_id == Panel.id)
            .where(PanelMembership.person_id == person.id)
        ).all()
    return dict(rows)


def test_a_member_of_two_panels_can_leave_just_one(
    app: Flask, client: FlaskClient, recorded_member: str
) -> None:
    db = _db(app)
    with db.transaction() as session:
        person = people.find_by_email(session, recorded_member)
        southfield = factories.panel(session, "Southfield Parent Carer Panel")
        factories.member(session, southfield, person)
        south_id = southfield.id
    path = _manage_path(db, recorded_member)
    page = text(client.get(path))
    assert ("Leave this panel", "Leave this panel (the Southfield Parent Carer Panel)") in buttons(
        page
    )
    assert "Leave all your panels" in page
    token = csrf(page)
    left = client.post(
        f"{path}/panels/{south_id}/leave", data={"csrf_token": token}, follow_redirects=True
    )
    assert "You have left the Southfield Parent Carer Panel" in text(left)
    assert _panels_of(db, recorded_member) == {
        "Northfield Parent Carer Panel": None,
        "Southfield Parent Carer Panel": "withdrawn",
    }
    with db.reader() as session:
        profiles = session.exec(
            select(Panel.name)
            .join(PanelMembership, PanelMembership.panel_id == Panel.id)
            .join(PanelProfile, PanelProfile.membership_id == PanelMembership.id)
        ).all()
    assert profiles == ["Northfield Parent Carer Panel"]
    assert _state(db, recorded_member, "panel_contact") == "given"
    assert _state(db, recorded_member, "panel_recordings") == "given"
    [confirmation] = mails(db, recorded_member, template="panel_left")
    body = confirmation.body_text or ""
    assert "You have left the Southfield Parent Carer Panel" in body
    assert "- Northfield Parent Carer Panel" in body
    again = client.post(
        f"{path}/panels/{south_id}/leave", data={"csrf_token": token}, follow_redirects=True
    )
    assert "You are not on that panel." in text(again)
    assert len(mails(db, recorded_member, template="panel_left")) == 1
    assert "Leave this panel" not in text(again) and "Leave the panel" in text(again)


def test_leaving_both_panels_at_once_leaves_no_panel_agreement_behind(
    app: Flask, recorded_member: str, backend: str
) -> None:
    """Two tabs, one button each: whichever comes second is leaving the last panel."""
    crossing_writers_only(backend)
    db = _db(app)
    with db.transaction() as session:
        person = people.find_by_email(session, recorded_member)
        southfield = factories.panel(session, "Southfield Parent Carer Panel")
        factories.member(session, southfield, person)
        ids = {panel.name: panel.id for panel in session.exec(select(Panel)).all()}

    def leave(name: str) -> str | None:
        with db.transaction() as session:
            person = people.find_by_email(session, recorded_member)
            assert person is not None
            return preferences.leave_panel(session, person, ids[name])

    def first(session: Session) -> None:
        person = people.find_by_email(session, recorded_member)
        assert person is not None
        preferences.leave_panel(session, person, ids["Northfield Parent Carer Panel"])

    other = meanwhile(db, first, lambda: leave("Southfield Parent Carer Panel"))
    assert other.error is None
    assert set(_panels_of(db, recorded_member).values()) == {"withdrawn"}
    assert _state(db, recorded_member, "panel_contact") == "withdrawn"
    assert _state(db, recorded_member, "panel_recordings") == "withdrawn"


def test_leaving_the_only_panel_by_its_own_button_is_leaving_the_panel(
    app: Flask, client: FlaskClient, recorded_member: str
) -> None:
    db = _db(app)
    with db.reader() as session:
        [panel_id] = session.exec(select(Panel.id)).all()
    path = _manage_path(db, recorded_member)
    token = csrf(text(client.get(path)))
    client.post(f"{path}/panels/{panel_id}/leave", data={"csrf_token": token})
    assert _panels_of(db, recorded_member) == {"Northfield Parent Carer Panel": "withdrawn"}
    assert _state(db, recorded_member, "panel_contact") == "withdrawn"
    assert _state(db, recorded_member, "panel_recordings") == "withdrawn"
    assert client.post(f"{path}/panels/{panel_id}/leave", data={}).status_code == 400


def test_unsubscribing_from_panel_contact_stops_recordings_too(
    app: Flask, client: FlaskClient, recorded_member: str
) -> None:
    db = _db(app)
    path = _unsubscribe_path(db, recorded_member, "panel_contact")
    assert "Recording panel meetings" in text(client.get(path))
    client.post(path, data="List-Unsubscribe=One-Click")
    for key, status in (
        ("panel_contact", "withdrawn"),
        ("panel_recordings", "withdrawn"),
        ("newsletter", "given"),
    ):
        assert _state(db, recorded_member, key) == status


def test_a_revoked_unsubscribe_link_stops_nothing(
    app: Flask, client: FlaskClient, member: str
) -> None:
    """After an email change, an old email's link must not end a panel place."""
    db = _db(app)
    path = _unsubscribe_path(db, member, None)
    with db.transaction() as session:
        people.revoke_links(people.find_by_email(session, member))
    for response in (
        client.get(path),
        client.post(path, data="List-Unsubscribe=One-Click"),
        client.post(path),
    ):
        assert response.status_code == 410 and "Get a new link" in text(response)
    for key in ("newsletter", "panel_contact"):
        assert _state(db, member, key) == "given"


# ---- links --------------------------------------------------------------------------------


def test_broken_expired_and_revoked_links_get_clear_pages(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)
    path = _manage_path(db, member)
    tampered = client.get(path[:-3] + "xyz")
    assert tampered.status_code == 400 and "This link does not work" in text(tampered)
    assert client.get("/manage/" + "a" * 5000).status_code == 400
    with time_machine.travel(utcnow() + timedelta(days=91)):
        expired = client.get(path)
    assert expired.status_code == 410 and "Get a new link" in text(expired)
    with db.transaction() as session:
        people.revoke_links(people.find_by_email(session, member))
    revoked = client.get(path)
    assert revoked.status_code == 410 and "Get a new link" in text(revoked)
    assert client.get("/confirm/" + path.split("/")[-1]).status_code == 400


def test_new_link_says_the_same_whether_or_not_the_address_is_known(
    app: Flask, client: FlaskClient, member: str
) -> None:
    db = _db(app)

    def waiting() -> tuple[int, int]:
        with db.reader() as session:
            requests = session.exec(select(func.count()).select_from(LinkRequest)).one()
            return requests, session.exec(select(func.count()).select_from(Outbox)).one()

    before = waiting()
    known = text(submit(client, "/link", {"email": member}))
    after_known = waiting()
    unknown = text(submit(client, "/link", {"email": "Stranger@Example.com"}))
    after_unknown = waiting()
    strip = lambda page: page.split('name="csrf_token"')[0]  # noqa: E731
    assert strip(known) == strip(unknown)
    assert after_known == (before[0] + 1, before[1]) and after_unknown == (before[0] + 2, before[1])
    assert find_anywhere(db.engine, ["stranger@example.com"]) == []
    assert mails(db, member) == []
    OutboxWorker(db).run_once()
    assert [m.template for m in mails(db, member)] == ["preferences_link"]
    assert mails(db, "stranger@example.com") == []
    assert waiting()[0] == 0


def test_new_link_is_rate_limited(settings: Settings) -> None:
    app = create_app(replace(settings, rate_limits=True))
    client = app.test_client()
    codes = [submit(client, "/link", {"email": f"p{i}@example.com"}).status_code for i in range(7)]
    assert codes[:5] == [200] * 5 and codes[-1] == 429


def test_other_spellings_of_one_address_share_its_limit_for_new_links(
    settings: Settings,
) -> None:
    """Requests from many places (so no one place's limit applies) for one mailbox, spelt
    with capitals and full-width letters: still five links, no more."""
    app = create_app(replace(settings, rate_limits=True))
    client = app.test_client()
    spellings = ["pat@example.com", "PAT@example.com", "pat@ｅxample.com", "Pat@Example.COM"]
    codes = []
    for index in range(8):
        place = {"REMOTE_ADDR": f"192.0.2.{index + 1}"}
        token = csrf(text(client.get("/link", environ_base=place)))
        form = {"csrf_token": token, "email": spellings[index % len(spellings)]}
        codes.append(client.post("/link", data=form, environ_base=place).status_code)
    assert codes == [200] * 5 + [429] * 3


def test_reading_pages_is_never_rate_limited_but_posting_is(settings: Settings) -> None:
    app = create_app(replace(settings, rate_limits=True))
    client = app.test_client()
    assert {client.get("/link").status_code for _ in range(40)} == {200}
    codes = [submit(client, "/link", {"email": f"q{i}@example.com"}).status_code for i in range(7)]
    assert codes[-1] == 429
    assert client.get("/link").status_code == 200


def test_every_public_form_shares_the_post_limit(settings: Settings) -> None:
    """The blueprint-wide limit (not only a view's own) is checked on POST, never on GET."""
    app = create_app(replace(settings, rate_limits=True))
    client = app.test_client()
    codes = [submit(client, "/newsletter", {"email": "x"}).status_code for _ in range(21)]
    assert set(codes[:20]) == {400} and codes[20] == 429
    assert client.get("/newsletter").status_code == 200


def test_one_click_unsubscribes_from_one_mail_provider_are_never_rate_limited(
    settings: Settings,
) -> None:
    """A mail provider sends many users' one-click requests from a few addresses."""
    app = create_app(replace(settings, rate_limits=True))
    db = _db(app)
    with db.transaction() as session:
        for i in range(25):
            factories.consenting(session, "newsletter", email=f"reader{i}@example.com")
    client = app.test_client()
    codes = [
        one_click(client, _unsubscribe_path(db, f"reader{i}@example.com", "newsletter")).status_code
        for i in range(25)
    ]
    assert codes == [200] * 25
    assert {_state(db, f"reader{i}@example.com", "newsletter") for i in range(25)} == {"withdrawn"}
    refused = [submit(client, "/newsletter", {"email": "x"}).status_code for _ in range(21)]
    assert refused[-1] == 429, "other forms keep their limit"
    db.dispose()


@pytest.mark.parametrize("proxies", [0, 1])
def test_behind_a_trusted_proxy_each_client_has_its_own_limit(
    settings: Settings, proxies: int
) -> None:
    app = create_app(replace(settings, rate_limits=True, trusted_proxies=proxies))
    client = app.test_client()

    def from_client(address: str) -> int:
        page = client.get("/link")
        return client.post(
            "/link",
            data={"csrf_token": csrf(text(page)), "email": f"{address}@example.com"},
            headers={"X-Forwarded-For": address.replace("c", "203.0.113.")},
        ).status_code

    codes = [from_client(f"c{i}") for i in range(1, 8)]
    if proxies:
        assert codes == [200] * 7, "seven clients, one request each"
    else:
        assert codes[-1] == 429, "without a trusted proxy the header is ignored"
    app.extensions["consent.db"].dispose()


# ---- security -----------------------------------------------------------------------------


def test_every_page_sends_a_strict_content_security_policy(client: FlaskClient) -> None:
    for path in ("/", "/newsletter", "/workshops", "/panels", "/link", "/nope"):
        policy = client.get(path).headers["Content-Security-Policy"]
        assert "script-src 'self'" in policy and "frame-ancestors 'none'" in policy
        assert "unsafe-inline" not in policy
    page = text(client.get("/newsletter"))
    assert "<script>" not in page and " style=" not in page


def test_every_response_sends_each_security_header_once(
    app: Flask, client: FlaskClient, member: str
) -> None:
    fixed = {
        "X-Content-Type-Options": "nosniff",
        "X-Frame-Options": "DENY",
        "Cross-Origin-Opener-Policy": "same-origin",
        "Permissions-Policy": "camera=(), microphone=(), geolocation=()",
    }
    manage = _manage_path(_db(app), member)
    for path, referrer in (
        ("/", "strict-origin-when-cross-origin"),
        ("/nope", "strict-origin-when-cross-origin"),
        ("/static/app.css", "strict-origin-when-cross-origin"),
        (manage, "no-referrer"),
        (manage + "/download", "no-referrer"),
    ):
        headers = client.get(path).headers
        for name, value in {**fixed, "Referrer-Policy": referrer}.items():
            assert headers.getlist(name) == [value], (path, name)
        assert len(headers.getlist("Content-Security-Policy")) == 1
    assert client.get(manage).headers.getlist("Cache-Control") == ["no-store"]


@pytest.mark.parametrize(
    ("env", "base_url", "expected"),
    [
        ("production", "https://consent.test", ["max-age=31536000; includeSubDomains"]),
        ("production", "http://consent.test", []),
        ("test", "https://consent.test", []),
    ],
)
def test_only_production_over_https_asks_browsers_to_keep_to_https(
    settings: Settings, env: str, base_url: str, expected: list[str]
) -> None:
    application = create_app(replace(settings, env=env, base_url=base_url))
    try:
        for path in ("/", "/nope"):
            assert (
                application.test_client().get(path).headers.getlist("Strict-Transport-Security")
                == expected
            ), path
    finally:
        application.extensions["consent.db"].dispose()


def test_pages_below_another_link_back_to_it(app: Flask, client: FlaskClient, member: str) -> None:
    db = _db(app)
    manage = _manage_path(db, member)
    workshop, panel = _workshop(db), _panel(db)
    for path, href, words in (
        (manage + "/details", manage, "Back to your preferences"),
        (manage + "/email", manage, "Back to your preferences"),
        (manage + "/delete", manage, "Back to your preferences"),
        (manage + "/data", manage, "Back to your preferences"),
        (f"/workshops/{workshop}", "/workshops", "All workshops"),
        (f"/panels/{panel}/join", "/panels", "Parent Carer Panels"),
    ):
        page = client.get(path).get_data(as_text=True)
        navigation = re.findall(r'<nav aria-label="Back">(.*?)</nav>', page, re.S)
        assert len(navigation) == 1, path
        assert f'href="{href}"' in navigation[0] and "govuk-back-link" in navigation[0], path
        assert words in navigation[0], path


def test_forms_need_their_csrf_token(app: Flask, client: FlaskClient) -> None:
    response = client.post("/newsletter", data={"email": "a@example.com", "newsletter": "y"})
    assert response.status_code == 400 and "form has expired" in text(response)
    with _db(app).reader() as session:
        assert session.exec(select(func.count()).select_from(Person)).one() == 0


def test_a_form_opened_before_a_key_rotation_can_still_be_sent(settings: Settings) -> None:
    """The old key stays in the list while forms signed with it may still be open."""
    new_key = "rotated-secret-key-" + "r" * 40

    def send(opened_with: tuple[str, ...], sent_with: tuple[str, ...]) -> TestResponse:
        before = create_app(replace(settings, secret_keys=opened_with)).test_client()
        token = csrf(text(before.get("/link")))
        cookie = before.get_cookie("session")
        assert cookie is not None
        after = create_app(replace(settings, secret_keys=sent_with)).test_client()
        after.set_cookie("session", cookie.value)
        return after.post("/link", data={"csrf_token": token, "email": "a@example.com"})

    old, rotated = settings.secret_keys, (new_key, *settings.secret_keys)
    for opened_with, sent_with in ((old, rotated), (rotated, (new_key,))):
        kept = send(opened_with, sent_with)
        assert kept.status_code == 200 and "Check your email" in text(kept)
    dropped = send(old, (new_key,))
    assert dropped.status_code == 400 and "form has expired" in text(dropped)


def test_tokens_and_emails_never_reach_the_logs(
    app: Flask, client: FlaskClient, member: str, caplog: pytest.LogCaptureFixture
) -> None:
    path = _manage_path(_db(app), member)
    token = path.split("/")[-1]
    with caplog.at_level(logging.DEBUG):
        client.get(path)
        client.get(path + "xx")
        submit(client, "/link", {"email": member})
        client.get(f"/unsubscribe/{token}")
    logged = "\n".join(record.getMessage() for record in caplog.records)
    assert "/manage/[redacted]" in logged
    assert token not in logged and member not in logged
