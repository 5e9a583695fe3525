"""Two transactions crossing on PostgreSQL must not break a promise or leave data that
disagrees with itself. Each test holds one change open, lets the other start, and lets go
once the other waits for it (or has done what it would do first)."""

from __future__ import annotations

import time
from collections.abc import Callable
from datetime import timedelta
from pathlib import Path

from sqlalchemy import func, select
from sqlmodel import Session

from consent.db import Database
from consent.models import Booking, Outbox, PanelMembership, PanelProfile
from consent.services import imports, ledger, panels, people, preferences, retention, workshops
from consent.timeutil import LONDON, utcnow
from tests import factories
from tests.helpers import Beside, crossing_writers_only, meanwhile, until_done_or_waiting

PARENT = "parent@example.com"


def _states(db: Database, email: str) -> dict[str, str]:
    with db.reader() as session:
        person = people.find_by_email(session, email)
        return {key: state.status for key, state in ledger.states_for(session, person).items()}


def _book(db: Database, workshop_id: int, email: str) -> None:
    with db.transaction() as session:
        workshops.book(
            session,
            workshops.get_workshop(session, workshop_id),
            name="Bea Booker",
            email=email,
            setting=None,
            district="Riverside",
            job_role="Volunteer",
        )


# ---- workshops ----------------------------------------------------------------------------


def test_a_booking_made_while_the_workshop_is_cancelled_is_refused(
    db: Database, backend: str
) -> None:
    """Booking read the workshop as scheduled, then waited for the cancellation: once it
    commits, the booking must see the workshop cancelled, or the booker holds a place on a
    cancelled workshop and is never told."""
    crossing_writers_only(backend)
    with db.transaction() as session:
        workshop_id = factories.workshop(session).id or 0

    def cancel(session: Session) -> None:
        workshops.cancel_workshop(session, workshops.get_workshop(session, workshop_id))

    booking = meanwhile(db, cancel, lambda: _book(db, workshop_id, PARENT))
    with db.reader() as session:
        live = session.scalar(
            select(func.count())
            .select_from(Booking)
            .where(Booking.workshop_id == workshop_id, Booking.cancelled_at.is_(None))
        )
    assert live == 0, booking.error


def test_a_booking_made_while_places_are_reduced_keeps_to_the_new_number(
    db: Database, backend: str
) -> None:
    """A coordinator cuts the places to those already taken while someone books: the
    booking must count against the new number, not the one it read first."""
    crossing_writers_only(backend)
    with db.transaction() as session:
        workshop = factories.workshop(session, capacity=5)
        factories.booking(session, workshop, "first@example.com")
        workshop_id = workshop.id or 0

    def reduce(session: Session) -> None:
        workshop = workshops.get_workshop(session, workshop_id)
        workshops.update_workshop(
            session,
            workshop,
            title=workshop.title,
            description=workshop.description,
            starts_at=workshop.starts_at,
            ends_at=workshop.ends_at,
            capacity=1,
            location=workshop.location,
        )

    meanwhile(db, reduce, lambda: _book(db, workshop_id, PARENT))
    with db.reader() as session:
        workshop = workshops.get_workshop(session, workshop_id)
        assert workshops.places_taken(session, workshop) <= workshop.capacity


# ---- panels -------------------------------------------------------------------------------


def _profile() -> panels.ProfileInput:
    return panels.ProfileInput(
        postcode="NE1 4ST",
        age_band="25 to 34",
        children_count=1,
        children_ages=[3],
        services_used=[],
        special_category={"ethnicity": "Mixed or multiple ethnic groups"},
    )


def test_joining_while_the_panel_concludes_leaves_no_member_data(
    db: Database, backend: str
) -> None:
    """Someone joins as the coordinator concludes the panel and the sweep destroys its data:
    whichever comes first, nobody is left on the concluded panel with their data."""
    crossing_writers_only(backend)
    with db.transaction() as session:
        panel_id = factories.panel(session).id or 0
        factories.person(session, PARENT)

    def join(session: Session) -> None:
        panels.join(
            session,
            panels.get_panel(session, panel_id),
            people.find_by_email(session, PARENT),
            _profile(),
            channel="web_form",
            actor="self",
        )

    _crossing_a_conclusion(db, panel_id, join)
    assert _left_on_the_panel(db, panel_id) == (0, 0)


def _crossing_a_conclusion(db: Database, panel_id: int, write: Callable[[Session], None]) -> None:
    """``write`` is made, then, before it commits, a coordinator concludes the panel and the
    sweep destroys its data; it commits once they have finished or wait for it."""

    def conclude_and_sweep() -> None:
        with db.transaction() as session:
            panels.conclude(session, panels.get_panel(session, panel_id))
        retention.sweep(db)

    with db.transaction() as session:
        write(session)
        session.flush()
        concluding = Beside(conclude_and_sweep)
        concluding.start()
        until_done_or_waiting(db.engine, concluding)
    concluding.join(timeout=60)
    assert concluding.error is None


def _left_on_the_panel(db: Database, panel_id: int) -> tuple[int | None, int | None]:
    """Members still on the panel, and panel profiles kept."""
    with db.reader() as session:
        live = session.scalar(
            select(func.count())
            .select_from(PanelMembership)
            .where(PanelMembership.panel_id == panel_id, PanelMembership.left_at.is_(None))
        )
        profiles = session.scalar(select(func.count()).select_from(PanelProfile))
    return live, profiles


def test_agreeing_to_recordings_while_leaving_the_panel_leaves_no_recordings_consent(
    db: Database, backend: str
) -> None:
    """Recordings end with panel contact. A member ticking recordings as they leave their
    panel must not be left agreeing to recordings on no panel."""
    crossing_writers_only(backend)
    with db.transaction() as session:
        panel_id = factories.panel(session).id or 0
        factories.member(
            session, panels.get_panel(session, panel_id), factories.person(session, PARENT)
        )

    def leave(session: Session) -> None:
        preferences.leave_panel(session, people.find_by_email(session, PARENT), panel_id)

    def agree() -> None:
        with db.transaction() as session:
            preferences.set_consent(
                session,
                people.find_by_email(session, PARENT),
                ledger.RECORDINGS,
                agree=True,
                notice_id=_notice_id(session, ledger.RECORDINGS),
            )

    meanwhile(db, leave, agree)
    states = _states(db, PARENT)
    assert states.get(ledger.PANEL_CONTACT) == "withdrawn"
    assert states.get(ledger.RECORDINGS) != "given"


def test_leaving_the_panel_while_agreeing_to_recordings_ends_them(
    db: Database, backend: str
) -> None:
    """The other way round: the member's unsubscribe read their consents (recordings once
    agreed and since withdrawn), then waited for their agreeing to recordings again;
    leaving must still end recordings with panel contact."""
    crossing_writers_only(backend)
    with db.transaction() as session:
        panel_id = factories.panel(session).id or 0
        person = factories.person(session, PARENT)
        factories.member(session, panels.get_panel(session, panel_id), person)
        ledger.give(session, person, ledger.RECORDINGS, channel="web_form", actor="self")
        ledger.withdraw(session, person, ledger.RECORDINGS, channel="web_form", actor="self")

    def agree(session: Session) -> None:
        preferences.set_consent(
            session,
            people.find_by_email(session, PARENT),
            ledger.RECORDINGS,
            agree=True,
            notice_id=_notice_id(session, ledger.RECORDINGS),
        )

    def stop() -> None:
        with db.transaction() as session:
            preferences.unsubscribe(
                session,
                people.find_by_email(session, PARENT),
                ledger.PANEL_CONTACT,
                one_click=False,
            )

    meanwhile(db, agree, stop)
    states = _states(db, PARENT)
    assert states.get(ledger.PANEL_CONTACT) == "withdrawn"
    assert states.get(ledger.RECORDINGS) != "given"


def _notice_id(session: Session, key: str) -> int:
    from consent.services import notices

    return notices.current_notice(session, notices.get_purpose(session, key)).id or 0


# ---- imports ------------------------------------------------------------------------------


def _import_members(session: Session, path: Path, panel_id: int) -> None:
    imports.commit(
        session, path, "panel_contact", actor="c", actor_id=None, source="t", panel_id=panel_id
    )


def _list(tmp_path: Path, *emails: str) -> Path:
    day = (utcnow() - timedelta(days=3)).astimezone(LONDON).date().isoformat()
    path = tmp_path / "list.csv"
    lines = [f"{email},{day},Sign-up sheet at the hub" for email in emails]
    path.write_text("email,consented_at,evidence\n" + "\n".join(lines) + "\n")
    return path


def test_an_import_crossing_a_stop_to_everything_does_not_subscribe_them(
    db: Database, backend: str, tmp_path: Path
) -> None:
    """Promise 10: someone who asks us to stop everything while a list naming them (with an
    older agreement) is imported is not imported as agreeing."""
    crossing_writers_only(backend)
    with db.transaction() as session:
        factories.consenting(session, "workshops", email=PARENT)
    path = _list(tmp_path, PARENT, "other@example.com")

    def stop_all(session: Session) -> None:
        preferences.unsubscribe(
            session, people.find_by_email(session, PARENT), None, one_click=True
        )

    def run() -> None:
        with db.transaction() as session:
            imports.commit(session, path, "newsletter", actor="c", actor_id=None, source="t")

    importing = meanwhile(db, stop_all, run)
    assert importing.error is None
    assert _states(db, "other@example.com") == {"newsletter": "given"}
    assert _states(db, PARENT).get("newsletter") != "given"


def test_a_panel_import_crossing_a_withdrawal_does_not_put_them_back(
    db: Database, backend: str, tmp_path: Path
) -> None:
    """Promise 5: someone who agreed to panel contact for one panel and withdraws while a
    list adds them to another is not left a member of it without that agreement."""
    crossing_writers_only(backend)
    with db.transaction() as session:
        north = factories.panel(session)
        river_id = factories.panel(session, "Riverside SEND Parent Carer Panel").id
        factories.member(session, north, factories.person(session, PARENT))
    path = _list(tmp_path, PARENT, "other@example.com")

    def withdraw(session: Session) -> None:
        ledger.withdraw(
            session,
            people.find_by_email(session, PARENT),
            ledger.PANEL_CONTACT,
            channel="web_form",
            actor="self",
        )

    def run() -> None:
        with db.transaction() as session:
            _import_members(session, path, river_id)

    meanwhile(db, withdraw, run)
    with db.reader() as session:
        person_id = people.find_by_email(session, PARENT).id
        live = session.scalar(
            select(func.count())
            .select_from(PanelMembership)
            .where(PanelMembership.person_id == person_id, PanelMembership.left_at.is_(None))
        )
    states = _states(db, PARENT)
    assert live == 0 or states.get(ledger.PANEL_CONTACT) == "given", (live, states)


def test_a_panel_import_crossing_the_panel_s_conclusion_leaves_no_member_data(
    db: Database, backend: str, tmp_path: Path
) -> None:
    """Promise 5: a list of members imported as the coordinator concludes the panel and the
    sweep destroys its data must not leave members on the concluded panel for good (the
    sweep looks at a concluded panel once)."""
    crossing_writers_only(backend)
    with db.transaction() as session:
        panel_id = factories.panel(session).id or 0
    path = _list(tmp_path, PARENT, "other@example.com")

    _crossing_a_conclusion(db, panel_id, lambda session: _import_members(session, path, panel_id))
    assert _left_on_the_panel(db, panel_id) == (0, 0)


# ---- panel invitations --------------------------------------------------------------------


def test_an_invitation_sent_as_the_person_declines_them_is_not_sent(
    db: Database, backend: str
) -> None:
    """Someone presses 'stop' on a panel email (they are on no panel, so it declines
    invitations) as a coordinator invites them: the invitation must not go."""
    crossing_writers_only(backend)
    with db.transaction() as session:
        panel_id = factories.panel(session).id or 0
        factories.person(session, PARENT)

    def decline(session: Session) -> None:
        stopping = preferences.unsubscribe(
            session, people.find_by_email(session, PARENT), ledger.PANEL_CONTACT, one_click=True
        )
        assert stopping.invitations

    def invite() -> None:
        with db.transaction() as session:
            panels.invite(session, panels.get_panel(session, panel_id), email=PARENT, name=None)

    inviting = meanwhile(db, decline, invite)
    with db.reader() as session:
        waiting = session.exec(
            select(Outbox.status).where(
                Outbox.template == "panel_invitation", Outbox.status != "cancelled"
            )
        ).all()
    assert waiting == [], inviting.error


def test_a_panel_import_waits_for_a_conclusion_made_meanwhile_and_is_refused(
    db: Database, backend: str, tmp_path: Path
) -> None:
    """The coordinator concludes the panel while its members are being imported: the import
    sees the conclusion before it commits, and adds nobody to the concluded panel."""
    crossing_writers_only(backend)
    with db.transaction() as session:
        panel_id = factories.panel(session).id or 0
    path = _list(tmp_path, PARENT, "other@example.com")

    def conclude(session: Session) -> None:
        panels.conclude(session, panels.get_panel(session, panel_id))

    def run() -> None:
        with db.transaction() as session:
            _import_members(session, path, panel_id)

    importing = meanwhile(db, conclude, run)
    assert isinstance(importing.error, imports.ImportRefused)
    with db.reader() as session:
        members = session.scalar(select(func.count()).select_from(PanelMembership))
    assert members == 0


def _members_list(tmp_path: Path, count: int) -> Path:
    return _list(tmp_path, *(f"member{n}@example.com" for n in range(count)))


def test_editing_a_panel_does_not_wait_for_a_whole_import_to_it(
    db: Database, backend: str, tmp_path: Path
) -> None:
    """An import of a long list of members takes a while: a coordinator renaming the panel,
    or closing it to new members, meanwhile must not wait for all of it."""
    crossing_writers_only(backend)
    with db.transaction() as session:
        panel_id = factories.panel(session).id or 0
    path = _members_list(tmp_path, 3000)

    def run() -> float:
        began = time.monotonic()
        with db.transaction() as session:
            _import_members(session, path, panel_id)
        return time.monotonic() - began

    importing = Beside(run)
    importing.start()
    time.sleep(0.3)
    began = time.monotonic()
    with db.transaction() as session:
        panel = panels.get_panel(session, panel_id)
        panels.update_panel(
            session,
            panel,
            name="Renamed panel",
            family_hub=panel.family_hub,
            description=panel.description,
            status="closed",
        )
    waited = time.monotonic() - began
    importing.join(timeout=120)
    assert importing.error is None
    assert importing.result > 1.0, "the import was too quick to show a wait"
    assert waited < 0.5, f"the edit waited {waited:.1f}s of a {importing.result:.1f}s import"
