"""Panel imports, at the service: who is added, who is already there, who must be invited."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta
from pathlib import Path

import pytest
import time_machine
from sqlalchemy import func, select

from consent.db import Database
from consent.models import ConsentEvent, PanelMembership, Person, StatCounter
from consent.options import options
from consent.services import imports, ledger, notices, panels, people
from consent.timeutil import LONDON, utcnow
from tests import factories
from tests.helpers import crossing_writers_only, meanwhile_erased


def _csv(tmp_path: Path, *emails: str) -> Path:
    day = (utcnow() - timedelta(days=1)).astimezone(LONDON).date().isoformat()
    path = tmp_path / "members.csv"
    lines = [f"{email},{day},Sign-up sheet at the hub" for email in emails]
    path.write_text("email,consented_at,evidence\n" + "\n".join(lines) + "\n")
    return path


def test_a_panel_import_adds_people_who_agreed_for_another_panel(
    db: Database, tmp_path: Path
) -> None:
    with db.transaction() as session:
        north = factories.panel(session)
        river = factories.panel(session, "Riverside SEND Parent Carer Panel")
        elsewhere = factories.member(
            session, north, factories.person(session, "ann@example.com")
        ).person_id
        factories.member(session, river, factories.person(session, "here@example.com"))
        left = factories.member(session, river, factories.person(session, "left@example.com"))
        factories.member(session, north, session.get(Person, left.person_id))
        panels.end_memberships_of(
            session, [left.person_id], reason="removed", at=utcnow(), panel_id=river.id
        )
        river_id = river.id
        events_before = session.execute(
            select(func.count()).where(ConsentEvent.person_id == elsewhere)
        ).scalar_one()
    path = _csv(
        tmp_path, "ann@example.com", "here@example.com", "left@example.com", "new@example.com"
    )
    with db.reader() as session:
        preview = imports.preview(session, path, "panel_contact", panel_id=river_id)
    messages = {row.line: (row.outcome, row.message) for row in preview.rows + preview.problems}
    assert messages[2] == (
        "import",
        "Already agreed to hear about panels: will be added to this panel.",
    )
    assert messages[3][0] == "already" and "Already on this panel" in messages[3][1]
    assert messages[4][0] == "error" and "invite them" in messages[4][1]
    assert messages[5][0] == "import"

    path = _csv(tmp_path, "ann@example.com", "here@example.com", "new@example.com")
    with db.transaction() as session:
        result = imports.commit(
            session, path, "panel_contact", actor="c", actor_id=None, source="t", panel_id=river_id
        )
    assert (result.to_import, result.already) == (2, 1)
    with db.reader() as session:
        active = {
            session.get(Person, membership.person_id).email: membership
            for membership in session.execute(
                select(PanelMembership).where(
                    PanelMembership.panel_id == river_id, PanelMembership.left_at.is_(None)
                )
            ).scalars()
        }
        assert set(active) == {"ann@example.com", "here@example.com", "new@example.com"}
        ann = people.find_by_email(session, "ann@example.com")
        state = ledger.states_for(session, ann)["panel_contact"]
        assert active["ann@example.com"].expires_at == state.expires_at
        events_after = session.execute(
            select(func.count()).where(ConsentEvent.person_id == elsewhere)
        ).scalar_one()
        assert events_after == events_before, "no new consent is invented for her"


def test_imported_members_are_counted_as_not_answered_in_every_breakdown(
    db: Database, tmp_path: Path
) -> None:
    """So each breakdown of the joining report adds up to the number who joined."""
    with db.transaction() as session:
        panel = factories.panel(session)
        factories.member(session, panel)
        panel_id = panel.id
    path = _csv(tmp_path, "ann@example.com", "ben@example.com")
    with db.transaction() as session:
        imports.commit(
            session, path, "panel_contact", actor="c", actor_id=None, source="t", panel_id=panel_id
        )
    with db.reader() as session:
        rows = session.execute(
            select(StatCounter.dimension, StatCounter.value, func.sum(StatCounter.count))
            .where(StatCounter.metric == "panel.joined", StatCounter.scope == f"panel:{panel_id}")
            .group_by(StatCounter.dimension, StatCounter.value)
        ).all()
    totals: dict[str, int] = {}
    for dimension, _, number in rows:
        totals[dimension] = totals.get(dimension, 0) + number
    questions = [q.key for q in options().special_category if not q.free_text]
    assert totals == {"all": 3, "age_band": 3} | {key: 3 for key in questions}
    assert ("age_band", "Not answered", 2) in rows


def test_agreement_to_recordings_cannot_be_imported(db: Database, tmp_path: Path) -> None:
    """The ledger lets only a panel member agree to recordings; a bulk import would skip
    that check and record it for people on no panel."""
    path = _csv(tmp_path, "norec@example.com")
    with db.transaction() as session, pytest.raises(imports.ImportRefused) as refused:
        imports.commit(session, path, "panel_recordings", actor="c", actor_id=None, source="t")
    assert "cannot be imported" in refused.value.message
    with db.reader() as session:
        assert people.find_by_email(session, "norec@example.com") is None


def test_a_list_naming_someone_erased_meanwhile_imports_nothing(
    db: Database, tmp_path: Path, backend: str
) -> None:
    crossing_writers_only(backend)
    with db.transaction() as session:
        person_id = factories.person(session, "rosa@example.com").id
    path = _csv(tmp_path, "rosa@example.com", "other@example.com")

    def run() -> None:
        with db.transaction() as session:
            imports.commit(session, path, "newsletter", actor="c", actor_id=None, source="t")

    importing = meanwhile_erased(db, person_id, run)
    assert isinstance(importing.error, imports.ImportRefused)
    assert "deleted while it was being imported" in importing.error.message
    with db.reader() as session:
        assert session.scalar(select(func.count()).select_from(ConsentEvent)) == 0
        assert people.find_by_email(session, "other@example.com") is None


def test_an_agreement_older_than_our_wording_is_not_said_to_be_to_it(
    db: Database, tmp_path: Path
) -> None:
    """The ledger records the words each person agreed to. A list that does not give them
    leaves them unknown for agreements older than the notice, not the notice's words."""
    day = utcnow().astimezone(LONDON)
    path = tmp_path / "list.csv"
    path.write_text(
        "email,consented_at,evidence,wording\n"
        f"old@example.com,{(day - timedelta(days=400)).date()},Paper form,\n"
        f"said@example.com,{(day - timedelta(days=400)).date()},Paper form,Yes please email me\n"
        f"new@example.com,{(day - timedelta(days=1)).date()},Paper form,\n"
    )
    with db.transaction() as session:
        notice = notices.current_notice(session, notices.get_purpose(session, "newsletter"))
        notice.published_at = utcnow() - timedelta(days=30)
        statement = notice.statement
    with db.transaction() as session:
        imports.commit(session, path, "newsletter", actor="c", actor_id=None, source="t")
    with db.reader() as session:
        wordings = {
            address: ledger.events_for(session, people.find_by_email(session, address))[0].wording
            for address in ("old@example.com", "said@example.com", "new@example.com")
        }
    assert wordings == {
        "old@example.com": imports.WORDING_NOT_KNOWN,
        "said@example.com": "Yes please email me",
        "new@example.com": statement,
    }


def _sheet(tmp_path: Path, body: str, header: str = "email,consented_at,evidence") -> Path:
    path = tmp_path / "list.csv"
    path.write_text(header + "\n" + body)
    return path


def test_a_sheet_dated_today_can_be_imported_in_the_morning(db: Database, tmp_path: Path) -> None:
    path = _sheet(tmp_path, "early@example.com,2027-03-05,Sign-up sheet at the hub\n")
    with (
        time_machine.travel(datetime(2027, 3, 5, 9, 30, tzinfo=UTC), tick=False),
        db.reader() as session,
    ):
        result = imports.preview(session, path, "newsletter")
    assert [p.message for p in result.problems] == []
    assert result.to_import == 1


def test_a_sheet_dated_the_day_of_a_withdrawal_does_not_undo_it(
    db: Database, tmp_path: Path
) -> None:
    with (
        time_machine.travel(datetime(2027, 3, 5, 8, 0, tzinfo=UTC), tick=False),
        db.transaction() as session,
    ):
        factories.consenting(session, "newsletter", email="mum@example.com")
    with (
        time_machine.travel(datetime(2027, 3, 5, 11, 0, tzinfo=UTC), tick=False),
        db.transaction() as session,
    ):
        person = people.find_by_email(session, "mum@example.com")
        ledger.withdraw(session, person, "newsletter", channel="email_link", actor="self")
    path = _sheet(tmp_path, "mum@example.com,2027-03-05,Sign-up sheet at the hub\n")
    with (
        time_machine.travel(datetime(2027, 3, 5, 15, 0, tzinfo=UTC), tick=False),
        db.reader() as session,
    ):
        result = imports.preview(session, path, "newsletter")
    assert (result.to_import, result.suppressed) == (0, 1)


def test_panel_contact_past_its_limit_is_not_taken_as_agreeing(
    db: Database, tmp_path: Path
) -> None:
    """Before the sweep records the expiry, the sheet's fresh agreement must still be
    recorded, and the new membership must not start out expired."""
    now = utcnow()
    with time_machine.travel(now - timedelta(days=740), tick=False), db.transaction() as s:
        north = factories.panel(s)
        river = factories.panel(s, "Riverside SEND Parent Carer Panel")
        factories.member(s, north, factories.person(s, "lapsed@example.com"))
        river_id = river.id
    path = _csv(tmp_path, "lapsed@example.com")
    with db.transaction() as session:
        imports.commit(
            session, path, "panel_contact", actor="c", actor_id=None, source="t", panel_id=river_id
        )
    with db.reader() as session:
        person = people.find_by_email(session, "lapsed@example.com")
        expires = session.execute(
            select(PanelMembership.expires_at).where(
                PanelMembership.panel_id == river_id, PanelMembership.person_id == person.id
            )
        ).scalar_one()
        assert ledger.has_consent(session, person, "panel_contact")
        assert expires > now + timedelta(days=700)


def test_an_old_agreement_before_a_lapse_is_not_imported(db: Database, tmp_path: Path) -> None:
    now = utcnow()
    with time_machine.travel(now - timedelta(days=740), tick=False), db.transaction() as s:
        factories.member(s, factories.panel(s), factories.person(s, "lapsed@example.com"))
        river_id = factories.panel(s, "Riverside SEND Parent Carer Panel").id
    old = (now - timedelta(days=20)).astimezone(LONDON).date().isoformat()
    path = _sheet(tmp_path, f"lapsed@example.com,{old},Sign-up sheet at the hub\n")
    with db.reader() as session:
        result = imports.preview(session, path, "panel_contact", panel_id=river_id)
    assert (result.to_import, result.suppressed, result.errors) == (0, 1, 0)


def test_a_row_with_more_values_than_columns_is_a_problem(db: Database, tmp_path: Path) -> None:
    path = _sheet(
        tmp_path,
        "cut@example.com,2026-01-10,Paper form,I agree to the newsletter, but not to events\n"
        "fine@example.com,2026-01-10,Paper form,I agree to the newsletter\n",
        header="email,consented_at,evidence,wording",
    )
    with db.reader() as session:
        result = imports.preview(session, path, "newsletter")
    assert [(p.line, p.message[:38]) for p in result.problems] == [
        (2, "This row has more values than the file")
    ]
    assert result.to_import == 1


def test_problems_name_the_line_the_row_starts_on(db: Database, tmp_path: Path) -> None:
    path = _sheet(
        tmp_path,
        'one@example.com,2026-01-10,"Paper form,\nsigned at the hub"\n'
        "\n"
        "not-an-address,2026-01-10,Paper form\n"
        'two@example.com,2026-01-10,"Paper form,\r\nsigned\r\nat the hub",\n'
        "also-not-an-address,2026-01-10,Paper form\n",
    )
    # The trailing comma after the second address's row is an empty surplus value, as
    # Excel writes when another row has a value beyond the last column: not a problem.
    with db.reader() as session:
        result = imports.preview(session, path, "newsletter")
    assert [p.line for p in result.problems] == [5, 9]
