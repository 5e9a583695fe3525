"""Mail a job queues while a parent stops it, at the same moment, is not sent.

A timetable job reads who is due a reminder, then queues it; a parent leaving a panel,
cancelling a booking or asking for no more emails cancels what waits. On PostgreSQL the two
transactions can cross: the job read the member before the change, and the change looked for
waiting mail before the job's reminder was there. Promise 10 says such mail must not arrive.
SQLite lets one writer in at a time, so there they cannot cross.
"""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import time_machine
from sqlmodel import Session, select

from consent.db import Database
from consent.models import Booking, Outbox
from consent.services import ledger, panels, people, preferences, reminders, workshops
from consent.timeutil import utcnow
from tests import factories
from tests.helpers import Beside, crossing_writers_only, meanwhile, until_done_or_waiting

PARENT = "parent@example.com"
OTHER = "other@example.com"


def _waiting(db: Database, template: str) -> dict[str, str]:
    """Each message of this template, by address, with its status."""
    with db.reader() as session:
        rows = session.exec(select(Outbox).where(Outbox.template == template)).all()
        return {row.to_address or "": row.status for row in rows}


def _parent(session: Session):  # type: ignore[no-untyped-def]
    return people.find_by_email(session, PARENT)


def _members_due_a_renewal_reminder(db: Database) -> int:
    earlier = time_machine.travel(utcnow() - timedelta(days=710), tick=False)
    with earlier, db.transaction() as session:
        panel = factories.panel(session)
        for email in (PARENT, OTHER):
            factories.member(session, panel, factories.person(session, email))
        return panel.id or 0


def _booked_for_tomorrow(db: Database) -> int:
    """The parent's workshop, and another one someone else booked, both tomorrow."""
    with db.transaction() as session:
        start = utcnow() + timedelta(hours=20)
        other = factories.workshop(session, starts_at=start, title="Toddler talk")
        factories.booking(session, other, OTHER)
        workshop = factories.workshop(session, starts_at=start)
        factories.booking(session, workshop, PARENT)
        return workshop.id or 0


def _withdraw(session: Session, _: int) -> None:
    ledger.withdraw(session, _parent(session), "panel_contact", channel="web_form", actor="self")


def _leave(session: Session, panel_id: int) -> None:
    preferences.leave_panel(session, _parent(session), panel_id)


def _erase(session: Session, _: int) -> None:
    preferences.delete_everything(session, _parent(session))


def _cancel_booking(session: Session, workshop_id: int) -> None:
    person = _parent(session)
    booking_id = session.exec(
        select(Booking.id).where(Booking.workshop_id == workshop_id, Booking.person_id == person.id)
    ).one()
    assert booking_id is not None
    preferences.cancel_booking(session, person, booking_id)


def _stop_booking_mail(session: Session, _: int) -> None:
    preferences.unsubscribe(session, _parent(session), "workshops", one_click=True)


def _cancel_workshop(session: Session, workshop_id: int) -> None:
    workshops.cancel_workshop(session, workshops.get_workshop(session, workshop_id))


def _mark_absent(session: Session, workshop_id: int) -> None:
    booking_id = session.exec(
        select(Booking.id).where(
            Booking.workshop_id == workshop_id, Booking.person_id == _parent(session).id
        )
    ).one()
    assert booking_id is not None
    workshops.set_attended(session, workshops.get_workshop(session, workshop_id), booking_id, False)


def _workshop_ended_yesterday(db: Database) -> int:
    """The parent's workshop, and another one someone else booked, both ended yesterday."""
    earlier = time_machine.travel(utcnow() - timedelta(days=3), tick=False)
    with earlier, db.transaction() as session:
        start = utcnow() + timedelta(days=2)
        other = factories.workshop(session, starts_at=start, title="Toddler talk")
        factories.booking(session, other, OTHER)
        workshop = factories.workshop(session, starts_at=start)
        factories.booking(session, workshop, PARENT)
        return workshop.id or 0


RENEWAL = ("reconsent_reminder", _members_due_a_renewal_reminder, reminders.renewal_reminders)
REMINDER = ("workshop_reminder", _booked_for_tomorrow, reminders.workshop_reminders)
EVALUATION = ("workshop_evaluation", _workshop_ended_yesterday, reminders.evaluation_requests)

CROSSINGS = [
    pytest.param(RENEWAL, _withdraw, id="renewal-withdraw"),
    pytest.param(RENEWAL, _leave, id="renewal-leave"),
    pytest.param(RENEWAL, _erase, id="renewal-erase"),
    pytest.param(REMINDER, _cancel_booking, id="reminder-cancel-booking"),
    pytest.param(REMINDER, _stop_booking_mail, id="reminder-stop-mail"),
    pytest.param(REMINDER, _cancel_workshop, id="reminder-cancel-workshop"),
    pytest.param(EVALUATION, _stop_booking_mail, id="evaluation-stop-mail"),
    pytest.param(EVALUATION, _erase, id="evaluation-erase"),
    pytest.param(EVALUATION, _mark_absent, id="evaluation-marked-absent"),
]

Job = tuple[str, Callable[[Database], int], Callable[[Session], int]]


@pytest.mark.parametrize(("job", "change"), CROSSINGS)
def test_a_change_made_while_the_job_queues_cancels_what_it_queued(
    db: Database, backend: str, job: Job, change: Callable[[Session, int], None]
) -> None:
    """The job has read the parent as due and queued the reminder, but not yet committed: the
    parent's change waits for it, then finds the reminder and cancels it."""
    crossing_writers_only(backend)
    template, make, run = job
    subject = make(db)

    def parent_acts() -> None:
        with db.transaction() as session:
            change(session, subject)

    acting = meanwhile(db, lambda session: run(session), parent_acts)
    assert acting.error is None
    waiting = _waiting(db, template)
    assert waiting.get(OTHER) == "queued"
    assert waiting.get(PARENT, "cancelled") == "cancelled"


@pytest.mark.parametrize(("job", "change"), CROSSINGS)
def test_the_job_passes_over_someone_whose_change_is_being_made(
    db: Database, backend: str, job: Job, change: Callable[[Session, int], None]
) -> None:
    """The parent's change is under way when the job runs: the job must not queue a reminder
    from what it read before the change, which the change can no longer see to cancel."""
    crossing_writers_only(backend)
    template, make, run = job
    subject = make(db)

    def job_runs() -> int:
        with db.transaction() as session:
            return run(session)

    with db.transaction() as session:
        change(session, subject)
        session.flush()
        running = Beside(job_runs)
        running.start()
        running.join(timeout=30)
        assert not running.is_alive(), "the job waited for the parent's change"
    assert running.error is None
    waiting = _waiting(db, template)
    assert waiting.get(OTHER) == "queued"
    assert PARENT not in waiting or waiting[PARENT] == "cancelled"


def test_meeting_invitations_wait_for_a_member_leaving_and_leave_them_out(
    db: Database, backend: str
) -> None:
    """A coordinator's invitations wait for a member who is leaving at that moment, rather
    than pass over them, since the coordinator expects every member to be invited."""
    crossing_writers_only(backend)
    panel_id = _members_due_a_renewal_reminder(db)
    with db.transaction() as session:
        meeting_id = factories.meeting(session, panels.get_panel(session, panel_id), days=30).id

    def invite() -> int:
        with db.transaction() as session:
            meeting = panels.get_session(session, meeting_id)
            return panels.invite_to_session(session, meeting)

    inviting = meanwhile(db, lambda session: _leave(session, panel_id), invite)
    assert inviting.error is None
    assert inviting.result == 1
    assert set(_waiting(db, "panel_session_invitation")) == {OTHER}


def _move_workshop(session: Session, workshop_id: int) -> int:
    workshop = workshops.get_workshop(session, workshop_id)
    return factories.move_workshop(session, workshop, timedelta(hours=2))


def _booked_for_next_week(db: Database) -> int:
    with db.transaction() as session:
        workshop = factories.workshop(session, days=7)
        for email in (PARENT, OTHER):
            factories.booking(session, workshop, email)
        return workshop.id or 0


def test_a_place_cancelled_while_the_workshop_is_moved_is_not_told_of_the_move(
    db: Database, backend: str
) -> None:
    """The coordinator has moved the workshop and queued the news, but not yet committed: the
    parent cancelling their place at that moment waits, then finds the news and cancels it."""
    crossing_writers_only(backend)
    workshop_id = _booked_for_next_week(db)

    def parent_cancels() -> None:
        with db.transaction() as session:
            _cancel_booking(session, workshop_id)

    with db.transaction() as session:
        assert _move_workshop(session, workshop_id) == 2
        cancelling = Beside(parent_cancels)
        cancelling.start()
        until_done_or_waiting(db.engine, cancelling)
    cancelling.join(timeout=30)
    assert cancelling.error is None
    assert _waiting(db, "workshop_changed") == {OTHER: "queued", PARENT: "cancelled"}


def test_a_workshop_moved_while_a_place_is_cancelled_does_not_tell_that_booker(
    db: Database, backend: str
) -> None:
    """The parent's cancellation is under way when the coordinator moves the workshop: the
    news must not go from what was read before it, which the cancellation cannot see."""
    crossing_writers_only(backend)
    workshop_id = _booked_for_next_week(db)

    def coordinator_moves() -> int:
        with db.transaction() as session:
            return _move_workshop(session, workshop_id)

    with db.transaction() as session:
        _cancel_booking(session, workshop_id)
        session.flush()
        moving = Beside(coordinator_moves)
        moving.start()
        until_done_or_waiting(db.engine, moving)
    moving.join(timeout=30)
    assert moving.error is None
    assert _waiting(db, "workshop_changed") == {OTHER: "queued"}
