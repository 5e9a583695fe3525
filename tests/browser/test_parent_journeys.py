"""A parent's journeys in a real browser, reading the emails the app wrote as .eml files."""

from __future__ import annotations

import json
from datetime import timedelta

from playwright.sync_api import Page, expect

from consent.services import ledger, people, workshops
from consent.timeutil import utcnow
from tests import factories
from tests.browser.conftest import LiveServer

ADDRESS = "jo.parent@example.com"


def _state(live: LiveServer, key: str, address: str = ADDRESS) -> str | None:
    with live.db.reader() as session:
        person = people.find_by_email(session, address)
        if person is None:
            return None
        state = ledger.states_for(session, person).get(key)
        return state.status if state else None


def test_newsletter_from_sign_up_to_deletion(live: LiveServer, page: Page) -> None:
    page.goto(live.url + "/")
    page.get_by_role("link", name="The Family Hubs newsletter and events emails").click()
    page.get_by_label("Email address").fill(ADDRESS)
    page.get_by_label("Your name (optional)").fill("Jo")
    page.get_by_label("Yes, email me the Family Hubs newsletter.").check()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()

    confirmation = live.wait_for_mail(ADDRESS, "Confirm you want the Family Hubs newsletter")
    assert confirmation["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    page.goto(live.link(confirmation, "confirm"))
    expect(page.get_by_text("Yes, email me the Family Hubs newsletter.")).to_be_visible()
    assert _state(live, "newsletter") is None
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name="You are signed up")).to_be_visible()
    assert _state(live, "newsletter") == "given"

    welcome = live.wait_for_mail(ADDRESS, "You are subscribed to the Family Hubs newsletter")
    page.goto(live.link(welcome, "manage"))
    expect(page.get_by_role("heading", name="Your preferences")).to_be_visible()
    page.get_by_role("button", name="Agree to this: Yes, email me about events").click()
    expect(page.get_by_text("We have saved your choice")).to_be_visible()
    assert _state(live, "family_hub_events") == "given"
    page.get_by_role("button", name="Stop Family Hubs newsletter").click()
    expect(page.get_by_text("We have stopped that")).to_be_visible()
    assert _state(live, "newsletter") == "withdrawn"

    with page.expect_download() as download:
        page.get_by_role("link", name="Download it as a file (JSON)").click()
    data = json.loads(download.value.path().read_text())
    assert data["person"]["email"] == ADDRESS
    assert [e["action"] for e in data["consent_events"]] == ["given", "given", "withdrawn"]

    withdrawn = live.wait_for_mail(ADDRESS, "We have stopped what you asked us to stop")
    unsubscribe = withdrawn["List-Unsubscribe"].strip("<>")
    page.goto(unsubscribe)
    expect(page.get_by_text("Family Hub events")).to_be_visible()
    page.get_by_role("button", name="Unsubscribe").click()
    expect(page.get_by_role("heading", name="You are unsubscribed")).to_be_visible()
    assert _state(live, "family_hub_events") == "withdrawn"

    manage = live.link(welcome, "manage")
    page.goto(manage)
    page.get_by_role("link", name="Delete all your data").click()
    page.get_by_role("button", name="Delete all my data").click()
    expect(page.get_by_role("heading", name="Your data has been deleted")).to_be_visible()
    live.wait_for_mail(ADDRESS, "We have deleted your details")
    with live.db.reader() as session:
        assert people.find_by_email(session, ADDRESS) is None
    response = page.goto(manage)
    assert response is not None and response.status == 410
    expect(page.get_by_role("link", name="Get a new link by email")).to_be_visible()
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_joining_a_panel_and_booking_a_workshop(live: LiveServer, page: Page) -> None:
    with live.db.transaction() as session:
        panel = factories.panel(session)
        start = utcnow() + timedelta(days=3)
        workshop = workshops.create_workshop(
            session,
            title="Talking with toddlers",
            description="Early language.",
            starts_at=start,
            ends_at=start + timedelta(hours=1),
            capacity=12,
            location="Online",
        )
    page.goto(f"{live.url}/panels")
    page.get_by_role("link", name=f"Join the {panel.name}").click()
    page.get_by_label("Full name").fill("Alex Carer")
    page.get_by_label("Email address").fill("alex@example.com")
    page.get_by_label("Postcode").fill("ne1 4st")
    page.get_by_label("25 to 34").check()
    page.get_by_label("How many children do you look after?").fill("2")
    page.get_by_label("Stay and play sessions").check()
    page.get_by_role("group", name="What is your ethnic group? (optional)").get_by_label(
        "Prefer not to say"
    ).check()
    page.get_by_label("Yes, I want to join the Parent Carer Panel").check()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Check your email")).to_be_visible()
    confirm = live.wait_for_mail(
        "alex@example.com", "Confirm you want to join the Parent Carer Panel"
    )
    page.goto(live.link(confirm, "confirm"))
    page.get_by_role("button", name="Confirm").click()
    expect(page.get_by_role("heading", name="You have joined the panel")).to_be_visible()
    assert _state(live, "panel_contact", "alex@example.com") == "given"

    page.goto(f"{live.url}/workshops")
    page.get_by_role("link", name="Talking with toddlers").click()
    page.get_by_role("button", name="Book my place").click()
    expect(page.get_by_role("heading", name="There is a problem")).to_be_visible()
    page.get_by_label("Full name").fill("Alex Carer")
    page.get_by_label("Email address").fill("alex@example.com")
    page.get_by_label("Riverside").check()
    page.get_by_label("Parent or carer").check()
    page.get_by_role("button", name="Book my place").click()
    expect(page.get_by_role("heading", name="Your place is booked")).to_be_visible()
    live.wait_for_mail("alex@example.com", "Your workshop place is booked")
    with live.db.reader() as session:
        assert workshops.places_taken(session, session.get(type(workshop), workshop.id)) == 1
