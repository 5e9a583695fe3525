"""Retention with time travel: two years, renewal, opt-out, panel end, workshops, erasure."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from datetime import UTC, date, datetime, timedelta

import pytest
import time_machine
from flask import Flask
from sqlalchemy import event, func, select, text, update
from sqlmodel import Session

from consent.config import Settings
from consent.db import Database
from consent.errors import Conflict, Erased, NotConsented
from consent.models import (
    Booking,
    ConsentEvent,
    JobRun,
    LinkRequest,
    Outbox,
    Panel,
    PanelMembership,
    PanelProfile,
    PanelSession,
    PendingSignup,
    Person,
    RetentionRun,
    SessionNote,
    StatCounter,
    Suppression,
)
from consent.services import (
    admin_users,
    audit,
    casework,
    imports,
    ledger,
    link_requests,
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
from consent.timeutil import LONDON, london_date, utcnow
from mailers.outbox import OutboxWorker
from tests import factories
from tests.helpers import (
    Beside,
    child_environment,
    crossing_writers_only,
    deliver_and_purge,
    find_anywhere,
    meanwhile,
    meanwhile_erased,
    meanwhile_moved,
    until_someone_waits_for_a_lock,
)
from tests.web import csrf, hidden_fields, link_in, mails, one_click
from tests.web import text as page_text

TWO_YEARS = timedelta(days=730)
SECRETS = ["Quentin Marchbanks", "quentin@example.com", "SW9 8QZ", "a hearing loop"]


def _member(
    db: Database,
    email: str = "quentin@example.com",
    name: str = "Quentin Marchbanks",
    panel: str = "Northfield Parent Carer Panel",
    postcode: str = "SW9 8QZ",
) -> int:
    with db.transaction() as session:
        person = people.find_or_create(session, email, name=name)
        found = session.execute(select(Panel).where(Panel.name == panel)).scalar()
        target = found or factories.panel(session, name=panel)
        factories.member(
            session, target, person, postcode=postcode, special={"needs": "Uses a hearing loop"}
        )
        return person.id


def _counters(db: Database) -> dict[tuple[str, str, str, str], int]:
    with db.reader() as session:
        rows = session.execute(
            select(
                StatCounter.metric,
                StatCounter.scope,
                StatCounter.dimension,
                StatCounter.value,
                StatCounter.count,
            ).where(StatCounter.metric.like("panel.joined%"))
        ).all()
    return {tuple(r[:4]): r[4] for r in rows}


def test_no_renewal_reminder_asks_a_member_to_stay_on_a_panel_that_has_concluded(
    db: Database,
) -> None:
    """The sweep that ends a concluded panel's memberships runs hourly, like the reminders:
    a reminder sent between the two would ask a member to stay on a panel that is over."""
    start = utcnow()
    with time_machine.travel(start, tick=False), db.transaction() as session:
        ended = factories.panel(session, "Ended Parent Carer Panel")
        factories.member(session, ended, factories.person(session, "ended@example.com"))
        going = factories.panel(session, "Riverside Parent Carer Panel")
        factories.member(session, going, factories.person(session, "going@example.com"))
        panels.conclude(session, ended)
    with (
        time_machine.travel(start + TWO_YEARS - timedelta(days=30), tick=False),
        db.transaction() as session,
    ):
        assert reminders.renewal_reminders(session) == 1
    assert mails(db, "ended@example.com") == []
    assert [m.template for m in mails(db, "going@example.com")] == ["reconsent_reminder"]


def test_two_years_reminders_renewal_and_expiry(app: Flask, db: Database) -> None:
    client = app.test_client()
    start = utcnow()
    with time_machine.travel(start, tick=False):
        stays = _member(db, "stays@example.com", "Stella Stays", postcode="NE1 4ST")
        goes = _member(db)
    before = _counters(db)

    with time_machine.travel(start + TWO_YEARS - timedelta(days=30), tick=False):
        for _ in range(2):
            with db.transaction() as session:
                reminders.renewal_reminders(session)
    for address in ("stays@example.com", "quentin@example.com"):
        assert [m.template for m in mails(db, address)] == ["reconsent_reminder"]
    reminder = mails(db, "stays@example.com")[0]
    assert "will delete your panel information" in reminder.body_text

    with time_machine.travel(start + TWO_YEARS - timedelta(days=20), tick=False):
        renew = link_in(reminder, "renew")
        page = client.get(renew)
        assert "Do you want to stay on the panel?" in page_text(page)
        with db.reader() as session:
            person = session.get(Person, stays)
            assert [e.action for e in ledger.events_for(session, person)] == ["given"]
        done = client.post(renew, data=hidden_fields(page_text(page)))
        assert "You are staying on the panel" in page_text(done)
    with db.reader() as session:
        membership = session.execute(
            select(PanelMembership).where(PanelMembership.person_id == stays)
        ).scalar_one()
        assert membership.expires_at >= start + TWO_YEARS - timedelta(days=20) + TWO_YEARS
        assert membership.renewed_at == start + TWO_YEARS - timedelta(days=20)
        assert membership.joined_at == start
    assert f"until {london_date(membership.expires_at)}" in page_text(done)

    with (
        time_machine.travel(start + TWO_YEARS - timedelta(days=7), tick=False),
        db.transaction() as session,
    ):
        reminders.renewal_reminders(session)
    assert [m.template for m in mails(db, "quentin@example.com")] == ["reconsent_reminder"] * 2
    assert len(mails(db, "stays@example.com")) == 1

    with time_machine.travel(start + TWO_YEARS + timedelta(days=1), tick=False):
        report = retention.sweep(db)
    assert report.removed["consents_expired.panel_contact"] == 1
    assert report.removed["people_erased"] == 1

    with db.reader() as session:
        gone = session.get(Person, goes)
        assert gone.erased_at is not None
        assert [e.action for e in ledger.events_for(session, gone)] == ["given", "expired"]
        assert session.execute(select(func.count()).select_from(PanelProfile)).scalar() == 1
        assert session.execute(select(func.count()).select_from(Suppression)).scalar() == 0, (
            "consent that ran out is not an opt-out"
        )
        assert ledger.verify(session).ok
    deliver_and_purge(db)
    assert find_anywhere(db.engine, SECRETS) == []
    assert _counters(db) == before


def test_a_concluded_panel_s_data_is_destroyed(db: Database) -> None:
    first = _member(db, "a@example.com", "Ann Alone")
    both = _member(db, "b@example.com", "Ben Both")
    _member(db, "b@example.com", "Ben Both", panel="Riverside SEND Parent Carer Panel")
    with db.transaction() as session:
        panel = session.execute(
            select(Panel).where(Panel.name == "Northfield Parent Carer Panel")
        ).scalar_one()
        members = session.execute(
            select(PanelMembership).where(PanelMembership.panel_id == panel.id)
        ).scalars()
        ann = next(m for m in members if m.person_id == first)
        meeting = factories.meeting(session, panel, days=0, recorded=False)
        author, _ = admin_users.create_admin(
            session, "coordinator@example.gov.uk", "coordinator", "a long enough password"
        )
        panels.add_note(session, meeting, "Ann Alone led the discussion", author_id=author.id)
        panels.add_note(
            session, meeting, "Ann asked for a ramp", author_id=author.id, membership_id=ann.id
        )
        meeting_id, ann_id, author_id = meeting.id, ann.id, author.id
        panels.conclude(session, panel)
    report = retention.sweep(db)
    assert report.removed["session_notes_destroyed"] == 1
    with db.reader() as session:
        assert session.execute(select(SessionNote)).scalars().all() == []
        meeting = session.get(PanelSession, meeting_id)
        with pytest.raises(Conflict, match="no longer kept"):
            panels.add_note(
                session, meeting, "After she left", author_id=author_id, membership_id=ann_id
            )
    assert report.removed["memberships_panel_concluded"] == 2
    assert report.removed["panels_concluded"] == 1
    with db.reader() as session:
        panel = session.execute(
            select(Panel).where(Panel.name == "Northfield Parent Carer Panel")
        ).scalar_one()
        assert panel.data_destroyed_at is not None
        for person_id, status in ((first, "expired"), (both, "given")):
            person = session.get(Person, person_id)
            state = ledger.states_for(session, person)["panel_contact"]
            assert state.status == status
        profiles = session.execute(select(PanelProfile)).scalars().all()
        assert len(profiles) == 1
        assert session.get(Person, first).erased_at is not None
        assert session.get(Person, both).erased_at is None


def test_a_membership_that_outlived_its_consent_is_ended(db: Database) -> None:
    """The second also passed its own limit: the step for those ends it first, and a dry
    run counts it there only. A membership that ended long ago is not counted again."""
    missed = [_member(db), _member(db, "late@example.com", "Lee Late")]
    _member(db, panel="Southfield Parent Carer Panel")
    with db.transaction() as session:
        southfield = session.execute(
            select(Panel.id).where(Panel.name == "Southfield Parent Carer Panel")
        ).scalar_one()
        panels.end_memberships_of(
            session, [missed[0]], reason="left", at=utcnow(), panel_id=southfield
        )
    with db.engine.begin() as conn:
        conn.execute(
            text("UPDATE consent_state SET status = 'withdrawn' WHERE person_id IN (:p, :q)"),
            {"p": missed[0], "q": missed[1]},
        )
        conn.execute(
            text("UPDATE panel_membership SET expires_at = :past WHERE person_id = :q"),
            {"past": utcnow() - timedelta(days=1), "q": missed[1]},
        )
    dry = retention.sweep(db, dry_run=True)
    report = retention.sweep(db)
    for done in (dry, report):
        assert done.removed["memberships_without_consent"] == 1
        assert done.removed["memberships_expired"] == 1
    with db.reader() as session:
        assert session.execute(select(PanelProfile)).scalars().all() == []


def _booked_workshop(db: Database, email: str = "booker@example.com") -> int:
    with db.transaction() as session:
        workshop = factories.workshop(session, days=1, capacity=5)
        factories.booking(session, workshop, email)
        return workshop.id


def test_workshop_details_go_after_the_keep_time(db: Database) -> None:
    workshop_id = _booked_workshop(db)
    with db.reader() as session:
        ended = workshops.get_workshop(session, workshop_id).ends_at
    keep = timedelta(days=db.settings.workshop_keep_days)
    with time_machine.travel(ended + keep - timedelta(minutes=1), tick=False):
        assert retention.sweep(db).removed["bookings_purged"] == 0
    with time_machine.travel(ended + keep + timedelta(minutes=1), tick=False):
        report = retention.sweep(db)
    assert report.removed["bookings_purged"] == 1
    assert report.removed["people_erased"] == 1
    with db.reader() as session:
        booking = session.execute(select(Booking)).scalar_one()
        assert booking.name is None and booking.email is None and booking.setting is None
        assert booking.purged_at is not None
    deliver_and_purge(db)
    assert find_anywhere(db.engine, ["Bea Booker", "booker@example.com", "Little Acorns"]) == []


def test_closing_evaluation_neither_hastens_nor_delays_the_deletion(db: Database) -> None:
    """The notice promises no later than 30 days after the workshop, closed or not."""
    open_one = _booked_workshop(db, "open@example.com")
    closed_one = _booked_workshop(db, "closed@example.com")
    with db.transaction() as session:
        workshops.close_evaluation(session, workshops.get_workshop(session, closed_one))
        ended = workshops.get_workshop(session, open_one).ends_at
    keep = timedelta(days=db.settings.workshop_keep_days)
    with time_machine.travel(ended + timedelta(days=2), tick=False):
        assert retention.sweep(db).removed["bookings_purged"] == 0
    with time_machine.travel(ended + keep + timedelta(hours=1), tick=False):
        assert retention.sweep(db).removed["bookings_purged"] == 2


def test_a_cancelled_workshop_s_bookers_go_once_they_have_been_told(db: Database) -> None:
    """Nothing is left to do for a cancelled workshop, so its bookers' details go at the
    first sweep after the cancellation emails have gone, not a month after its date; and
    not before, since erasing a booker cancels their queued mail."""
    with db.transaction() as session:
        workshop = factories.workshop(session, days=20, capacity=5)
        factories.booking(session, workshop, "bea@example.com")
        factories.booking(session, workshop, "cy@example.com", "Cy Booker")
        assert workshops.cancel_workshop(session, workshop) == 2
        workshop_id = workshop.id
    booked = StatCounter.metric == "workshop.booked"
    assert retention.sweep(db).removed["bookings_purged"] == 0
    assert [m.status for m in mails(db, template="workshop_cancelled")] == ["queued"] * 2
    OutboxWorker(db).run_once()
    dry = retention.sweep(db, dry_run=True)
    assert f"workshop {workshop_id}: 2 booking(s) would be purged" in dry.would
    with db.reader() as session:
        counted = session.execute(select(func.sum(StatCounter.count)).where(booked)).scalar()
    report = retention.sweep(db)
    assert report.removed["bookings_purged"] == 2 and report.removed["people_erased"] == 2
    assert [m.status for m in mails(db, template="workshop_cancelled")] == ["sent"] * 2
    with db.reader() as session:
        assert workshops.get_workshop(session, workshop_id).details_purged_at is not None
        assert session.execute(select(func.sum(StatCounter.count)).where(booked)).scalar() == (
            counted
        )
    deliver_and_purge(db)
    assert find_anywhere(db.engine, ["Bea Booker", "bea@example.com", "Little Acorns"]) == []


def test_people_with_nothing_held_are_erased_and_opt_outs_suppressed(db: Database) -> None:
    with db.transaction() as session:
        keeps = factories.consenting(session, "newsletter", email="keeps@example.com").id
        leaves = factories.consenting(session, "newsletter", email="leaves@example.com")
        ledger.withdraw(session, leaves, "newsletter", channel="email_link", actor="self")
        signups.request_subscription(
            session, email="unconfirmed@example.com", name=None, shown={"newsletter": 1}
        )
    report = retention.sweep(db)
    assert report.removed["people_erased"] == 1
    with db.reader() as session:
        assert people.find_by_email(session, "leaves@example.com") is None
        assert people.is_suppressed(session, "leaves@example.com")
        assert session.get(Person, keeps).erased_at is None and session.get(Person, keeps).review_at
        assert people.find_by_email(session, "unconfirmed@example.com") is not None
    with time_machine.travel(utcnow() + timedelta(days=8)):
        report = retention.sweep(db)
    assert report.removed["people_erased"] == 1
    assert report.removed["pending_signups_purged"] == 1
    with db.reader() as session:
        assert people.find_by_email(session, "unconfirmed@example.com") is None
        assert not people.is_suppressed(session, "unconfirmed@example.com")
        assert session.execute(select(PendingSignup)).scalars().all() == []


def test_someone_waiting_on_a_sign_up_is_erased_once_it_lapses(db: Database) -> None:
    """The sweep waits for an unconfirmed sign-up, then comes back when it is purged."""
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="again@example.com")
        ledger.withdraw(session, person, "newsletter", channel="email_link", actor="self")
        signups.request_subscription(
            session, email="again@example.com", name=None, shown={"newsletter": 1}
        )
    assert retention.sweep(db).removed["people_erased"] == 0
    for days in (8, 9):
        with time_machine.travel(utcnow() + timedelta(days=days)):
            retention.sweep(db)
    with db.reader() as session:
        assert people.find_by_email(session, "again@example.com") is None
        assert people.is_suppressed(session, "again@example.com")


def test_an_invited_person_is_kept_while_their_join_link_works(
    app: Flask, db: Database, settings: Settings
) -> None:
    with db.transaction() as session:
        panel = factories.panel(session)
        panels.invite(session, panel, email="invited@example.com", name="Ivy")
    join = link_in(mails(db, "invited@example.com")[0], "join")
    start = utcnow()
    with time_machine.travel(start + timedelta(days=20)):
        assert retention.sweep(db).removed["people_erased"] == 0
        client = app.test_client()
        assert client.get(join).status_code == 200
    life = timedelta(seconds=settings.link_max_age["join"], hours=2)
    with time_machine.travel(start + life):
        assert retention.sweep(db).removed["people_erased"] == 1
    with db.reader() as session:
        assert people.find_by_email(session, "invited@example.com") is None


def test_an_invitation_keeps_someone_who_then_stops_everything_else(
    db: Database, settings: Settings
) -> None:
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="ivy@example.com")
        panels.invite(session, factories.panel(session), email="ivy@example.com", name="Ivy")
        ledger.withdraw(session, person, "newsletter", channel="email_link", actor="self")
    start = utcnow()
    with time_machine.travel(start + timedelta(days=1)):
        assert retention.sweep(db).removed["people_erased"] == 0
    with time_machine.travel(start + timedelta(days=2)):
        assert retention.sweep(db).removed["people_erased"] == 0
    life = timedelta(seconds=settings.link_max_age["join"], hours=2)
    with time_machine.travel(start + life):
        assert retention.sweep(db).removed["people_erased"] == 1
    with db.reader() as session:
        assert people.find_by_email(session, "ivy@example.com") is None


def test_stopping_everything_ends_the_hold_an_invitation_had(db: Database) -> None:
    """'Stop everything' declines invitations, so one already sent keeps them no longer:
    they are told their details will go, and the next sweep erases them."""
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="ivy@example.com")
        panels.invite(session, factories.panel(session), email="ivy@example.com", name="Ivy")
        preferences.withdraw_all(session, person)
    [told] = mails(db, template="consent_withdrawn")
    assert "we will delete your details within 30 days" in (told.body_text or "")
    with time_machine.travel(utcnow() + timedelta(minutes=1)):
        assert retention.sweep(db).removed["people_erased"] == 1


def test_a_declined_invitation_is_remembered_after_the_person_is_erased(
    app: Flask, db: Database
) -> None:
    """Someone who asked not to be invited has nothing else held and is erased; the next
    invitation must not find a fresh record and send."""
    with db.transaction() as session:
        panel_id = factories.panel(session).id
        panels.invite(
            session, panels.get_panel(session, panel_id), email="no@example.com", name=None
        )
    one_click(app.test_client(), link_in(mails(db, "no@example.com")[0], "unsubscribe"))
    with time_machine.travel(utcnow() + timedelta(days=32)):
        assert retention.sweep(db).removed["people_erased"] == 1
        with db.reader() as session:
            assert people.find_by_email(session, "no@example.com") is None
            assert not people.is_suppressed(session, "no@example.com")
        with db.transaction() as session, pytest.raises(Conflict) as refused:
            panels.invite(
                session, panels.get_panel(session, panel_id), email="No@example.com", name=None
            )
        assert "asked not to be invited to panels" in refused.value.message
        assert len(mails(db, template="panel_invitation")) == 1
        with db.transaction() as session:
            asked = signups.request_subscription(
                session, email="no@example.com", name=None, shown=_shown(session, "newsletter")
            )
            again = people.find_by_email(session, "no@example.com")
            assert again is not None
            signups.confirm(session, again, asked)
            assert ledger.has_consent(session, again, "newsletter")
        with db.transaction() as session, pytest.raises(Conflict):
            panels.invite(
                session, panels.get_panel(session, panel_id), email="no@example.com", name=None
            )

        with db.transaction() as session:
            panel = panels.get_panel(session, panel_id)
            pending = signups.request_panel(
                session,
                panel,
                email="no@example.com",
                name="Noor",
                phone=None,
                profile=panels.ProfileInput(),
                recordings=False,
                shown=_shown(session, "panel_contact"),
            )
            signups.confirm(session, people.find_by_email(session, "no@example.com"), pending)
        with db.transaction() as session:
            other = factories.panel(session, name="Southfield Parent Carer Panel")
            panels.invite(session, other, email="no@example.com", name=None)
        assert len(mails(db, "no@example.com", template="panel_invitation")) == 1


def test_unconfirmed_answers_to_join_a_concluded_panel_go_with_the_panel(db: Database) -> None:
    """Answers sent to join (special category ones among them) wait encrypted for their
    link; once the panel has concluded they can never be used, so they go with its data
    rather than lingering for the rest of the week."""
    with db.transaction() as session:
        panel = factories.panel(session)
        panel_id = panel.id
        signups.request_panel(
            session,
            panel,
            email="late@example.com",
            name="Lena Late",
            phone="01632 960 001",
            profile=panels.ProfileInput(special_category={"disability": "Yes, I do"}),
            recordings=False,
            shown=_shown(session, "panel_contact"),
        )
        panels.conclude(session, panel)
    dry = retention.sweep(db, dry_run=True)
    assert dry.removed["pending_signups_purged"] == 1
    assert dry.removed["people_erased"] == 1
    report = retention.sweep(db)
    assert report.removed["pending_signups_purged"] == 1
    with db.reader() as session:
        left = session.execute(
            select(func.count())
            .select_from(PendingSignup)
            .where(PendingSignup.panel_id == panel_id)
        ).scalar_one()
        assert left == 0
    assert report.removed["people_erased"] == 1, "nothing else held them"


def test_a_dry_run_counts_a_lapsed_answer_to_join_a_concluded_panel_once(db: Database) -> None:
    """Answers whose link has lapsed go with the concluded panel, before the step that removes
    lapsed answers gets to them: a dry run must not count them for both steps."""
    start = utcnow()
    with time_machine.travel(start, tick=False), db.transaction() as session:
        panel = factories.panel(session)
        for email in ("lapsed@example.com", "fresh@example.com"):
            signups.request_panel(
                session,
                panel,
                email=email,
                name="Lena Late",
                phone=None,
                profile=panels.ProfileInput(),
                recordings=False,
                shown=_shown(session, "panel_contact"),
            )
            session.flush()
            if email == "lapsed@example.com":
                session.execute(
                    update(PendingSignup)
                    .where(PendingSignup.expires_at > start - timedelta(days=1))
                    .values(expires_at=start - timedelta(hours=1))
                )
        panels.conclude(session, panel)
    with time_machine.travel(start, tick=False):
        dry = retention.sweep(db, dry_run=True)
        done = retention.sweep(db)
    assert done.removed["pending_signups_purged"] == 2
    assert dry.removed["pending_signups_purged"] == 2


def _shown(session: Session, key: str) -> dict[str, int]:
    notice = notices.current_notice(session, notices.get_purpose(session, key))
    return {key: notice.id}


def test_an_open_rights_request_holds_the_person_until_it_is_closed(db: Database) -> None:
    """An access request must not be answered by the sweep erasing what was asked for."""
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="asks@example.com")
        request = rights.log_request(
            session,
            kind="access",
            channel="post",
            received=utcnow().astimezone(LONDON).date().isoformat(),
            requester="Asha Asks",
            email="asks@example.com",
            actor_id=None,
            actor="dpo",
        )
        ledger.withdraw(session, person, "newsletter", channel="email_link", actor="self")
        request_id = request.id
    assert retention.sweep(db).removed["people_erased"] == 0
    with db.transaction() as session:
        rights.update_request(
            session,
            rights.get_request(session, request_id),
            status="completed",
            outcome="Sent a copy by post",
            actor_id=None,
            actor="dpo",
        )
    assert retention.sweep(db).removed["people_erased"] == 1
    with db.reader() as session:
        assert people.find_by_email(session, "asks@example.com") is None


def test_an_import_file_nobody_confirmed_is_removed_after_a_day(
    db: Database, settings: Settings
) -> None:
    folder = imports.upload_folder(settings.instance_path)
    abandoned, fresh = folder / "abandoned.csv", folder / "fresh.csv"
    for path in (abandoned, fresh):
        path.write_text("email,consented_at,evidence\nsomeone@example.com,2026-01-01,form\n")
    two_days_ago = time.time() - 2 * 24 * 3600
    os.utime(abandoned, (two_days_ago, two_days_ago))
    dry = retention.sweep(db, dry_run=True)
    assert dry.removed["import_files_removed"] == 1 and abandoned.exists()
    assert retention.sweep(db).removed["import_files_removed"] == 1
    assert not abandoned.exists() and fresh.exists()


def test_a_dry_run_lists_and_changes_nothing(db: Database) -> None:
    start = utcnow()
    with time_machine.travel(start, tick=False):
        person_id = _member(db)
        with db.transaction() as session:
            reader = factories.consenting(session, "newsletter", email="reader@example.com")
            outbox.queue(session, "welcome", person=reader, context={})
        OutboxWorker(db).run_once()
    with db.engine.connect() as conn:
        before = conn.execute(text("SELECT COUNT(*) FROM consent_event")).scalar()
    with time_machine.travel(start + TWO_YEARS + timedelta(days=1), tick=False):
        report = retention.sweep(db, dry_run=True)
        assert report.removed["consents_expired.panel_contact"] == 1
        assert any("would expire" in line for line in report.would)
        assert f"person {person_id} would be erased: nothing held" in report.would
        with db.reader() as session:
            assert session.execute(select(func.count()).select_from(RetentionRun)).scalar() == 0
            events = session.execute(select(func.count()).select_from(ConsentEvent)).scalar()
            assert events == before
            assert session.execute(select(PanelProfile)).scalars().all()
            assert session.execute(select(Outbox.body_text)).scalar_one()
        done = retention.sweep(db)
    for kind in ("consents_expired.panel_contact", "people_erased", "mail_bodies_purged"):
        assert report.removed[kind] == done.removed[kind] > 0, kind


def test_records_of_job_runs_are_kept_ninety_days(db: Database) -> None:
    now = utcnow()
    with db.transaction() as session:
        for days in (120, 91, 89, 1):
            started = now - timedelta(days=days)
            session.add(JobRun(job="deliver_mail", runner="t", started_at=started, status="ok"))
    dry = retention.sweep(db, dry_run=True, now=now)
    assert dry.removed["job_runs_removed"] == 2
    done = retention.sweep(db, now=now, batch_size=1)
    assert done.removed["job_runs_removed"] == 2
    with db.reader() as session:
        kept = session.execute(select(JobRun.started_at).order_by(JobRun.started_at)).scalars()
        assert [round((now - at) / timedelta(days=1)) for at in kept] == [89, 1]


def test_a_dry_run_foretells_a_concluded_panel_and_a_finished_workshop(db: Database) -> None:
    """Including who is erased because of them: people whose last reason to be held ends."""
    ann = _member(db, "a@example.com", "Ann Alone")
    ben = _member(db, "b@example.com", "Ben Both")
    left = _member(db, "c@example.com", "Cat Left")
    _member(db, "d@example.com", "Dee Stays")
    _member(db, "d@example.com", "Dee Stays", panel="Southfield Parent Carer Panel")
    workshop_id = _booked_workshop(db)
    with db.transaction() as session:
        factories.consenting(session, "panel_contact", email="fay@example.com")
        factories.booking(session, workshops.get_workshop(session, workshop_id), "fay@example.com")
    with db.reader() as session:
        booker = people.find_by_email(session, "booker@example.com").id
    start = utcnow()
    with time_machine.travel(start + timedelta(days=10), tick=False):
        assert retention.sweep(db).removed["people_erased"] == 0
        with db.transaction() as session:
            ledger.withdraw(
                session,
                session.get(Person, left),
                "panel_contact",
                channel="web_form",
                actor="self",
            )
            panel = session.execute(
                select(Panel).where(Panel.name == "Northfield Parent Carer Panel")
            ).scalar_one()
            panels.conclude(session, panel)
            panel_id = panel.id
    with time_machine.travel(start + timedelta(days=40), tick=False):
        with db.transaction() as session:
            workshops.close_evaluation(session, workshops.get_workshop(session, workshop_id))
        dry = retention.sweep(db, dry_run=True)
        assert f"panel {panel_id} concluded: 3 membership(s) would end" in dry.would
        assert f"workshop {workshop_id}: 2 booking(s) would be purged" in dry.would
        with db.reader() as session:
            assert session.get(Panel, panel_id).data_destroyed_at is None
            assert len(session.execute(select(PanelProfile)).scalars().all()) == 4
            assert set(session.execute(select(Booking.purged_at)).scalars()) == {None}
        done = retention.sweep(db)
        erased = {line for line in dry.would if "would be erased" in line}
    assert erased == {f"person {i} would be erased: nothing held" for i in (ann, ben, left, booker)}
    for kind in ("memberships_panel_concluded", "bookings_purged", "people_erased"):
        assert dry.removed[kind] == done.removed[kind] > 0, kind


def test_a_dry_run_counts_what_the_sweep_then_does(db: Database) -> None:
    """Each step's count in a dry run allows for what the steps before it end: a member
    whose consent runs out leaves with it and takes their recordings consent too, and a
    concluded panel's members on no other panel lose their panel consents; a new address
    never confirmed is counted once, not again for its person's erasure."""
    start = utcnow()
    with time_machine.travel(start, tick=False):
        early = [
            _member(db, "ann@example.com", "Ann Early"),
            _member(db, "eve@example.com", "Eve South", panel="Southfield Parent Carer Panel"),
        ]
        with db.transaction() as session:
            ann = session.get(Person, early[0])
            preferences.request_email_change(session, ann, "ann.new@example.com")
    with time_machine.travel(start + timedelta(days=30), tick=False), db.transaction() as session:
        for person_id in early:
            ledger.give(
                session,
                session.get(Person, person_id),
                "panel_recordings",
                channel="web_form",
                actor="self",
            )
    with time_machine.travel(start + timedelta(days=365), tick=False):
        ben = _member(db, "ben@example.com", "Ben Only")
        _member(db, "cat@example.com", "Cat Both")
        _member(db, "cat@example.com", "Cat Both", panel="Southfield Parent Carer Panel")
        _member(db, "dee@example.com", "Dee South", panel="Southfield Parent Carer Panel")
        with db.transaction() as session:
            northfield = session.execute(
                select(Panel).where(Panel.name == "Northfield Parent Carer Panel")
            ).scalar_one()
            meeting = factories.meeting(session, northfield, days=0, recorded=False)
            author, _ = admin_users.create_admin(
                session, "coordinator@example.gov.uk", "coordinator", "a long enough password"
            )
            panels.add_note(session, meeting, "A lively session", author_id=author.id)
            bens = session.execute(
                select(PanelMembership.id).where(PanelMembership.person_id == ben)
            ).scalar_one()
            panels.add_note(
                session, meeting, "Ben asked for a ramp", author_id=author.id, membership_id=bens
            )
    concluding = time_machine.travel(start + TWO_YEARS - timedelta(days=1), tick=False)
    with concluding, db.transaction() as session:
        panels.conclude(session, session.get(Panel, northfield.id))
    with time_machine.travel(start + TWO_YEARS + timedelta(days=1), tick=False):
        dry = retention.sweep(db, dry_run=True)
        done = retention.sweep(db)
    expected = {
        "consents_expired.panel_contact": 3,
        "consents_expired.panel_recordings": 2,
        "memberships_panel_concluded": 2,
        "panels_concluded": 1,
        "session_notes_destroyed": 1,
        "people_erased": 3,
        "new_addresses_forgotten": 1,
    }
    assert {k: v for k, v in done.removed.items() if v} == expected
    assert {k: v for k, v in dry.removed.items() if v} == expected


def test_each_run_leaves_proof(db: Database) -> None:
    start = utcnow()
    with time_machine.travel(start, tick=False):
        _member(db)
    with time_machine.travel(start + TWO_YEARS + timedelta(days=1), tick=False):
        retention.sweep(db, trigger="cli")
    with db.reader() as session:
        run = session.execute(select(RetentionRun)).scalar_one()
    assert run.finished_at is not None and run.duration_ms is not None and run.error is None
    removed = json.loads(run.removed)
    assert removed["consents_expired.panel_contact"] == 1 and removed["people_erased"] == 1
    assert run.trigger == "cli"


def test_a_backlog_larger_than_a_batch_is_worked_through_without_skipping_anyone(
    db: Database,
) -> None:
    start = utcnow() - TWO_YEARS - timedelta(days=2)
    due: list[int] = []
    with time_machine.travel(start, tick=False), db.transaction() as session:
        panel = factories.panel(session)
        for index in range(7):
            person = people.find_or_create(session, f"due{index}@example.com", name=f"Due {index}")
            factories.member(session, panel, person)
            if index % 2:
                ledger.give(session, person, "panel_recordings", channel="web_form", actor="self")
            due.append(person.id)
    with db.transaction() as session:
        kept = people.find_or_create(session, "kept@example.com", name="Kept Member")
        factories.member(session, panel, kept)
    statements: list[str] = []

    def capture(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        statements.append(statement)

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        report = retention.sweep(db, batch_size=3)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    assert report.removed["consents_expired.panel_contact"] == 7
    assert report.removed["consents_expired.panel_recordings"] == 3
    assert report.removed["people_erased"] == 7
    walks = [s for s in statements if "ORDER BY consent_state.person_id" in s]
    assert walks, "ten due consents in batches of three should be walked in id order"
    with db.reader() as session:
        for person_id in due:
            person = session.get(Person, person_id)
            assert person.erased_at is not None and person.review_at is None, person_id
        assert session.get(Person, kept.id).erased_at is None
        assert ledger.states_for(session, session.get(Person, kept.id))["panel_contact"].status == (
            "given"
        )
        assert ledger.verify(session).ok


def test_a_sweep_that_finds_nothing_uses_indexes(db: Database, backend: str) -> None:
    if backend != "sqlite":
        pytest.skip("query plans are checked on SQLite")
    _member(db)
    statements: list[tuple[str, object]] = []

    def capture(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if statement.lstrip().upper().startswith("SELECT"):
            statements.append((statement, params))

    event.listen(db.engine, "before_cursor_execute", capture)
    try:
        retention.sweep(db)
    finally:
        event.remove(db.engine, "before_cursor_execute", capture)
    big = (
        "person",
        "consent_state",
        "consent_event",
        "panel_membership",
        "booking",
        "outbox",
        "pending_signup",
        "panel_profile",
    )
    scans = []
    raw = db.engine.raw_connection()
    try:
        for statement, params in statements:
            for row in raw.execute("EXPLAIN QUERY PLAN " + statement, params or ()).fetchall():
                detail = row[-1]
                if detail.startswith("SCAN ") and detail.split()[1] in big:
                    scans.append((detail, statement[:200]))
    finally:
        raw.close()
    assert scans == []


def test_a_sweep_killed_part_way_leaves_no_half_erased_person(
    db: Database, settings: Settings
) -> None:
    start = utcnow() - TWO_YEARS - timedelta(days=2)
    with time_machine.travel(start, tick=False), db.transaction() as session:
        panel = factories.panel(session)
        for index in range(600):
            person = people.find_or_create(
                session, f"many{index}@example.com", name=f"Member Number{index}"
            )
            factories.member(session, panel, person, special={"needs": f"need {index}"})
    env = child_environment(settings)
    command = [sys.executable, "-m", "consent.cli", "retention", "run", "--batch-size", "15"]
    process = subprocess.Popen(command, env=env, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    deadline = time.monotonic() + 60
    while time.monotonic() < deadline:
        with db.reader() as session:
            expired = session.execute(
                select(func.count()).where(ConsentEvent.action == "expired")
            ).scalar()
        if expired >= 30:
            break
        time.sleep(0.02)
    process.send_signal(signal.SIGKILL)
    process.wait()
    with db.reader() as session:
        done = session.execute(
            select(func.count()).where(ConsentEvent.action == "expired")
        ).scalar()
    assert 0 < done < 600, "the kill should land part way through"
    _check_consistent(db)

    rerun = subprocess.run(command, env=env, capture_output=True, text=True, timeout=300)
    assert rerun.returncode == 0, rerun.stderr
    _check_consistent(db)
    with db.reader() as session:
        assert session.execute(select(func.count()).select_from(PanelProfile)).scalar() == 0
        assert (
            session.execute(
                select(func.count()).select_from(Person).where(Person.erased_at.is_(None))
            ).scalar()
            == 0
        )
        assert ledger.verify(session).ok
    deliver_and_purge(db)
    assert find_anywhere(db.engine, ["Member Number", "many1@example.com", "need 1"]) == []


def _check_consistent(db: Database) -> None:
    """Every person whole or wholly erased; every membership with exactly its data."""
    with db.reader() as session:
        for person in session.execute(select(Person)).scalars():
            if person.erased_at is None:
                assert person.email and person.name, person.id
            else:
                assert (person.email, person.name, person.phone, person.postcode) == (None,) * 4
        for membership in session.execute(select(PanelMembership)).scalars():
            profile = session.execute(
                select(PanelProfile).where(PanelProfile.membership_id == membership.id)
            ).scalar()
            state = ledger.states_for(session, session.get(Person, membership.person_id))
            if membership.left_at is None:
                assert profile is not None and state["panel_contact"].status == "given"
            else:
                assert profile is None and state["panel_contact"].status != "given"
        assert ledger.verify(session).ok


def test_a_membership_that_starts_near_its_limit_still_gets_a_notice(db: Database) -> None:
    """An imported agreement can be nearly two years old: its member must not simply vanish."""
    start = utcnow()
    for email, days_ago in (("four@example.com", 726), ("nineteen@example.com", 711)):
        with time_machine.travel(start - timedelta(days=days_ago), tick=False):
            _member(db, email, "Ann Member")
    with db.reader() as session:
        left = {
            row.person_id: round((row.expires_at - start) / timedelta(days=1))
            for row in session.execute(select(PanelMembership)).scalars()
        }
    assert sorted(left.values()) == [4, 19]
    for _ in range(2):
        with time_machine.travel(start, tick=False), db.transaction() as session:
            reminders.renewal_reminders(session)
    assert len(mails(db, "four@example.com", template="reconsent_reminder")) == 1
    assert len(mails(db, "nineteen@example.com", template="reconsent_reminder")) == 1
    later = start + timedelta(days=12, hours=1)
    with time_machine.travel(later, tick=False), db.transaction() as session:
        reminders.renewal_reminders(session)
    assert len(mails(db, "four@example.com", template="reconsent_reminder")) == 1
    assert len(mails(db, "nineteen@example.com", template="reconsent_reminder")) == 2


def test_workshop_reminders_and_evaluation_requests_are_sent_once(app: Flask, db: Database) -> None:
    workshop_id = _booked_workshop(db)
    with db.transaction() as session:
        assert reminders.workshop_reminders(session) == 1
        assert reminders.workshop_reminders(session) == 0
    with time_machine.travel(utcnow() + timedelta(days=1, hours=2)):
        for _ in range(2):
            with db.transaction() as session:
                reminders.evaluation_requests(session)
        [request] = mails(db, template="workshop_evaluation")
        client = app.test_client()
        form = client.get(link_in(request, "feedback"))
        assert "How useful was the workshop?" in page_text(form)
        done = client.post(
            link_in(request, "feedback"),
            data={
                "csrf_token": csrf(page_text(form)),
                "rating": "Useful",
                "comments": "More on naps please",
            },
        )
        assert "Thank you for your feedback" in page_text(done)
    with db.reader() as session:
        booking = session.execute(select(Booking)).scalar_one()
        assert json.loads(booking.evaluation)["rating"] == "Useful"
        rated = session.execute(
            select(StatCounter.count).where(StatCounter.metric == "workshop.evaluated")
        ).scalar()
        assert rated == 1
        assert (
            session.execute(
                select(func.count())
                .select_from(Outbox)
                .where(Outbox.template == "workshop_reminder")
            ).scalar()
            == 1
        )
    assert workshop_id


def _move(db: Database, workshop_id: int, by: timedelta) -> None:
    with db.transaction() as session:
        factories.move_workshop(session, workshops.get_workshop(session, workshop_id), by)


@time_machine.travel(datetime(2030, 3, 12, 12, 0, tzinfo=LONDON), tick=False)
def test_a_workshop_moved_to_another_day_is_reminded_again(db: Database) -> None:
    """Moving it within the day needs no second reminder: the change email says so."""
    workshop_id = _booked_workshop(db)
    with db.transaction() as session:
        assert reminders.workshop_reminders(session) == 1
    _move(db, workshop_id, timedelta(hours=-2))
    with db.transaction() as session:
        assert reminders.workshop_reminders(session) == 0
    _move(db, workshop_id, timedelta(days=7))
    with time_machine.travel(utcnow() + timedelta(days=6, hours=23), tick=False):
        with db.transaction() as session:
            assert reminders.workshop_reminders(session) == 1
            assert reminders.workshop_reminders(session) == 0
        with db.reader() as session:
            moved = workshops.get_workshop(session, workshop_id).starts_at
    first, second = mails(db, template="workshop_reminder")
    assert first.body_text and second.body_text
    assert london_date(moved) not in first.body_text
    assert london_date(moved) in second.body_text


@time_machine.travel(datetime(2030, 3, 12, 8, 0, tzinfo=LONDON), tick=False)
def test_a_reminder_says_today_or_tomorrow_and_a_late_booking_gets_none(db: Database) -> None:
    with db.transaction() as session:
        evening = factories.workshop(session, days=2, title="Evening talk")
        evening.starts_at, evening.ends_at = (
            datetime(2030, 3, 12, 18, 0, tzinfo=LONDON),
            datetime(2030, 3, 12, 19, 0, tzinfo=LONDON),
        )
        factories.booking(session, evening, "early@example.com")
        next_day = factories.workshop(session, days=1, title="Morning talk")
        factories.booking(session, next_day, "morning@example.com")
    with db.transaction() as session:
        session.execute(
            update(Booking)
            .where(Booking.email == "early@example.com")
            .values(booked_at=datetime(2030, 3, 11, 9, 0, tzinfo=LONDON))
        )
    nine = datetime(2030, 3, 12, 9, 0, tzinfo=LONDON)
    with time_machine.travel(nine, tick=False), db.transaction() as session:
        factories.booking(session, workshops.get_workshop(session, evening.id), "late@example.com")
        assert reminders.workshop_reminders(session) == 2
    sent = {m.to_address: m.body_text or "" for m in mails(db, template="workshop_reminder")}
    assert set(sent) == {"early@example.com", "morning@example.com"}
    assert "your workshop is today." in sent["early@example.com"]
    assert "your workshop is tomorrow." in sent["morning@example.com"]


def test_recordings_consent_ends_when_panel_contact_runs_out(db: Database) -> None:
    """Agreed later, recordings would outlast the membership and keep the person held."""
    start = utcnow()
    with time_machine.travel(start, tick=False):
        person_id = _member(db)
    with time_machine.travel(start + timedelta(days=100), tick=False), db.transaction() as session:
        person = session.get(Person, person_id)
        ledger.give(session, person, "panel_recordings", channel="email_link", actor="self")
    with time_machine.travel(start + TWO_YEARS + timedelta(days=1), tick=False):
        report = retention.sweep(db)
    with db.reader() as session:
        person = session.get(Person, person_id)
        statuses = {k: v.status for k, v in ledger.states_for(session, person).items()}
        assert statuses == {"panel_contact": "expired", "panel_recordings": "expired"}
        assert person.erased_at is not None
    assert report.removed["people_erased"] == 1


@pytest.mark.parametrize("swept", [True, False])
def test_renewing_after_expiry_is_refused_clearly(app: Flask, db: Database, swept: bool) -> None:
    """Also in the hour before the sweep records the expiry: the limit itself has passed."""
    from consent import links

    start = utcnow()
    with time_machine.travel(start, tick=False):
        person_id = _member(db)
    with time_machine.travel(start + TWO_YEARS - timedelta(days=1)), db.reader() as session:
        token = links.make_token(
            db.settings, session.get(Person, person_id), "renew", purpose="panel_contact"
        )
    with time_machine.travel(start + TWO_YEARS + timedelta(minutes=40), tick=False):
        if swept:
            with db.transaction() as session:
                ledger.expire_many(session, now=utcnow(), limit=10)
        client = app.test_client()
        page = client.get(f"/renew/{token}")
        response = client.post(f"/renew/{token}", data=hidden_fields(page_text(page)))
    assert response.status_code == 409 and "already ended" in page_text(response)
    with db.reader() as session:
        events = ledger.events_for(session, session.get(Person, person_id))
        assert "renewed" not in [event.action for event in events]


def test_consent_past_its_limit_is_not_in_force_and_can_be_given_afresh(db: Database) -> None:
    """Before the hourly sweep records the expiry, the state still says given."""
    start = utcnow()
    with time_machine.travel(start, tick=False):
        person_id = _member(db)
    later = start + TWO_YEARS + timedelta(minutes=1)
    with time_machine.travel(later, tick=False), db.transaction() as session:
        person = session.get(Person, person_id)
        assert ledger.states_for(session, person)["panel_contact"].status == "given"
        assert not ledger.has_consent(session, person, "panel_contact")
        with pytest.raises(NotConsented):
            ledger.renew(session, person, "panel_contact", channel="web_form", actor="self")
        event = ledger.give(session, person, "panel_contact", channel="web_form", actor="self")
        assert event is not None and event.action == "given"
        state = ledger.states_for(session, person)["panel_contact"]
        assert state.expires_at > later + timedelta(days=700)


def test_a_phone_number_goes_with_the_last_panel_membership(db: Database) -> None:
    """It is asked for only so the Family Hub can call about meetings; someone kept for
    the newsletter keeps no phone number once they are on no panel."""
    with db.transaction() as session:
        first, second = factories.panel(session), factories.panel(session, name="Southfield")
        one = factories.consenting(session, "newsletter", email="one@example.com")
        both = factories.consenting(session, "newsletter", email="both@example.com")
        for someone, on in ((one, [first]), (both, [first, second])):
            for panel in on:
                factories.member(session, panel, someone)
            people.correct_details(
                session, someone, {"phone": "07700 900123"}, channel="web_form", actor="self"
            )
        first_id, ids = first.id, (one.id, both.id)
    with db.transaction() as session:
        panels.conclude(session, session.get(Panel, first_id))
    retention.sweep(db)
    with db.reader() as session:
        one, both = (session.get(Person, i) for i in ids)
        assert one.email == "one@example.com" and one.phone is None
        assert both.phone == "+447700900123"
    with db.transaction() as session:
        both = session.get(Person, ids[1])
        ledger.withdraw(session, both, "panel_contact", channel="web_form", actor="self")
        assert both.phone is None
    assert find_anywhere(db.engine, ["7700900123"]) == []


def test_sending_the_join_form_again_updates_answers_but_is_not_another_join(
    db: Database,
) -> None:
    with db.transaction() as session:
        panel = factories.panel(session)
        someone = factories.person(session, "again@example.com")
        factories.member(session, panel, someone, postcode="NE1 4ST")
    joined = _counters(db)
    assert joined[("panel.joined", f"panel:{panel.id}", "all", "all")] == 1
    with db.transaction() as session:
        again = factories.member(
            session,
            session.get(Panel, panel.id),
            session.get(Person, someone.id),
            postcode="SW9 8QZ",
        )
        profile = session.execute(
            select(PanelProfile).where(PanelProfile.membership_id == again.id)
        ).scalar_one()
        assert profile.postcode == "SW9 8QZ"
    assert _counters(db) == joined
    with db.transaction() as session:
        ledger.withdraw(
            session,
            session.get(Person, someone.id),
            "panel_contact",
            channel="web_form",
            actor="self",
        )
        factories.member(session, session.get(Panel, panel.id), session.get(Person, someone.id))
    assert _counters(db)[("panel.joined", f"panel:{panel.id}", "all", "all")] == 2


def test_memberships_ending_soon_are_grouped_by_the_day_in_london(db: Database) -> None:
    """A member who joined at half past midnight in summer sees their London date on their
    own pages; the DPO's list of what will end must say the same day."""
    with db.transaction() as session:
        panel = factories.panel(session)
        for joined in (
            # Two years is 730 days, so these end on 29 June 2028 at 23:30 UTC, which is
            # 00:30 on 30 June in London; at noon on 29 June; at 09:00 on 30 June.
            datetime(2026, 6, 30, 23, 30, tzinfo=UTC),
            datetime(2026, 6, 30, 12, 0, tzinfo=UTC),
            datetime(2026, 7, 1, 9, 0, tzinfo=UTC),
        ):
            factories.member(session, panel, at=joined)
    with db.reader() as session:
        soon = retention.upcoming(session, datetime(2028, 6, 1, tzinfo=UTC), timedelta(days=90))
    assert soon == [(date(2028, 6, 29), 1), (date(2028, 6, 30), 2)]


def _left_counted(db: Database, reason: str) -> int:
    """What the anonymised reports say left panels for this reason."""
    with db.reader() as session:
        return int(
            session.execute(
                select(func.coalesce(func.sum(StatCounter.count), 0)).where(
                    StatCounter.metric == f"panel.left.{reason}",
                    StatCounter.dimension == "all",
                )
            ).scalar_one()
        )


def test_two_sweeps_at_once_end_and_count_each_member_once(db: Database, backend: str) -> None:
    """``consent retention run`` while the scheduled sweep runs: both find the same members
    and bookings, and each is still removed, and counted, once."""
    if backend != "postgresql":
        pytest.skip("SQLite lets one writer in at a time, so two sweeps cannot overlap")
    with db.transaction() as session:
        panel = factories.panel(session)
        for _ in range(300):
            factories.member(session, panel)
        panels.conclude(session, panel)
        workshop = factories.workshop(session, days=1, capacity=200)
        for index in range(150):
            factories.booking(session, workshop, f"booker{index}@example.com")
        after_keep = workshop.ends_at + timedelta(days=db.settings.workshop_keep_days, hours=1)
    start = threading.Barrier(2)
    done: list[retention.SweepReport] = []
    failed: list[BaseException] = []

    def run() -> None:
        start.wait()
        try:
            done.append(retention.sweep(db, batch_size=40))
        except BaseException as exc:
            failed.append(exc)

    with time_machine.travel(after_keep, tick=True):
        threads = [threading.Thread(target=run) for _ in range(2)]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(timeout=120)
    assert failed == []

    def total(key: str) -> int:
        return sum(report.removed[key] for report in done)

    assert total("memberships_panel_concluded") == 300
    assert total("panels_concluded") == 1
    assert total("bookings_purged") == 150
    assert total("people_erased") == 450
    assert _left_counted(db, "panel_concluded") == 300
    with db.reader() as session:
        erased = session.execute(
            select(func.sum(StatCounter.count)).where(StatCounter.metric == "people.erased")
        ).scalar_one()
    assert erased == 450


def _overtaken(db: Database, table: str, finish: str) -> Callable[..., None]:
    """A hook that, just before the sweep's first change to ``table``, lands the same change
    as another sweep would have (on the sweep's own connection: SQLite lets in one writer)."""
    fired: list[str] = []

    def overtake(conn, cursor, statement, params, context, executemany):  # type: ignore[no-untyped-def]
        if not fired and statement.startswith(f"UPDATE {table} "):
            fired.append(statement)
            cursor.connection.execute(finish)

    event.listen(db.engine, "before_cursor_execute", overtake)
    return lambda: event.remove(db.engine, "before_cursor_execute", overtake)


def test_members_another_sweep_ended_first_are_not_counted_again(db: Database) -> None:
    with db.transaction() as session:
        panel = factories.panel(session)
        for _ in range(3):
            factories.member(session, panel)
        panels.conclude(session, panel)
    stop = _overtaken(
        db,
        "panel_membership",
        "UPDATE panel_membership SET left_at = joined_at, left_reason = 'panel_concluded', "
        "data_destroyed_at = joined_at WHERE left_at IS NULL",
    )
    try:
        report = retention.sweep(db)
    finally:
        stop()
    assert report.removed["memberships_panel_concluded"] == 0
    assert _left_counted(db, "panel_concluded") == 0


def test_bookings_another_sweep_purged_first_are_not_counted_again(db: Database) -> None:
    workshop_id = _booked_workshop(db)
    with db.reader() as session:
        ended = workshops.get_workshop(session, workshop_id).ends_at
    stop = _overtaken(
        db,
        "booking",
        "UPDATE booking SET purged_at = booked_at, name = NULL, email = NULL, setting = NULL, "
        "district = NULL, job_role = NULL, person_id = NULL WHERE purged_at IS NULL",
    )
    try:
        with time_machine.travel(ended + timedelta(days=31), tick=False):
            report = retention.sweep(db)
    finally:
        stop()
    assert report.removed["bookings_purged"] == 0


def _held_for_nothing(db: Database, email: str) -> int:
    with db.transaction() as session:
        person = people.find_or_create(session, email, name="Rosa Okafor")
        person.review_at = utcnow() - timedelta(minutes=1)
        return person.id


def test_a_consent_given_while_the_sweep_decides_keeps_the_person(
    db: Database, backend: str
) -> None:
    crossing_writers_only(backend)
    person_id = _held_for_nothing(db, "rosa@example.com")

    def agree(session: Session) -> None:
        person = people.find_by_email(session, "rosa@example.com")
        assert person is not None
        ledger.give(session, person, "newsletter", channel="web_form", actor="self")

    sweep = meanwhile(db, agree, lambda: retention.sweep(db))
    assert sweep.error is None
    assert isinstance(sweep.result, retention.SweepReport)
    assert sweep.result.removed["people_erased"] == 0
    with db.reader() as session:
        kept = session.get(Person, person_id)
        assert kept is not None and kept.erased_at is None
        assert kept.email == "rosa@example.com"
        assert ledger.has_consent(session, kept, "newsletter")


@pytest.mark.parametrize("what", ["sign-up", "booking"])
def test_a_sign_up_made_while_the_person_is_erased_starts_a_new_record(
    db: Database, backend: str, what: str
) -> None:
    crossing_writers_only(backend)
    person_id = _held_for_nothing(db, "rosa@example.com")
    with db.transaction() as session:
        workshop_id = factories.workshop(session, days=3).id

    def sign_up() -> int | None:
        with db.transaction() as session:
            if what == "booking":
                on = workshops.get_workshop(session, workshop_id)
                return factories.booking(session, on, "rosa@example.com").person_id
            pending = signups.request_subscription(
                session, email="rosa@example.com", name=None, shown={"newsletter": 1}
            )
            return pending.person_id

    signing = meanwhile_erased(db, person_id, sign_up)
    assert signing.error is None
    assert signing.result != person_id
    with db.reader() as session:
        fresh = session.get(Person, signing.result)
        assert fresh is not None and fresh.erased_at is None
        assert fresh.email == "rosa@example.com"
        left_behind = (
            session.execute(
                select(func.count()).where(PendingSignup.person_id == person_id)
            ).scalar_one()
            + session.execute(
                select(func.count()).where(Booking.person_id == person_id)
            ).scalar_one()
        )
        assert left_behind == 0


def test_a_consent_for_someone_erased_meanwhile_is_refused(db: Database, backend: str) -> None:
    crossing_writers_only(backend)
    person_id = _held_for_nothing(db, "rosa@example.com")

    def agree() -> None:
        with db.transaction() as session:
            person = session.get(Person, person_id)
            assert person is not None and person.erased_at is None
            ledger.give(session, person, "newsletter", channel="web_form", actor="self")

    agreeing = meanwhile_erased(db, person_id, agree)
    assert isinstance(agreeing.error, Erased)
    with db.reader() as session:
        events = session.execute(
            select(func.count()).where(ConsentEvent.person_id == person_id)
        ).scalar_one()
    assert events == 0


def _ask_for_a_link(db: Database, email: str) -> None:
    with db.transaction() as session:
        link_requests.ask(session, email)


def test_a_request_for_a_link_goes_with_the_person_or_after_an_hour(db: Database) -> None:
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="rosa@example.com")
    _ask_for_a_link(db, "rosa@example.com")
    _ask_for_a_link(db, "stranger@example.com")
    with db.transaction() as session:
        people.erase(session, session.get(Person, person.id), channel="email_link", actor="self")
    with db.reader() as session:
        assert session.execute(select(func.count()).select_from(LinkRequest)).scalar_one() == 1
    with time_machine.travel(utcnow() + timedelta(minutes=61)):
        assert retention.sweep(db).removed["link_requests_dropped"] == 1
    with db.reader() as session:
        assert session.execute(select(func.count()).select_from(LinkRequest)).scalar_one() == 0


def test_a_link_is_not_sent_to_someone_erased_while_it_was_answered(
    db: Database, backend: str
) -> None:
    crossing_writers_only(backend)
    person_id = _held_for_nothing(db, "rosa@example.com")

    def answer() -> int:
        with db.transaction() as session:
            link_requests.ask(session, "rosa@example.com")
            return link_requests.answer(session)

    answering = meanwhile_erased(db, person_id, answer)
    assert answering.error is None and answering.result == 1
    assert mails(db) == []


def test_a_sign_up_for_an_address_its_owner_just_left_starts_a_new_record(
    db: Database, backend: str
) -> None:
    crossing_writers_only(backend)
    with db.transaction() as session:
        person_id = factories.consenting(session, "newsletter", email="old@example.com").id

    def sign_up() -> int:
        with db.transaction() as session:
            pending = signups.request_subscription(
                session, email="old@example.com", name=None, shown={"newsletter": 1}
            )
            return pending.person_id

    signing = meanwhile_moved(db, person_id, "new@example.com", sign_up)
    assert signing.error is None
    assert signing.result != person_id
    assert [m.to_address for m in mails(db, template="confirm_newsletter")] == ["old@example.com"]


def test_a_person_locked_for_a_decision_can_still_be_sent_mail(db: Database, backend: str) -> None:
    """The sweep's lock must not stop a coordinator emailing members: that write only
    points at the person, and waiting on it, in another order, would deadlock."""
    crossing_writers_only(backend)
    with db.transaction() as session:
        person_id = factories.consenting(session, "newsletter", email="rosa@example.com").id

    def send() -> int | None:
        with db.transaction() as session:
            person = session.get(Person, person_id)
            assert person is not None
            return outbox.queue(session, "preferences_link", person=person, context={})

    with db.transaction() as session:
        assert ledger.lock_people(session, [person_id]) == [person_id]
        sending = Beside(send)
        sending.start()
        sending.join(timeout=10)
        assert not sending.is_alive(), "the email waited for the lock"
    assert sending.error is None and sending.result is not None


def test_the_dpo_erasing_someone_being_invited_waits_instead_of_deadlocking(
    db: Database, backend: str
) -> None:
    """Inviting locks the person, then writes the audit log; erasing must take them in the
    same order, or each waits for the other."""
    crossing_writers_only(backend)
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="pat@example.com")
        public_id, panel_id = person.public_id, factories.panel(session).id
        dpo, _ = admin_users.create_admin(session, "dpo@example.gov.uk", "dpo", "a long password!")
        actor = casework.Actor(dpo.id or 0, f"admin:{dpo.id}", "dpo")

    def erase() -> None:
        with db.transaction() as session:
            found = casework.get_person(session, public_id)
            casework.erase(session, found, note="Erasure request 12", actor=actor)

    with db.transaction() as session:
        panels.invite(
            session, panels.get_panel(session, panel_id), email="pat@example.com", name=None
        )
        erasing = Beside(erase)
        erasing.start()
        until_someone_waits_for_a_lock(db.engine)
        audit.record(session, "panel.invited", actor="admin:9", object_type="panel")
    erasing.join(timeout=60)
    assert erasing.error is None
    with db.reader() as session:
        assert people.find_by_email(session, "pat@example.com") is None


def test_a_link_is_not_sent_to_an_address_its_owner_left_while_it_was_answered(
    db: Database, backend: str
) -> None:
    crossing_writers_only(backend)
    with db.transaction() as session:
        person_id = factories.consenting(session, "newsletter", email="old@example.com").id

    def answer() -> int:
        with db.transaction() as session:
            link_requests.ask(session, "old@example.com")
            return link_requests.answer(session)

    answering = meanwhile_moved(db, person_id, "new@example.com", answer)
    assert answering.error is None and answering.result == 1
    assert mails(db, template="preferences_link") == []


def test_a_new_address_never_confirmed_is_forgotten_when_its_link_expires(
    db: Database,
) -> None:
    """Anyone holding the old mailbox's preferences links (a shared mailbox, or someone the
    parent is leaving) could otherwise read the new address on the data page for ever."""
    with db.transaction() as session:
        moving = factories.consenting(session, "newsletter", email="moving@example.com")
        preferences.request_email_change(session, moving, "somewhere.safe@example.com")
    later = utcnow() + timedelta(days=1)
    with time_machine.travel(later, tick=False), db.transaction() as session:
        late = factories.consenting(session, "newsletter", email="late@example.com")
        preferences.request_email_change(session, late, "late.new@example.com")
    with time_machine.travel(later + timedelta(days=1, hours=1), tick=False):
        dry = retention.sweep(db, dry_run=True)
        assert dry.removed["new_addresses_forgotten"] == 1
        assert retention.sweep(db).removed["new_addresses_forgotten"] == 1
    with db.reader() as session:
        kept = {p.email: p.pending_email for p in session.execute(select(Person)).scalars()}
    assert kept == {"moving@example.com": None, "late@example.com": "late.new@example.com"}
