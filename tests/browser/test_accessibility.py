"""axe-core on every public page, at desktop width and at 320 px: zero violations."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import timedelta

import pytest
from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect
from sqlmodel import select, update

from consent import links
from consent.models import Booking, Outbox, Workshop
from consent.services import ledger, outbox, preferences, signups, workshops
from consent.timeutil import utcnow
from tests import factories
from tests.browser.conftest import LiveServer

WIDTHS = {"desktop": (1280, 900), "phone": (320, 640)}
axe = Axe()


def _world(live: LiveServer) -> dict[str, str]:
    """Data behind every page: a member with bookings, a panel, a workshop, pending links."""
    settings = live.db.settings
    with live.db.transaction() as session:
        person = factories.consenting(session, "newsletter", "workshops", email="a11y@example.com")
        panel = factories.panel(session)
        factories.member(session, panel, person)
        ledger.give(session, person, "panel_recordings", channel="web_form", actor="self")
        start = utcnow() + timedelta(days=4)
        workshop = workshops.create_workshop(
            session,
            title="Understanding big feelings",
            description="Worry and tears.",
            starts_at=start,
            ends_at=start + timedelta(hours=1),
            capacity=20,
            location="Online",
        )
        workshops.book(
            session,
            workshop,
            name="A Person",
            email="a11y@example.com",
            setting=None,
            district="Eastgate",
            job_role="Volunteer",
        )
        pending = signups.request_subscription(
            session,
            email="new@example.com",
            name=None,
            shown={"newsletter": 1},
        )
        newcomer = session.get(type(person), pending.person_id)
        preferences.request_email_change(session, person, "a11y.new@example.com")
        sent = session.exec(select(Outbox.body_text).where(Outbox.template == "confirm_email"))
        confirm_email = re.search(r"/confirm-email/([\w.\-]+)", sent.one() or "")
        assert confirm_email is not None
        outbox.purge_bodies(session, keep=timedelta(0))
        held = workshops.create_workshop(
            session,
            title="Toddler talk",
            description="Words and play.",
            starts_at=start,
            ends_at=start + timedelta(hours=1),
            capacity=20,
            location="Online",
        )
        went, _ = workshops.book(
            session,
            held,
            name="A Person",
            email="a11y@example.com",
            setting=None,
            district="Eastgate",
            job_role="Volunteer",
        )
        past = utcnow() - timedelta(days=1)
        session.execute(
            update(Workshop)
            .where(Workshop.id == held.id)
            .values(starts_at=past, ends_at=past + timedelta(hours=1))
        )
        other_panel = factories.panel(session, "Riverside Panel")
        return {
            "manage": links.make_token(settings, person, "manage"),
            "unsubscribe": links.make_token(settings, person, "unsubscribe", purpose="newsletter"),
            "renew": links.make_token(settings, person, "renew", purpose="panel_contact"),
            "confirm": links.make_token(settings, newcomer, "confirm", ref=pending.id),
            "confirm_email": confirm_email.group(1),
            "workshop": str(workshop.id),
            "panel": str(panel.id),
            "feedback": links.make_token(settings, person, "feedback", ref=went.id),
            "invited": links.make_token(settings, newcomer, "join", ref=other_panel.id),
        }


def _submit_empty(page: Page, button: str) -> None:
    page.get_by_role("button", name=button).click()


PAGES: list[tuple[str, Callable[[dict[str, str]], str], str | None]] = [
    ("start", lambda w: "/", None),
    ("newsletter", lambda w: "/newsletter", None),
    ("newsletter with errors", lambda w: "/newsletter", "Continue"),
    ("check email", lambda w: "/check-your-email", None),
    ("workshops", lambda w: "/workshops", None),
    ("workshop", lambda w: f"/workshops/{w['workshop']}", None),
    ("workshop with errors", lambda w: f"/workshops/{w['workshop']}", "Book my place"),
    ("booked", lambda w: f"/workshops/{w['workshop']}/booked", None),
    ("panels", lambda w: "/panels", None),
    ("join", lambda w: f"/panels/{w['panel']}/join", None),
    ("join with errors", lambda w: f"/panels/{w['panel']}/join", "Continue"),
    ("confirm", lambda w: f"/confirm/{w['confirm']}", None),
    ("manage", lambda w: f"/manage/{w['manage']}", None),
    ("details", lambda w: f"/manage/{w['manage']}/details", None),
    ("change email", lambda w: f"/manage/{w['manage']}/email", None),
    ("confirm new email", lambda w: f"/confirm-email/{w['confirm_email']}", None),
    ("my data", lambda w: f"/manage/{w['manage']}/data", None),
    ("delete", lambda w: f"/manage/{w['manage']}/delete", None),
    ("unsubscribe", lambda w: f"/unsubscribe/{w['unsubscribe']}", None),
    ("stay on the panel", lambda w: f"/renew/{w['renew']}", None),
    ("feedback", lambda w: f"/feedback/{w['feedback']}", None),
    ("feedback with errors", lambda w: f"/feedback/{w['feedback']}", "Send feedback"),
    ("invited to join", lambda w: f"/join/{w['invited']}", None),
    ("invited to join with errors", lambda w: f"/join/{w['invited']}", "Continue"),
    ("new link", lambda w: "/link", None),
    ("new link with errors", lambda w: "/link", "Send me a link"),
    ("privacy", lambda w: "/privacy", None),
    ("accessibility", lambda w: "/accessibility", None),
    ("not found", lambda w: "/no-such-page", None),
    ("broken link", lambda w: "/manage/not-a-token", None),
]


@pytest.mark.parametrize("width", sorted(WIDTHS))
def test_every_public_page_has_no_axe_violations(live: LiveServer, page: Page, width: str) -> None:
    world = _world(live)
    page.set_viewport_size(dict(zip(("width", "height"), WIDTHS[width], strict=True)))
    failures: dict[str, str] = {}
    for name, path, button in PAGES:
        response = page.goto(live.url + path(world))
        assert response is not None
        assert (response.status < 400) == (name not in ("not found", "broken link")), name
        if button:
            _submit_empty(page, button)
            assert page.get_by_text("There is a problem").count() >= 1, name
        results = axe.run(page)
        if results.violations_count:
            failures[name] = results.generate_snapshot()
    assert failures == {}
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_pages_after_actions_have_no_axe_violations(live: LiveServer, page: Page) -> None:
    world = _world(live)
    failures: dict[str, str] = {}
    page.goto(f"{live.url}/unsubscribe/{world['unsubscribe']}")
    page.get_by_role("button", name="Unsubscribe").click()
    results = axe.run(page)
    if results.violations_count:
        failures["unsubscribed"] = results.generate_snapshot()
    page.goto(f"{live.url}/manage/{world['manage']}")
    page.get_by_role("button", name="Stop Free online workshops").click()
    results = axe.run(page)
    if results.violations_count:
        failures["manage with banner"] = results.generate_snapshot()
    with live.db.transaction() as session:
        session.execute(update(Booking).values(cancelled_at=utcnow()))
    page.get_by_role("button", name="Cancel this booking").first.click()
    expect(page.get_by_text("There is a problem")).to_be_visible()
    results = axe.run(page)
    if results.violations_count:
        failures["manage with a problem"] = results.generate_snapshot()
    page.goto(f"{live.url}/confirm/{world['confirm']}")
    page.get_by_role("button", name="Confirm").click()
    results = axe.run(page)
    if results.violations_count:
        failures["confirmed"] = results.generate_snapshot()
    page.goto(f"{live.url}/manage/{world['manage']}/delete")
    page.get_by_role("button", name="Delete all my data").click()
    results = axe.run(page)
    if results.violations_count:
        failures["deleted"] = results.generate_snapshot()
    page.goto(f"{live.url}/manage/{world['manage']}")
    results = axe.run(page)
    if results.violations_count:
        failures["expired link"] = results.generate_snapshot()
    assert failures == {}
