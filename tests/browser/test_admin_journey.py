"""A coordinator's day in a real browser, and axe-core on every admin page."""

from __future__ import annotations

from datetime import timedelta

from axe_playwright_python.sync_playwright import Axe
from playwright.sync_api import Page, expect
from sqlmodel import select

from consent.models import PanelProfile
from consent.services import admin_users, people, rights, workshops
from consent.timeutil import to_london, utcnow
from tests import factories
from tests.admin_client import PASSWORD, code_for, make_staff
from tests.browser.conftest import LiveServer

axe = Axe()


def _sign_in(page: Page, live: LiveServer, role: str) -> None:
    email, secret = make_staff(live.db, role)
    page.goto(live.url + "/admin/")
    page.get_by_label("Email address").fill(email)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Set up your authenticator app")).to_be_visible()
    page.get_by_label("Code from your authenticator app").fill(code_for(secret))
    page.get_by_role("button", name="Sign in").click()


def test_a_coordinator_runs_a_panel_and_records_a_withdrawal(live: LiveServer, page: Page) -> None:
    _sign_in(page, live, "coordinator")
    expect(page.get_by_role("heading", name="Dashboard")).to_be_visible()
    page.get_by_role("navigation", name="Menu").get_by_role("link", name="Panels").click()
    page.get_by_role("link", name="Create a panel").click()
    page.get_by_label("Panel name").fill("Westbrook Parent Carer Panel")
    page.get_by_label("Family Hub").fill("Westbrook Family Hub")
    page.get_by_label("Description").fill("Parents and carers in Westbrook.")
    page.get_by_role("button", name="Save").click()
    expect(page.get_by_role("heading", name="Westbrook Parent Carer Panel")).to_be_visible()

    page.get_by_role("textbox", name="Email address").fill("rowan@example.com")
    page.get_by_role("textbox", name="Name (optional)").fill("Rowan")
    page.get_by_role("button", name="Send invitation").click()
    expect(page.get_by_text("Invitation sent.")).to_be_visible()
    panel_page = page.url

    invitation = live.wait_for_mail(
        "rowan@example.com", "You are invited to join a Parent Carer Panel"
    )
    member = page.context.new_page()
    member.goto(live.link(invitation, "join"))
    member.get_by_label("Postcode").fill("W1A 1AA")
    member.get_by_label("35 to 44").check()
    member.get_by_label("How many children do you look after?").fill("3")
    member.get_by_label("Yes, I want to join the Parent Carer Panel").check()
    member.get_by_role("button", name="Continue").click()
    expect(member.get_by_role("heading", name="You have joined the panel")).to_be_visible()
    member.close()

    page.goto(panel_page)
    expect(page.get_by_role("link", name="Rowan")).to_be_visible()
    page.get_by_label("Title").fill("Autumn meeting")
    earlier_today = to_london(utcnow() - timedelta(hours=1))
    page.get_by_label("Date and time").fill(f"{earlier_today:%Y-%m-%d %H:%M}")
    page.get_by_label("In person").check()
    page.get_by_role("button", name="Add session").click()
    expect(page.get_by_role("heading", name="Autumn meeting")).to_be_visible()
    page.get_by_role("group", name="Did Rowan come?").get_by_label("Yes").check()
    page.get_by_role("button", name="Save attendance for Rowan").click()
    expect(page.get_by_text("Attendance saved.")).to_be_visible()
    expect(page.get_by_role("cell", name="Yes", exact=True).first).to_be_visible()

    page.get_by_role("link", name="People").first.click()
    page.get_by_label("Search by email address or name").fill("rowan")
    page.get_by_role("button", name="Search").click()
    page.get_by_role("link", name="rowan@example.com").click()
    page.get_by_label("What").select_option("panel_contact")
    page.get_by_label("Stop").check()
    page.get_by_label("Note").fill("Rowan phoned on Monday to leave the panel")
    page.get_by_role("button", name="Record").click()
    expect(page.get_by_text("Recorded.")).to_be_visible()
    expect(page.get_by_text("Not on a panel.")).to_be_visible()
    with live.db.reader() as session:
        assert people.find_by_email(session, "rowan@example.com") is not None
        assert session.exec(select(PanelProfile)).all() == []
    page.goto(panel_page)
    expect(page.get_by_text("Members (0)")).to_be_visible()
    assert page.console_errors == []  # type: ignore[attr-defined]


def test_every_admin_page_has_no_axe_violations(live: LiveServer, page: Page) -> None:
    with live.db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="a11y.admin@example.com")
        panel = factories.panel(session)
        factories.member(session, panel, person)
        item = factories.meeting(session, panel, days=9)
        start = utcnow() + timedelta(days=4)
        workshop = workshops.create_workshop(
            session,
            title="Sleep",
            description="Bedtimes.",
            starts_at=start,
            ends_at=start + timedelta(hours=1),
            capacity=20,
            location="Online",
        )
        workshops.book(
            session,
            workshop,
            name="A Booker",
            email="booker@example.com",
            setting=None,
            district="Eastgate",
            job_role="Volunteer",
        )
        logger, _ = admin_users.create_admin(
            session, "logger@example.gov.uk", "dpo", PASSWORD, name="Logger"
        )
        request = rights.log_request(
            session,
            kind="access",
            channel="post",
            received=to_london(utcnow()).date().isoformat(),
            requester="A Person",
            email="a11y.admin@example.com",
            actor_id=logger.id or 0,
            actor=f"admin:{logger.id}",
        )
        ids = {
            "rights": request.id,
            "person": person.public_id,
            "panel": panel.id,
            "session": item.id,
            "workshop": workshop.id,
        }
    _sign_in(page, live, "dpo")
    paths = [
        "/admin/",
        "/admin/people",
        "/admin/people?q=a11y",
        f"/admin/people/{ids['person']}",
        f"/admin/people/{ids['person']}/erase",
        "/admin/panels",
        "/admin/panels/new",
        f"/admin/panels/{ids['panel']}",
        f"/admin/panels/{ids['panel']}/edit",
        f"/admin/panels/{ids['panel']}/conclude",
        f"/admin/sessions/{ids['session']}",
        "/admin/workshops",
        "/admin/workshops/new",
        f"/admin/workshops/{ids['workshop']}",
        f"/admin/workshops/{ids['workshop']}/edit",
        "/admin/rights",
        "/admin/password",
        "/admin/rights/new",
        f"/admin/rights/{ids['rights']}",
        "/admin/reports",
        "/admin/import",
        "/admin/audit",
        "/admin/retention",
    ]
    failures = {}
    for path in paths:
        page.goto(live.url + path)
        results = axe.run(page)
        if results.violations_count:
            failures[path] = results.generate_snapshot()
    page.goto(live.url + "/admin/rights/new")
    page.get_by_role("button", name="Log request").click()
    results = axe.run(page)
    if results.violations_count:
        failures["rights form with errors"] = results.generate_snapshot()
    page.goto(live.url + "/admin/import")
    page.get_by_role("button", name="Preview").click()
    results = axe.run(page)
    if results.violations_count:
        failures["import form with errors"] = results.generate_snapshot()
    good = b"new.a11y@example.com,2026-11-01,Paper form at the Family Hub\n"
    for name, rows in (("with problems", good + b"not an address,2026-11-01,Paper\n"), ("", good)):
        page.goto(live.url + "/admin/import")
        page.get_by_label("Purpose").select_option("newsletter")
        page.get_by_label("CSV file").set_input_files(
            files=[
                {
                    "name": "list.csv",
                    "mimeType": "text/csv",
                    "buffer": b"email,consented_at,evidence\n" + rows,
                }
            ]
        )
        page.get_by_role("button", name="Preview").click()
        expect(page.get_by_role("heading", name="Check the import")).to_be_visible()
        results = axe.run(page)
        if results.violations_count:
            failures[f"import preview {name}"] = results.generate_snapshot()
    page.get_by_role("button", name="Import 1 row(s)").click()
    expect(page.get_by_role("heading", name="Check the import")).not_to_be_visible()
    results = axe.run(page)
    if results.violations_count:
        failures["imported"] = results.generate_snapshot()
    page.goto(live.url + f"/admin/panels/{ids['panel']}")
    page.get_by_role("button", name="See the diversity summary").click()
    results = axe.run(page)
    if results.violations_count:
        failures["diversity"] = results.generate_snapshot()
    page.goto(live.url + f"/admin/people/{ids['person']}")
    page.get_by_role("button", name="Show special category answers").click()
    results = axe.run(page)
    if results.violations_count:
        failures["special category shown"] = results.generate_snapshot()
    assert failures == {}

    page.get_by_role("button", name="Sign out").click()
    admin_page = page.context.new_page()
    _sign_in(admin_page, live, "admin")
    for path in ("/admin/users", "/admin/users/new", "/admin/api-keys", "/admin/api-keys/new"):
        admin_page.goto(live.url + path)
        results = axe.run(admin_page)
        assert results.violations_count == 0, (path, results.generate_snapshot())
    admin_page.get_by_role("button", name="Create key").click()
    results = axe.run(admin_page)
    assert results.violations_count == 0, ("key form errors", results.generate_snapshot())
    admin_page.get_by_label("Which system will use the key?").fill("Family Hub bookings")
    admin_page.get_by_label("Read the anonymised counts in the reports").check()
    admin_page.get_by_role("button", name="Create key").click()
    expect(admin_page.get_by_role("heading", level=1)).to_contain_text("Family Hub bookings")
    results = axe.run(admin_page)
    assert results.violations_count == 0, ("key shown", results.generate_snapshot())
    admin_page.goto(live.url + "/admin/api-keys")
    results = axe.run(admin_page)
    assert results.violations_count == 0, ("key list", results.generate_snapshot())
    for path in ("/admin/sign-in",):
        fresh = page.context.browser.new_page()  # type: ignore[union-attr]
        fresh.goto(live.url + path)
        results = axe.run(fresh)
        assert results.violations_count == 0, results.generate_snapshot()
        fresh.close()


def test_signing_in_has_no_axe_violations(live: LiveServer, page: Page) -> None:
    """The first pages staff see, with their errors, and the page that enrols the app."""
    email, secret = make_staff(live.db, "coordinator")
    failures = {}
    page.goto(live.url + "/admin/")
    results = axe.run(page)
    if results.violations_count:
        failures["sign in"] = results.generate_snapshot()
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_text("There is a problem")).to_be_visible()
    results = axe.run(page)
    if results.violations_count:
        failures["sign in with errors"] = results.generate_snapshot()
    page.get_by_label("Email address").fill(email)
    page.get_by_role("textbox", name="Password").fill(PASSWORD)
    page.get_by_role("button", name="Continue").click()
    expect(page.get_by_role("heading", name="Set up your authenticator app")).to_be_visible()
    results = axe.run(page)
    if results.violations_count:
        failures["set up the app"] = results.generate_snapshot()
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_text("There is a problem")).to_be_visible()
    results = axe.run(page)
    if results.violations_count:
        failures["code with errors"] = results.generate_snapshot()
    assert failures == {}
    page.get_by_label("Code from your authenticator app").fill(code_for(secret))
    page.get_by_role("button", name="Sign in").click()
    expect(page.get_by_role("button", name="Sign out")).to_be_visible()
