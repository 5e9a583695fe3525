"""Asking to stop everything is an opt-out from all of it (promise 10): a spreadsheet
agreement dated before it is not imported for any purpose, and once the person's details
are deleted their address stays on the list of people not to contact."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

import pytest
import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlmodel import Session, select

from consent import links
from consent.db import Database
from consent.errors import Conflict
from consent.models import Person
from consent.services import imports, ledger, panels, people, preferences, retention, rights
from consent.timeutil import LONDON, utcnow
from mailers.mailchimp import Pusher, reconcile
from tests import factories
from tests.fake_mailchimp import FakeMailchimp, md5
from tests.web import text


def _sheet(tmp_path: Path, email: str, days_ago: int) -> Path:
    day = (utcnow() - timedelta(days=days_ago)).astimezone(LONDON).date().isoformat()
    path = tmp_path / "list.csv"
    path.write_text(f"email,consented_at,evidence\n{email},{day},Old paper form\n")
    return path


def test_an_older_agreement_for_another_purpose_is_not_imported(
    db: Database, tmp_path: Path
) -> None:
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="rhea@example.com")
        preferences.withdraw_all(session, person)
        factories.consenting(session, "newsletter", email="other@example.com")
    for email, imported in (("rhea@example.com", 0), ("other@example.com", 1)):
        with db.reader() as session:
            result = imports.preview(session, _sheet(tmp_path, email, 30), "family_hub_events")
        assert (result.to_import, result.suppressed) == (imported, 1 - imported)


def test_the_unsubscribe_link_for_every_kind_of_email_counts_too(
    db: Database, tmp_path: Path
) -> None:
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="rhea@example.com")
        preferences.unsubscribe(session, person, None, one_click=True)
    with db.reader() as session:
        result = imports.preview(
            session, _sheet(tmp_path, "rhea@example.com", 30), "family_hub_events"
        )
    assert (result.to_import, result.suppressed) == (0, 1)


def test_a_booker_who_stopped_everything_stays_suppressed_once_erased(
    db: Database, tmp_path: Path
) -> None:
    """They never agreed to anything, so no consent of theirs was withdrawn; their
    "stop everything" is what tells the sweep they opted out."""
    start = utcnow()
    with db.transaction() as session:
        workshop = factories.workshop(session, days=2)
        factories.booking(session, workshop, email="quill@example.com", name="Quinn Quill")
        factories.booking(session, workshop, email="kept@example.com", name="Kit Kept")
        preferences.withdraw_all(session, people.find_by_email(session, "quill@example.com"))
    with time_machine.travel(start + timedelta(days=40), tick=False):
        assert retention.sweep(db).removed["people_erased"] == 2
        with db.reader() as session:
            assert people.is_suppressed(session, "quill@example.com")
            assert not people.is_suppressed(session, "kept@example.com")
        with db.transaction() as session:
            result = imports.commit(
                session,
                _sheet(tmp_path, "kept@example.com", 60),
                "newsletter",
                actor="c",
                actor_id=None,
                source="t",
            )
            assert result.to_import == 1
            refused = imports.preview(
                session, _sheet(tmp_path, "quill@example.com", 60), "newsletter"
            )
            assert (refused.to_import, refused.suppressed) == (0, 1)


def test_the_export_shows_what_is_held_against_the_address(db: Database) -> None:
    """A subject access request must show the restrictions applied to them, including one
    kept, as the address's hash, from a record that was deleted."""
    with db.transaction() as session:
        panel_id = factories.panel(session).id
        person = factories.person(session, "noor@example.com")
        preferences.withdraw_all(session, person, notify=False)
        stopped = person.stopped_all_at
        data = rights.export_person(session, person)
        assert data["person"]["stopped_everything_at"] == stopped.isoformat()
        people.erase(session, person, channel="email_link", actor="self")
    with db.transaction() as session:
        again = factories.person(session, "noor@example.com")
        data = rights.export_person(session, again)
        assert data["person"]["address_not_to_be_contacted"] is True
        assert data["person"]["address_not_to_be_invited_to_panels"] is True
        assert data["person"]["declined_panel_invitations_at"] is None
        with pytest.raises(Conflict):
            panels.invite(
                session, panels.get_panel(session, panel_id), email="noor@example.com", name=None
            )
    with db.transaction() as session:
        again = people.find_by_email(session, "noor@example.com")
        ledger.give(session, again, "newsletter", channel="web_form", actor="self")
        data = rights.export_person(session, again)
        assert data["person"]["address_not_to_be_contacted"] is False
        assert data["person"]["stopped_everything_at"] is None, "this record never did"
        assert data["person"]["address_asked_not_to_be_contacted_at"] is not None


def test_agreeing_afresh_after_stopping_everything_lets_a_later_lapse_go_unsuppressed(
    db: Database,
) -> None:
    """Someone who stopped everything, then joined a panel themselves, whose two years then
    simply ran out, may be asked again later, like anyone else whose consent ran out."""
    now = utcnow()
    with time_machine.travel(now - timedelta(days=800), tick=False), db.transaction() as s:
        for email in ("fresh@example.com", "stopped@example.com"):
            preferences.withdraw_all(s, factories.person(s, email), notify=False)
        factories.workshop(s, days=1)
    with time_machine.travel(now - timedelta(days=735), tick=False), db.transaction() as s:
        factories.member(s, factories.panel(s), people.find_by_email(s, "fresh@example.com"))
        workshop = factories.workshop(s, days=1, title="Toddler talk")
        factories.booking(s, workshop, "stopped@example.com")
    retention.sweep(db)
    with db.reader() as session:
        assert people.find_by_email(session, "fresh@example.com") is None
        assert not people.is_suppressed(session, "fresh@example.com")
        assert people.find_by_email(session, "stopped@example.com") is None
        assert people.is_suppressed(session, "stopped@example.com")


def test_moving_to_an_address_that_opted_out_is_no_opt_out_of_one_s_own(
    db: Database, tmp_path: Path
) -> None:
    """The mover never opted out: when their membership simply runs out they are not
    suppressed. The address keeps its old cutoff for imports all the same."""
    now = utcnow()
    with time_machine.travel(now - timedelta(days=760), tick=False), db.transaction() as s:
        mover = factories.person(s, "mover@example.com")
        factories.member(s, factories.panel(s), mover)
    with time_machine.travel(now - timedelta(days=750), tick=False), db.transaction() as s:
        old = factories.consenting(s, "newsletter", email="shared@example.com")
        people.erase(s, old, channel="email_link", actor="self")
    with time_machine.travel(now - timedelta(days=740), tick=False), db.transaction() as s:
        mover = people.find_by_email(s, "mover@example.com")
        preferences.request_email_change(s, mover, "shared@example.com")
        ref = preferences._address_ref(s, "shared@example.com")
        preferences.confirm_email_change(s, mover, ref)
        assert not people.is_suppressed(s, "shared@example.com")
    retention.sweep(db)
    with db.reader() as session:
        assert people.find_by_email(session, "shared@example.com") is None
        assert not people.is_suppressed(session, "shared@example.com")
        result = imports.preview(session, _sheet(tmp_path, "shared@example.com", 755), "newsletter")
    assert (result.to_import, result.suppressed) == (0, 1)


def test_the_cutoff_outlives_a_person_erased_without_suppression(
    db: Database, tmp_path: Path
) -> None:
    """A booker stops everything, joins a panel afresh, and the panel concludes: they are
    erased unsuppressed, but a form dated before they stopped is still not imported."""
    now = utcnow()
    with time_machine.travel(now - timedelta(days=30), tick=False), db.transaction() as s:
        preferences.withdraw_all(s, factories.person(s, "rhea@example.com"), notify=False)
    with time_machine.travel(now - timedelta(days=20), tick=False), db.transaction() as s:
        panel = factories.panel(s)
        factories.member(s, panel, people.find_by_email(s, "rhea@example.com"))
        panel_id = panel.id
    with time_machine.travel(now - timedelta(days=10), tick=False), db.transaction() as s:
        panels.conclude(s, panels.get_panel(s, panel_id))
    retention.sweep(db)
    with db.reader() as session:
        assert people.find_by_email(session, "rhea@example.com") is None
        assert not people.is_suppressed(session, "rhea@example.com")
        erased = session.exec(select(Person).where(Person.erased_at.is_not(None))).one()
        assert erased.stopped_all_at is None, "the date would tie the record to the hash"
        for days_ago, imported in ((40, 0), (25, 1)):
            result = imports.preview(
                session, _sheet(tmp_path, "rhea@example.com", days_ago), "newsletter"
            )
            assert result.to_import == imported, days_ago


def test_an_address_that_opted_out_keeps_its_cutoff_once_someone_agrees_there_again(
    db: Database, tmp_path: Path
) -> None:
    """Agreeing afresh at an address that was suppressed lifts it; a paper form dated
    before the opt-out must still not be imported, for any purpose."""
    now = utcnow()
    with time_machine.travel(now - timedelta(days=300), tick=False), db.transaction() as s:
        old = factories.consenting(s, "newsletter", email="optout@example.com")
        people.erase(s, old, channel="email_link", actor="self")
    with db.transaction() as session:
        again = factories.person(session, "optout@example.com")
        ledger.give(session, again, "workshops", channel="web_form", actor="self")
        assert not people.is_suppressed(session, "optout@example.com")
    for days_ago, imported in ((400, 0), (100, 1)):
        with db.reader() as session:
            result = imports.preview(
                session, _sheet(tmp_path, "optout@example.com", days_ago), "newsletter"
            )
        assert result.to_import == imported, days_ago


def test_the_cutoff_is_the_latest_opt_out_of_the_address(db: Database, tmp_path: Path) -> None:
    now = utcnow()
    for days_ago in (300, 100):
        with time_machine.travel(now - timedelta(days=days_ago), tick=False):
            with db.transaction() as session:
                holder = factories.consenting(session, "newsletter", email="passed@example.com")
                people.erase(session, holder, channel="email_link", actor="self")
            with db.transaction() as session:
                again = factories.person(session, "passed@example.com")
                ledger.give(session, again, "workshops", channel="web_form", actor="self")
    with db.reader() as session:
        result = imports.preview(session, _sheet(tmp_path, "passed@example.com", 200), "newsletter")
    assert (result.to_import, result.suppressed) == (0, 1)


def _move(session: Session, person: Person, new: str) -> None:
    preferences.request_email_change(session, person, new)
    preferences.confirm_email_change(session, person, preferences._address_ref(session, new))


@pytest.mark.parametrize("everything", [True, False])
def test_the_address_left_behind_keeps_its_cutoff(
    db: Database, tmp_path: Path, everything: bool
) -> None:
    """The record that says they asked us to stop moves with them to the new address;
    the old one must not come back from a spreadsheet as agreeing."""
    now = utcnow()
    with time_machine.travel(now - timedelta(days=60), tick=False), db.transaction() as s:
        factories.consenting(s, "newsletter", email="old@example.com")
        factories.consenting(s, "newsletter", email="stays@example.com")
    with time_machine.travel(now - timedelta(days=30), tick=False), db.transaction() as s:
        rhea = people.find_by_email(s, "old@example.com")
        if everything:
            preferences.withdraw_all(s, rhea, notify=False)
        else:
            ledger.withdraw(s, rhea, "newsletter", channel="web_form", actor="self")
    with time_machine.travel(now - timedelta(days=20), tick=False), db.transaction() as s:
        _move(s, people.find_by_email(s, "old@example.com"), "new@example.com")
        _move(s, people.find_by_email(s, "stays@example.com"), "moved@example.com")
    for left, imported in (("old@example.com", 0), ("stays@example.com", 1)):
        with db.reader() as session:
            result = imports.preview(session, _sheet(tmp_path, left, 45), "newsletter")
        assert result.to_import == imported, left


def test_the_data_page_tells_a_mover_about_the_address_not_about_them(
    app: Flask, client: FlaskClient
) -> None:
    db = app.extensions["consent.db"]
    with db.transaction() as s:
        ann = factories.consenting(s, "newsletter", email="shared@example.com")
        people.erase(s, ann, channel="email_link", actor="self")
        factories.consenting(s, "workshops", email="ben@example.com")
    with db.transaction() as s:
        _move(s, people.find_by_email(s, "ben@example.com"), "shared@example.com")
        path = "/manage/" + links.make_token(
            db.settings, people.find_by_email(s, "shared@example.com"), "manage"
        )
    page = text(client.get(f"{path}/data"))
    assert "opted out" not in page and "You asked us to stop everything" not in page
    assert "we were asked to stop contacting this email address" in page


def test_mailchimp_re_subscribing_an_address_that_asked_us_to_stop_is_undone(
    configured: Callable[..., Database],
    mailchimp_settings: dict[str, str],
    mailchimp_fake: FakeMailchimp,
) -> None:
    """Erased without suppression (they agreed to a workshop after stopping everything),
    the address is then put back in the Mailchimp audience from an old list."""
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        rhea = factories.consenting(session, "newsletter", email="rhea@example.com")
        preferences.withdraw_all(session, rhea, notify=False)
    with time_machine.travel(utcnow() + timedelta(minutes=1), tick=True), db.transaction() as s:
        rhea = people.find_by_email(s, "rhea@example.com")
        ledger.give(s, rhea, "workshops", channel="web_form", actor="self")
        people.scrub(s, [rhea.id], reason="nothing_held", suppress_ids=set())
    with time_machine.travel(utcnow() + timedelta(minutes=2), tick=True):
        Pusher(db, poll_interval=0.01).push()
        reconcile(db)
    assert md5("rhea@example.com") not in mailchimp_fake.members
    with db.reader() as session:
        assert not people.is_suppressed(session, "rhea@example.com")
    with time_machine.travel(utcnow() + timedelta(minutes=5), tick=True):
        mailchimp_fake.add_member("rhea@example.com", "subscribed")
    with time_machine.travel(utcnow() + timedelta(hours=1), tick=True):
        reconcile(db)
        Pusher(db, poll_interval=0.01).push()
    assert mailchimp_fake.members[md5("rhea@example.com")]["status"] == "unsubscribed"
