"""Mail still waiting in the queue when a change makes it unwanted is not sent.

The relay can be down for hours and retries back off for up to six; a message queued
before someone opted out, left a panel or cancelled a booking must not reach them after.
"""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path

import time_machine
from flask import Flask
from flask.testing import FlaskClient
from sqlalchemy import text as sql
from sqlmodel import Session, select

from consent import links
from consent.db import Database
from consent.models import Booking, Outbox, PanelMembership, PanelSession, PendingSignup, Person
from consent.services import (
    ledger,
    notices,
    panels,
    people,
    preferences,
    reminders,
    retention,
    signups,
    workshops,
)
from consent.timeutil import utcnow
from mailers.backends import FileBackend
from mailers.outbox import OutboxWorker
from tests import factories
from tests.web import csrf, one_click, submit, text


def _statuses(db: Database, template: str) -> dict[str, str]:
    """Each waiting or finished message of this template, by dedupe key (or address)."""
    with db.reader() as session:
        rows = session.exec(select(Outbox).where(Outbox.template == template)).all()
        return {row.dedupe_key or row.to_address or "": row.status for row in rows}


def test_a_meeting_invitation_waiting_when_a_member_unsubscribes_is_not_sent(
    app: Flask, client: FlaskClient, tmp_path: Path
) -> None:
    db = app.extensions["consent.db"]
    with db.transaction() as session:
        person = factories.person(session, "leaver@example.com")
        panel = factories.panel(session)
        factories.member(session, panel, person)
        assert panels.invite_to_session(session, factories.meeting(session, panel)) == 1
        token = links.make_token(db.settings, person, "unsubscribe", purpose="panel_contact")
    assert one_click(client, f"/unsubscribe/{token}").status_code == 200
    OutboxWorker(db, FileBackend(tmp_path / "mail")).run_once()
    assert list(_statuses(db, "panel_session_invitation").values()) == ["cancelled"]
    assert not list((tmp_path / "mail").glob("*.eml"))


def test_leaving_one_panel_cancels_only_that_panel_s_waiting_mail(db: Database) -> None:
    with db.transaction() as session:
        person = factories.person(session, "two@example.com")
        north = factories.panel(session)
        river = factories.panel(session, "Riverside Parent Carer Panel")
        leaving = factories.member(session, north, person).id
        staying = factories.member(session, river, person).id
        for panel in (north, river):
            assert panels.invite_to_session(session, factories.meeting(session, panel)) == 1
        north_id = north.id
    with db.transaction() as session:
        someone = people.find_by_email(session, "two@example.com")
        assert preferences.leave_panel(session, someone, north_id)
    by_membership = {
        int(key.split(":")[2]): status
        for key, status in _statuses(db, "panel_session_invitation").items()
    }
    assert by_membership == {leaving: "cancelled", staying: "queued"}


def test_withdrawing_the_newsletter_cancels_a_waiting_welcome(db: Database) -> None:
    with db.transaction() as session:
        person = factories.person(session, "news@example.com")
        ledger.give(session, person, "newsletter", channel="email_link", actor="self")
        from consent.services import outbox

        outbox.queue(session, "welcome", person=person, context={"name": None})
        stayer = factories.person(session, "stays@example.com")
        ledger.give(session, stayer, "newsletter", channel="email_link", actor="self")
        outbox.queue(session, "welcome", person=stayer, context={"name": None})
    with db.transaction() as session:
        someone = people.find_by_email(session, "news@example.com")
        ledger.withdraw(session, someone, "newsletter", channel="email_link", actor="self")
    assert _statuses(db, "welcome") == {
        "news@example.com": "cancelled",
        "stays@example.com": "queued",
    }


def test_panel_mail_waiting_when_the_sweep_records_an_expiry_is_not_sent(db: Database) -> None:
    now = utcnow()
    with time_machine.travel(now - timedelta(days=735), tick=False), db.transaction() as s:
        panel = factories.panel(s)
        factories.member(s, panel, factories.person(s, "lapsing@example.com"))
        factories.member(s, panel, factories.person(s, "renewed@example.com"))
    with time_machine.travel(now - timedelta(days=20), tick=False), db.transaction() as s:
        renewer = people.find_by_email(s, "renewed@example.com")
        ledger.renew(s, renewer, "panel_contact", channel="email_link", actor="self")
        assert reminders.renewal_reminders(s) == 1
        assert panels.invite_to_session(s, factories.meeting(s, panel, days=30)) == 2
        river = factories.panel(s, "Riverside Parent Carer Panel")
        panels.invite(s, river, email="lapsing@example.com", name=None)
    with db.reader() as session:
        lapsing = people.find_by_email(session, "lapsing@example.com").id
    retention.sweep(db)
    with db.reader() as session:
        rows = session.exec(select(Outbox).where(Outbox.person_id == lapsing)).all()
        assert {(row.template, row.status) for row in rows} == {
            ("reconsent_reminder", "cancelled"),
            ("panel_session_invitation", "cancelled"),
            ("panel_invitation", "queued"),
        }, "running out is no opt-out: an invitation to join again may still go"
        kept = session.exec(select(Outbox).where(Outbox.person_id != lapsing)).all()
        assert {(row.template, row.status) for row in kept} == {
            ("panel_session_invitation", "queued")
        }


def test_waiting_reminders_stop_with_the_booking_the_workshop_or_the_wish_for_them(
    db: Database,
) -> None:
    start = utcnow() + timedelta(hours=20)
    with db.transaction() as session:
        one = factories.workshop(session, starts_at=start)
        other = factories.workshop(session, starts_at=start, title="Toddler talk")
        cancelling = factories.booking(session, one, "cancels@example.com").id
        stopping = factories.booking(session, one, "stops@example.com").id
        keeping = factories.booking(session, one, "keeps@example.com").id
        called_off = factories.booking(session, other, "keeps@example.com").id
        assert reminders.workshop_reminders(session) == 4
        other_id = other.id
    with db.transaction() as session:
        preferences.cancel_booking(
            session, people.find_by_email(session, "cancels@example.com"), cancelling
        )
        preferences.unsubscribe(
            session, people.find_by_email(session, "stops@example.com"), "workshops", one_click=True
        )
        workshops.cancel_workshop(session, workshops.get_workshop(session, other_id))
    by_booking = {
        int(key.split(":")[1]): status for key, status in _statuses(db, "workshop_reminder").items()
    }
    assert by_booking == {
        cancelling: "cancelled",
        stopping: "cancelled",
        keeping: "queued",
        called_off: "cancelled",
    }


def test_news_of_a_changed_workshop_stops_with_the_place_but_not_with_reminders(
    db: Database,
) -> None:
    """Asking for no more reminders is not giving up the place: news that its time moved
    must still arrive. Cancelling the place, or the workshop, makes that news pointless."""
    with db.transaction() as session:
        one = factories.workshop(session, days=5)
        other = factories.workshop(session, days=5, title="Toddler talk")
        for email in ("cancels@example.com", "stops@example.com", "keeps@example.com"):
            factories.booking(session, one, email)
        factories.booking(session, other, "called-off@example.com")
        for workshop in (one, other):
            assert factories.move_workshop(session, workshop, timedelta(hours=2))
        other_id = other.id
    with db.transaction() as session:
        cancels = people.find_by_email(session, "cancels@example.com")
        booking_id = session.exec(select(Booking.id).where(Booking.person_id == cancels.id)).one()
        assert booking_id is not None
        preferences.cancel_booking(session, cancels, booking_id)
        preferences.unsubscribe(
            session, people.find_by_email(session, "stops@example.com"), "workshops", one_click=True
        )
        workshops.cancel_workshop(session, workshops.get_workshop(session, other_id))
    with db.reader() as session:
        rows = session.exec(select(Outbox).where(Outbox.template == "workshop_changed")).all()
        statuses = sorted((row.to_address or "", row.status) for row in rows)
    assert statuses == [
        ("called-off@example.com", "cancelled"),
        ("cancels@example.com", "cancelled"),
        ("keeps@example.com", "queued"),
        ("stops@example.com", "queued"),
    ]


def test_stopping_one_booking_s_mail_leaves_the_feedback_request_of_another(
    db: Database,
) -> None:
    earlier = time_machine.travel(utcnow() - timedelta(days=3), tick=False)
    with earlier, db.transaction() as session:
        start = utcnow() + timedelta(days=2)
        ids = [
            factories.booking(session, factories.workshop(session, starts_at=start), email).id
            for email in ("stops@example.com", "keeps@example.com")
        ]
    with db.transaction() as session:
        assert reminders.evaluation_requests(session) == 2
        person = people.find_by_email(session, "stops@example.com")
        assert person.id is not None and ids[0] is not None
        stopped = workshops.cancel_booking_mail(session, [person.id], [ids[0]], reason="test")
        assert stopped == 1
    assert sorted(_statuses(db, "workshop_evaluation").values()) == ["cancelled", "queued"]


def test_a_booking_confirmation_waiting_when_the_place_or_workshop_is_cancelled_is_not_sent(
    db: Database,
) -> None:
    """Sent after the news of the cancellation (a retry backs off for hours), 'your place is
    booked' would contradict it. Another booking's confirmation still goes."""

    def book(session: Session, workshop_id: int, email: str) -> Booking:
        booking, _ = workshops.book_and_confirm(
            session,
            workshops.get_workshop(session, workshop_id),
            name="Bea Booker",
            email=email,
            setting=None,
            district="Riverside",
            job_role="Volunteer",
            opt_ins={},
        )
        return booking

    with db.transaction() as session:
        called_off = factories.workshop(session, days=5).id
        going_ahead = factories.workshop(session, days=6, title="Toddler talk").id
        book(session, called_off, "told@example.com")
        mine = book(session, going_ahead, "cancels@example.com")
        book(session, going_ahead, "keeps@example.com")
    with db.transaction() as session:
        workshops.cancel_workshop(session, workshops.get_workshop(session, called_off))
        cancels = people.find_by_email(session, "cancels@example.com")
        preferences.cancel_booking(session, cancels, mine.id)
    with db.reader() as session:
        rows = session.exec(select(Outbox).where(Outbox.template == "workshop_booked")).all()
        statuses = sorted((row.to_address or "", row.status) for row in rows)
    assert statuses == [
        ("cancels@example.com", "cancelled"),
        ("keeps@example.com", "queued"),
        ("told@example.com", "cancelled"),
    ]
    assert list(_statuses(db, "workshop_cancelled").values()) == ["queued"]


def test_a_feedback_request_waiting_when_evaluation_closes_is_not_sent(db: Database) -> None:
    """Its link would only answer that feedback has closed; another workshop's stays."""
    earlier = time_machine.travel(utcnow() - timedelta(days=3), tick=False)
    with earlier, db.transaction() as session:
        start = utcnow() + timedelta(days=2)
        closing = factories.workshop(session, starts_at=start)
        factories.booking(session, closing, "closing@example.com")
        other = factories.workshop(session, starts_at=start, title="Toddler talk")
        factories.booking(session, other, "other@example.com")
        closing_id = closing.id
    with db.transaction() as session:
        assert reminders.evaluation_requests(session) == 2
    with db.transaction() as session:
        workshops.close_evaluation(session, workshops.get_workshop(session, closing_id))
    assert _by_address(db) == [
        ("closing@example.com", "cancelled"),
        ("other@example.com", "queued"),
    ]


def test_a_booker_marked_as_not_having_come_is_not_asked_for_feedback(db: Database) -> None:
    """The request may already be waiting when the coordinator fills in the register. Marking
    them as having come after all asks them again on the job's next run."""
    earlier = time_machine.travel(utcnow() - timedelta(days=3), tick=False)
    with earlier, db.transaction() as session:
        workshop = factories.workshop(session, starts_at=utcnow() + timedelta(days=2))
        absent, came = (
            factories.booking(session, workshop, email).id
            for email in ("absent@example.com", "came@example.com")
        )
        workshop_id = workshop.id
    assert absent is not None and came is not None and workshop_id is not None

    def mark(booking_id: int, attended: bool) -> None:
        with db.transaction() as session:
            workshop = workshops.get_workshop(session, workshop_id)
            workshops.set_attended(session, workshop, booking_id, attended)

    with db.transaction() as session:
        assert reminders.evaluation_requests(session) == 2
    mark(came, True)
    mark(absent, False)
    assert _by_address(db) == [("absent@example.com", "cancelled"), ("came@example.com", "queued")]
    with db.transaction() as session:
        assert reminders.evaluation_requests(session) == 0
    mark(absent, True)
    with db.transaction() as session:
        assert reminders.evaluation_requests(session) == 1
    assert _by_address(db) == [
        ("absent@example.com", "cancelled"),
        ("absent@example.com", "queued"),
        ("came@example.com", "queued"),
    ]


def _by_address(db: Database) -> list[tuple[str, str]]:
    with db.reader() as session:
        rows = session.exec(select(Outbox).where(Outbox.template == "workshop_evaluation")).all()
        return sorted((row.to_address or "", row.status) for row in rows)


def test_someone_who_comes_back_is_sent_what_was_cancelled_when_they_left(
    db: Database,
) -> None:
    """A cancelled message keeps its dedupe key only with its id added: rejoining a panel,
    or booking again, must bring the invitation or the reminder back."""
    start = utcnow() + timedelta(hours=20)
    with db.transaction() as session:
        person = factories.person(session, "back@example.com")
        panel = factories.panel(session)
        factories.member(session, panel, person)
        meeting = factories.meeting(session, panel, days=20)
        assert panels.invite_to_session(session, meeting) == 1
        workshop = factories.workshop(session, starts_at=start)
        booking = factories.booking(session, workshop, "back@example.com")
        assert reminders.workshop_reminders(session) == 1
        ids = (panel.id, meeting.id, workshop.id, booking.id)
    with db.transaction() as session:
        someone = people.find_by_email(session, "back@example.com")
        assert preferences.leave_panel(session, someone, ids[0])
        preferences.cancel_booking(session, someone, ids[3])
    with db.transaction() as session:
        someone = people.find_by_email(session, "back@example.com")
        factories.member(session, panels.get_panel(session, ids[0]), someone)
        factories.booking(session, workshops.get_workshop(session, ids[2]), "back@example.com")
        assert panels.invite_to_session(session, session.get(PanelSession, ids[1])) == 1
        assert reminders.workshop_reminders(session) == 1
    for template in ("panel_session_invitation", "workshop_reminder"):
        assert sorted(_statuses(db, template).values()) == ["cancelled", "queued"], template


def test_declining_invitations_cancels_an_invitation_still_waiting(db: Database) -> None:
    with db.transaction() as session:
        panel = factories.panel(session)
        invited = panels.invite(session, panel, email="invited@example.com", name=None)
        panels.invite(session, panel, email="other@example.com", name=None)
        preferences.withdraw_all(session, invited, notify=False)
    by_person = {
        int(key.split(":")[2]): status for key, status in _statuses(db, "panel_invitation").items()
    }
    assert by_person == {invited.id: "cancelled", invited.id + 1: "queued"}


def test_leaving_a_panel_removes_answers_waiting_to_be_confirmed(
    app: Flask, client: FlaskClient
) -> None:
    """A member sends the panel form again to update their answers (held, encrypted, until
    they press the emailed link), then leaves: promise 5 says their panel information is
    then no longer held, and the link must not put them back."""
    db = app.extensions["consent.db"]
    with db.transaction() as session:
        person = factories.person(session, "member@example.com")
        panel = factories.panel(session)
        other = factories.panel(session, "Riverside Parent Carer Panel")
        factories.member(session, panel, person)
        factories.member(session, other, person)
        manage = "/manage/" + links.make_token(db.settings, person, "manage")
    answers = {
        "name": "Morgan Parent",
        "email": "member@example.com",
        "postcode": "ne1 4st",
        "age_band": "25 to 34",
        "children_count": "2",
        "ethnicity": "Prefer not to say",
        "needs": "Needs a hearing loop",
        "panel_contact": "y",
    }
    for panel_id in (panel.id, other.id):
        assert submit(client, f"/panels/{panel_id}/join", answers).status_code == 302
    with db.transaction() as session:
        someone = people.find_by_email(session, "member@example.com")
        assert preferences.leave_panel(session, someone, panel.id)
    with db.reader() as session:
        waiting = session.exec(select(PendingSignup.panel_id)).all()
    assert waiting == [other.id]
    page = text(client.get(manage))
    stopped = client.post(
        f"{manage}/consent",
        data={"csrf_token": csrf(page), "purpose": "panel_contact", "agree": "no"},
    )
    assert stopped.status_code == 302
    with db.reader() as session:
        assert session.exec(select(PendingSignup)).all() == []


def test_answers_sent_to_stay_on_are_kept_when_the_agreement_runs_out(db: Database) -> None:
    """Running out is no opt-out: a member who sent the form again to stay on, and had not
    pressed its link before the sweep, can still press it and join afresh."""
    now = utcnow()
    with time_machine.travel(now - timedelta(days=735), tick=False), db.transaction() as s:
        panel = factories.panel(s)
        factories.member(s, panel, factories.person(s, "staying@example.com"))
    with time_machine.travel(now - timedelta(days=1), tick=False), db.transaction() as s:
        notice = notices.current_notice(s, notices.get_purpose(s, "panel_contact"))
        pending = signups.request_panel(
            s,
            panels.get_panel(s, panel.id),
            email="staying@example.com",
            name=None,
            phone=None,
            profile=panels.ProfileInput(),
            recordings=False,
            shown={"panel_contact": notice.id or 0},
        )
        pending_id = pending.id
    retention.sweep(db)
    with db.transaction() as session:
        person = people.find_by_email(session, "staying@example.com")
        assert not ledger.has_consent(session, person, "panel_contact")
        signups.confirm(session, person, session.get(PendingSignup, pending_id))
        assert ledger.has_consent(session, person, "panel_contact")


def test_the_safety_net_keeps_answers_sent_to_stay_on_only_when_the_agreement_ran_out(
    db: Database,
) -> None:
    """A membership outlived its consent (a step missed it): the sweep ends it for the
    reason the consent ended, so answers waiting from someone whose agreement ran out stay,
    and those from someone who withdrew go."""
    with db.transaction() as session:
        panel = factories.panel(session)
        notice = notices.current_notice(session, notices.get_purpose(session, "panel_contact"))
        for email in ("ran.out@example.com", "withdrew@example.com"):
            factories.member(session, panel, factories.person(session, email))
            signups.request_panel(
                session,
                panels.get_panel(session, panel.id),
                email=email,
                name=None,
                phone=None,
                profile=panels.ProfileInput(),
                recordings=False,
                shown={"panel_contact": notice.id or 0},
            )
    with db.engine.begin() as conn:
        for email, status in (
            ("ran.out@example.com", "expired"),
            ("withdrew@example.com", "withdrawn"),
        ):
            conn.execute(
                sql(
                    "UPDATE consent_state SET status = :status WHERE person_id ="
                    " (SELECT id FROM person WHERE email = :email)"
                ),
                {"status": status, "email": email},
            )
    assert retention.sweep(db).removed["memberships_without_consent"] == 2
    with db.reader() as session:
        left = session.exec(
            select(Person.email, PanelMembership.left_reason).join(
                PanelMembership, PanelMembership.person_id == Person.id
            )
        ).all()
        waiting = session.exec(
            select(Person.email).join(PendingSignup, PendingSignup.person_id == Person.id)
        ).all()
    assert sorted(left) == [
        ("ran.out@example.com", "expired"),
        ("withdrew@example.com", "withdrawn"),
    ]
    assert waiting == ["ran.out@example.com"]


def test_a_workshop_we_cancelled_is_not_listed_as_booked_nor_cancelled_by_the_booker(
    app: Flask, client: FlaskClient
) -> None:
    db = app.extensions["consent.db"]
    with db.transaction() as session:
        workshop = factories.workshop(session, days=7, title="Toddler talk")
        booking = factories.booking(session, workshop, "bea@example.com")
        kept = factories.booking(session, factories.workshop(session, days=8), "bea@example.com")
        workshops.cancel_workshop(session, workshop)
        token = links.make_token(
            db.settings, people.find_by_email(session, "bea@example.com"), "manage"
        )
    page = text(client.get(f"/manage/{token}"))
    assert f"bookings/{booking.id}/cancel" not in page
    assert f"bookings/{kept.id}/cancel" in page
    refused = client.post(
        f"/manage/{token}/bookings/{booking.id}/cancel",
        data={"csrf_token": csrf(page)},
        follow_redirects=True,
    )
    assert "We cancelled this workshop, so there is no place to cancel." in text(refused)
    with db.reader() as session:
        from sqlalchemy import func

        from consent.models import StatCounter

        counted = session.exec(
            select(func.coalesce(func.sum(StatCounter.count), 0)).where(
                StatCounter.metric == "workshop.cancelled"
            )
        ).one()
    assert counted == 0


def test_booking_again_after_cancelling_brings_back_the_reminder(db: Database) -> None:
    """Unsubscribing from booking emails stops a booking's reminders; cancelling and then
    booking the same workshop again is a new request, which gets its reminder."""
    with time_machine.travel(utcnow() - timedelta(days=2), tick=False):
        with db.transaction() as session:
            workshop = factories.workshop(session, days=3)
            booking = factories.booking(session, workshop, "again@example.com")
        with db.transaction() as session:
            someone = people.find_by_email(session, "again@example.com")
            preferences.unsubscribe(session, someone, "workshops", one_click=True)
            preferences.cancel_booking(session, someone, booking.id)
        with db.transaction() as session:
            factories.booking(
                session, workshops.get_workshop(session, workshop.id), "again@example.com"
            )
    with db.transaction() as session:
        assert reminders.workshop_reminders(session) == 1


def test_an_expiry_recorded_one_at_a_time_leaves_an_invitation_to_join_again(
    db: Database,
) -> None:
    with db.transaction() as session:
        person = factories.person(session, "lapsing@example.com")
        factories.member(session, factories.panel(session), person)
        river = factories.panel(session, "Riverside Parent Carer Panel")
        panels.invite(session, river, email="lapsing@example.com", name=None)
        ledger.expire(session, person, "panel_contact")
    assert list(_statuses(db, "panel_invitation").values()) == ["queued"]


def test_no_meeting_invitation_goes_to_a_member_whose_two_years_ran_out_before_the_sweep(
    db: Database,
) -> None:
    """The sweep that ends such memberships runs hourly; in that hour the agreement has
    already run out, so the member is no longer someone we may contact about meetings."""
    now = utcnow()
    with time_machine.travel(now - timedelta(days=730, hours=1), tick=False), db.transaction() as s:
        panel = factories.panel(s)
        factories.member(s, panel, factories.person(s, "lapsed@example.com"))
    with db.transaction() as s:
        factories.member(s, panel, factories.person(s, "current@example.com"))
        assert panels.invite_to_session(s, factories.meeting(s, panel, days=30)) == 1
    with db.reader() as session:
        rows = session.exec(select(Outbox).where(Outbox.template == "panel_session_invitation"))
        assert [row.to_address for row in rows] == ["current@example.com"]
