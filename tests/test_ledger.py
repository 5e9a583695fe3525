"""The consent ledger: what each action records, and that tampering is always caught."""

from __future__ import annotations

import threading
import time
from datetime import timedelta

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func, text
from sqlalchemy.exc import DBAPIError, IntegrityError
from sqlmodel import Session, select

from consent.db import Database
from consent.errors import Erased, InvalidInput, NotConsented, UnknownPurpose
from consent.models import (
    ConsentEvent,
    ConsentState,
    PanelMembership,
    PanelProfile,
    Person,
    StatCounter,
)
from consent.services import ledger, mailchimp, notices, panels, people, reports
from consent.timeutil import utcnow
from tests import factories
from tests.helpers import tamper

PURPOSES = ["newsletter", "workshops", "panel_contact", "panel_recordings", "family_hub_events"]


def _events(session: Session, person_id: int) -> list[ConsentEvent]:
    return list(
        session.exec(
            select(ConsentEvent)
            .where(ConsentEvent.person_id == person_id)
            .order_by(ConsentEvent.seq)
        )
    )


def test_give_records_who_when_how_and_the_wording_shown(session: Session) -> None:
    person = factories.person(session)
    before = utcnow()
    event = ledger.give(session, person, "newsletter", channel="web_form", actor="self")
    assert event is not None
    notice = notices.current_notice(session, notices.get_purpose(session, "newsletter"))
    assert event.notice_id == notice.id
    assert event.wording == notice.statement
    assert event.channel == "web_form" and event.actor == "self"
    assert event.occurred_at >= before
    state = ledger.states_for(session, person)["newsletter"]
    assert (state.status, state.last_event_id, state.notice_id) == ("given", event.id, notice.id)
    stored = session.get(ConsentEvent, event.id)
    assert stored is not None and stored is not event
    assert stored.model_dump() == event.model_dump(), "the event returned is the event stored"


def test_each_purpose_is_separate(session: Session) -> None:
    person = factories.consenting(session, "newsletter")
    states = ledger.states_for(session, person)
    assert set(states) == {"newsletter"}
    for key in PURPOSES[1:]:
        assert not ledger.has_consent(session, person, key)


def test_giving_again_records_nothing_unless_the_notice_changed(session: Session) -> None:
    person = factories.consenting(session, "newsletter")
    assert ledger.give(session, person, "newsletter", channel="web_form", actor="self") is None
    assert len(_events(session, person.id)) == 1

    first = notices.current_notice(session, notices.get_purpose(session, "newsletter"))
    second = notices.publish(session, "newsletter", "Yes, email me the newsletter.", "New text.")
    assert second.version == first.version + 1
    event = ledger.give(session, person, "newsletter", channel="email_link", actor="self")
    assert event is not None and event.notice_id == second.id
    events = _events(session, person.id)
    assert [e.notice_id for e in events] == [first.id, second.id]
    assert session.get(type(first), first.id).text == first.text


def test_agreeing_to_older_wording_never_moves_consent_back_to_it(session: Session) -> None:
    """An old form or link used late must not replace the newer wording the person agreed to."""
    first = notices.current_notice(session, notices.get_purpose(session, "newsletter"))
    second = notices.publish(session, "newsletter", "Yes, email me the newsletter.", "New text.")
    person = factories.person(session)
    ledger.give(session, person, "newsletter", channel="web_form", actor="self", notice=second)
    older = ledger.give(
        session, person, "newsletter", channel="web_form", actor="self", notice=first
    )
    assert older is None
    assert [e.notice_id for e in _events(session, person.id)] == [second.id]
    assert ledger.states_for(session, person)["newsletter"].notice_id == second.id

    ledger.withdraw(session, person, "newsletter", channel="email_link", actor="self")
    again = ledger.give(
        session, person, "newsletter", channel="web_form", actor="self", notice=first
    )
    assert again is not None and again.notice_id == first.id, "a fresh agreement is recorded"


def test_withdraw_then_withdraw_again_is_harmless(session: Session) -> None:
    person = factories.consenting(session, "newsletter")
    assert ledger.withdraw(session, person, "newsletter", channel="email_link", actor="self")
    assert (
        ledger.withdraw(session, person, "newsletter", channel="email_link", actor="self") is None
    )
    assert [e.action for e in _events(session, person.id)] == ["given", "withdrawn"]
    assert ledger.states_for(session, person)["newsletter"].status == "withdrawn"


def test_withdrawing_what_was_never_given_is_refused_and_writes_nothing(db: Database) -> None:
    with db.transaction() as session:
        person = factories.person(session)
        person_id = person.id
    with pytest.raises(NotConsented), db.transaction() as session:
        ledger.withdraw(session, person, "newsletter", channel="web_form", actor="self")
    with db.reader() as session:
        assert session.exec(select(func.count()).select_from(ConsentEvent)).one() == 0
        assert session.get(ConsentState, (person_id, 1)) is None


def test_renew_restarts_the_clock_and_needs_consent_in_force(session: Session) -> None:
    person = factories.person(session)
    start = utcnow() - timedelta(days=700)
    ledger.give(session, person, "panel_contact", channel="web_form", actor="self", at=start)
    state = ledger.states_for(session, person)["panel_contact"]
    assert state.expires_at == start + timedelta(days=730)
    ledger.renew(session, person, "panel_contact", channel="email_link", actor="self")
    state = ledger.states_for(session, person)["panel_contact"]
    assert state.expires_at > utcnow() + timedelta(days=729)
    ledger.expire(session, person, "panel_contact")
    with pytest.raises(NotConsented):
        ledger.renew(session, person, "panel_contact", channel="email_link", actor="self")
    assert [e.action for e in _events(session, person.id)] == ["given", "renewed", "expired"]


def test_expire_needs_consent_in_force(session: Session) -> None:
    person = factories.person(session)
    with pytest.raises(NotConsented):
        ledger.expire(session, person, "panel_contact")


def test_unknown_purpose_and_channel_are_refused(session: Session) -> None:
    person = factories.person(session)
    with pytest.raises(UnknownPurpose):
        ledger.give(session, person, "marketing", channel="web_form", actor="self")
    with pytest.raises(InvalidInput):
        ledger.give(session, person, "newsletter", channel="carrier_pigeon", actor="self")
    with pytest.raises(InvalidInput):
        ledger.give(session, person, "newsletter", channel="web_form", actor="self\x00")
    with pytest.raises(InvalidInput):
        ledger.give(session, person, "newsletter", channel="web_form", actor="x" * 101)


def test_nothing_is_recorded_for_someone_whose_details_were_deleted(session: Session) -> None:
    person = factories.consenting(session, "newsletter")
    people.erase(session, person, channel="admin", actor="dpo@example.gov.uk", note="Asked")
    before = len(_events(session, person.id))
    for action in (ledger.give, ledger.withdraw, ledger.renew):
        with pytest.raises(Erased):
            action(session, person, "newsletter", channel="web_form", actor="self")
    with pytest.raises(Erased):
        ledger.expire(session, person, "newsletter")
    assert len(_events(session, person.id)) == before
    assert ledger.states_for(session, person)["newsletter"].status == "withdrawn"


def test_admin_on_behalf_needs_a_note(session: Session) -> None:
    person = factories.person(session)
    with pytest.raises(InvalidInput) as error:
        ledger.give(session, person, "newsletter", channel="admin", actor="admin:1")
    assert error.value.field == "note"
    event = ledger.give(
        session,
        person,
        "newsletter",
        channel="admin",
        actor="admin:1",
        note="Phoned on 3 March; agreed after hearing the notice read out.",
    )
    assert event is not None and event.note_digest


def test_withdrawing_panel_contact_ends_memberships_and_destroys_panel_data(
    session: Session,
) -> None:
    panel = factories.panel(session)
    membership = factories.member(session, panel)
    person_id = membership.person_id
    person = session.get(type(factories.person(session)), person_id)
    ledger.withdraw(session, person, "panel_contact", channel="email_link", actor="self")
    session.refresh(membership)
    assert membership.left_at is not None and membership.left_reason == "withdrawn"
    assert session.exec(select(PanelProfile)).all() == []


@pytest.mark.parametrize("end", ["withdraw", "expire"])
def test_recordings_end_with_panel_contact_in_the_same_way(session: Session, end: str) -> None:
    person = factories.consenting(session, "panel_contact", "panel_recordings")
    if end == "withdraw":
        ledger.withdraw(
            session, person, "panel_contact", channel="admin", actor="admin:4", note="Rang us"
        )
    else:
        ledger.expire(session, person, "panel_contact", actor="system:retention")
    contact, recordings = [
        e for e in ledger.events_for(session, person) if e.action in ("withdrawn", "expired")
    ]
    assert contact.purpose_id != recordings.purpose_id
    for field in ("action", "channel", "actor", "note_digest", "occurred_at"):
        assert getattr(recordings, field) == getattr(contact, field), field
    assert ledger.states_for(session, person)["panel_recordings"].status != "given"
    assert ledger.verify(session).ok


def test_renewing_panel_contact_extends_membership(session: Session) -> None:
    panel = factories.panel(session)
    start = utcnow() - timedelta(days=600)
    membership = factories.member(session, panel, at=start)
    other = factories.member(session, panel, at=start)
    assert membership.expires_at == start + timedelta(days=730)
    person = session.get(type(factories.person(session)), membership.person_id)
    ledger.renew(session, person, "panel_contact", channel="email_link", actor="self")
    assert membership.expires_at > utcnow() + timedelta(days=729), "the loaded copy is stale"
    assert membership not in session.dirty
    session.refresh(membership)
    assert membership.expires_at > utcnow() + timedelta(days=729)
    session.refresh(other)
    assert other.expires_at == start + timedelta(days=730)


def test_renewing_panel_contact_leaves_ended_memberships_alone(session: Session) -> None:
    first, second = factories.panel(session), factories.panel(session, name="Southfield Panel")
    start = utcnow() - timedelta(days=600)
    ended = factories.member(session, first, at=start)
    person = session.get(type(factories.person(session)), ended.person_id)
    panels.end_memberships_of(session, [person.id], reason="left", at=utcnow(), panel_id=first.id)
    left_expiry = ended.expires_at
    current = factories.member(session, second, person, at=start)
    ledger.renew(session, person, "panel_contact", channel="email_link", actor="self")
    assert ended.expires_at == left_expiry and current.expires_at > utcnow()
    session.expire_all()
    assert ended.expires_at == left_expiry
    assert current.expires_at > utcnow() + timedelta(days=729)


def test_counts_are_recorded_when_consent_is_given(session: Session) -> None:
    factories.consenting(session, "newsletter")
    factories.consenting(session, "newsletter")
    period = reports.period_of(utcnow())
    counter = session.exec(
        select(StatCounter).where(
            StatCounter.metric == "consent.given",
            StatCounter.value == "newsletter",
            StatCounter.period == period,
        )
    ).one()
    assert counter.count == 2


def test_a_failure_half_way_leaves_the_database_as_it_was(
    db: Database, monkeypatch: pytest.MonkeyPatch
) -> None:
    with db.transaction() as session:
        person = factories.person(session)

    def explode(*args: object, **kwargs: object) -> None:
        raise RuntimeError("disk full")

    def counters() -> list[tuple[str, str, int]]:
        with db.reader() as session:
            rows = session.exec(select(StatCounter.metric, StatCounter.value, StatCounter.count))
            return sorted(rows.all())

    before = counters()
    monkeypatch.setattr(mailchimp, "queue_subscribe", explode)
    with pytest.raises(RuntimeError), db.transaction() as session:
        ledger.give(session, person, "newsletter", channel="web_form", actor="self")
    with db.reader() as session:
        assert session.exec(select(func.count()).select_from(ConsentEvent)).one() == 0
        assert session.exec(select(func.count()).select_from(ConsentState)).one() == 0
    assert counters() == before


def test_the_database_refuses_to_edit_or_delete_events(db: Database) -> None:
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter")
    for statement in (
        "UPDATE consent_event SET action = 'withdrawn'",
        "DELETE FROM consent_event",
        "UPDATE consent_event SET note = 'added later'",
    ):
        with pytest.raises((DBAPIError, IntegrityError)), db.engine.begin() as conn:
            conn.execute(text(statement))
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE consent_event SET note = NULL"))
    with db.reader() as session:
        assert [e.action for e in _events(session, person.id)] == ["given"]
        assert ledger.verify(session).ok


# ---- property tests: any history keeps state and chain consistent ----------------------

OPERATIONS = st.lists(
    st.tuples(st.sampled_from(["give", "withdraw", "renew", "expire"]), st.sampled_from(PURPOSES)),
    min_size=1,
    max_size=25,
)


def _apply(session: Session, person: object, operation: str, key: str) -> None:
    try:
        if operation == "give":
            ledger.give(session, person, key, channel="web_form", actor="self")
        elif operation == "withdraw":
            ledger.withdraw(session, person, key, channel="email_link", actor="self")
        elif operation == "renew":
            ledger.renew(session, person, key, channel="email_link", actor="self")
        else:
            ledger.expire(session, person, key)
    except NotConsented:
        pass
    except InvalidInput as refused:
        assert (operation, key, refused.field) == ("give", *[ledger.RECORDINGS] * 2)


FIXTURES_OK = [HealthCheck.function_scoped_fixture]


@settings(
    max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(operations=OPERATIONS)
def test_any_history_leaves_state_equal_to_the_last_event(
    db: Database, operations: list[tuple[str, str]]
) -> None:
    with db.transaction() as session:
        person = factories.person(session)
        for operation, key in operations:
            _apply(session, person, operation, key)
    with db.reader() as session:
        events = _events(session, person.id)
        assert [e.seq for e in events] == list(range(1, len(events) + 1))
        last: dict[int, ConsentEvent] = {}
        for event in events:
            last[event.purpose_id] = event
        states = session.exec(select(ConsentState).where(ConsentState.person_id == person.id)).all()
        assert {s.purpose_id for s in states} == set(last)
        for state in states:
            event = last[state.purpose_id]
            assert state.last_event_id == event.id
            assert state.status == ledger.ACTION_STATUS[event.action]
            assert state.notice_id == event.notice_id
        status = {key: state.status for key, state in ledger.states_for(session, person).items()}
        if status.get(ledger.RECORDINGS) == "given":
            assert status[ledger.PANEL_CONTACT] == "given"
        assert ledger.verify(session).ok


TAMPERING = {
    "edit action": "UPDATE consent_event SET action = CASE WHEN action = 'given' "
    "THEN 'withdrawn' ELSE 'given' END WHERE id = :victim",
    "edit channel": "UPDATE consent_event SET channel = 'import' WHERE id = :victim",
    "edit actor": "UPDATE consent_event SET actor = 'someone else' WHERE id = :victim",
    "edit wording": "UPDATE consent_event SET wording = wording || '.' WHERE id = :victim",
    "edit purpose": "UPDATE consent_event SET purpose_id = 5 - purpose_id WHERE id = :victim",
    "edit note": "UPDATE consent_event SET note = 'edited' WHERE id = :victim",
    "edit prev hash": "UPDATE consent_event SET prev_hash = hash WHERE id = :victim",
    "delete": "DELETE FROM consent_event WHERE id = :victim",
}


@pytest.mark.parametrize("kind", sorted(TAMPERING))
def test_editing_or_deleting_any_event_makes_verify_fail(db: Database, kind: str) -> None:
    with db.transaction() as session:
        person = factories.person(session)
        ledger.give(
            session,
            person,
            "newsletter",
            channel="admin",
            actor="admin:1",
            note="Agreed on the phone.",
        )
        ledger.give(session, person, "workshops", channel="web_form", actor="self")
        ledger.withdraw(session, person, "newsletter", channel="email_link", actor="self")
        ledger.give(session, person, "family_hub_events", channel="web_form", actor="self")
        victim = _events(session, person.id)[0 if kind == "edit note" else 1].id
    with db.reader() as session:
        assert ledger.verify(session).ok
    tamper(db.engine, TAMPERING[kind], params={"victim": victim})
    with db.reader() as session:
        report = ledger.verify(session)
    assert not report.ok, kind


@settings(
    max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(data=st.data())
def test_swapping_any_two_events_makes_verify_fail(db: Database, data: st.DataObject) -> None:
    with db.transaction() as session:
        person = factories.person(session)
        for key in ("newsletter", "workshops", "family_hub_events"):
            ledger.give(session, person, key, channel="web_form", actor="self")
        ledger.withdraw(session, person, "workshops", channel="email_link", actor="self")
        seqs = {e.id: e.seq for e in _events(session, person.id)}
    first, second = data.draw(
        st.lists(st.sampled_from(sorted(seqs)), min_size=2, max_size=2, unique=True), label="swap"
    )
    tamper(
        db.engine,
        "UPDATE consent_event SET seq = -1 WHERE id = :a",
        "UPDATE consent_event SET seq = :seq_a WHERE id = :b",
        "UPDATE consent_event SET seq = :seq_b WHERE id = :a",
        params={"a": first, "b": second, "seq_a": seqs[first], "seq_b": seqs[second]},
    )
    with db.reader() as session:
        assert not ledger.verify(session).ok


def test_two_writers_for_one_person_chain_one_after_the_other(db: Database) -> None:
    """The second writer waits for the first to commit, then chains onto its event: it must
    not read the chain head from before the first writer committed."""
    with db.transaction() as session:
        person_id = factories.person(session).id
    first_written, second_started = threading.Event(), threading.Event()
    errors: list[BaseException] = []

    def first() -> None:
        try:
            with db.transaction() as session:
                person = session.get(Person, person_id)
                ledger.give(session, person, "newsletter", channel="web_form", actor="self")
                first_written.set()
                second_started.wait(10)
                time.sleep(0.4)
        except BaseException as error:
            errors.append(error)
            first_written.set()

    def second() -> None:
        try:
            first_written.wait(10)
            second_started.set()
            with db.transaction() as session:
                person = session.get(Person, person_id)
                ledger.give(session, person, "workshops", channel="web_form", actor="self")
        except BaseException as error:
            errors.append(error)

    threads = [threading.Thread(target=first), threading.Thread(target=second)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert errors == []
    with db.reader() as session:
        events = ledger.events_for(session, session.get(Person, person_id))
        assert [(e.seq, e.action) for e in events] == [(1, "given"), (2, "given")]
        assert events[1].prev_hash == events[0].hash
        states = ledger.states_for(session, session.get(Person, person_id))
        assert {key for key, state in states.items() if state.status == "given"} == {
            "newsletter",
            "workshops",
        }
        assert ledger.verify(session).ok


def test_renewing_extends_a_membership_reopened_earlier_in_the_same_transaction(
    db: Database,
) -> None:
    start = utcnow() - timedelta(days=600)
    with db.transaction() as session:
        membership = factories.member(session, factories.panel(session), at=start)
        membership_id, person_id = membership.id, membership.person_id
        panels.end_memberships_of(session, [person_id], reason="left", at=utcnow())
    with db.transaction() as session:
        person = session.get(Person, person_id)
        reopened = session.get(PanelMembership, membership_id)
        reopened.left_at, reopened.left_reason = None, None
        ledger.renew(session, person, "panel_contact", channel="email_link", actor="self")
    with db.reader() as session:
        stored = session.get(PanelMembership, membership_id)
        assert stored.left_at is None
        assert stored.expires_at > utcnow() + timedelta(days=729)
