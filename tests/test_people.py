"""People: one record per mailbox, corrections recorded, and erasure that leaves nothing."""

from __future__ import annotations

import logging
import unicodedata
from datetime import timedelta
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from sqlalchemy import func
from sqlalchemy.exc import IntegrityError
from sqlmodel import Session, select

from consent import crypto, log_privacy
from consent.db import Database
from consent.errors import Conflict, InvalidInput, Suppressed
from consent.links import RevokedLink, make_token, resolve
from consent.models import (
    Booking,
    ConsentEvent,
    PendingSignup,
    Person,
    PersonChange,
    RightsRequest,
    Suppression,
    Workshop,
)
from consent.services import (
    casework,
    imports,
    ledger,
    notices,
    panels,
    people,
    signups,
    workshops,
)
from consent.timeutil import LONDON, utcnow
from consent.validation import normalise_email, normalise_phone
from tests import factories
from tests.helpers import find_anywhere


@pytest.mark.parametrize(
    "typed",
    [
        "Jo.Bloggs@Example.COM",
        "  jo.bloggs@example.com\t",
        "JO.BLOGGS@EXAMPLE.COM ",
    ],
)
def test_addresses_are_normalised_to_one_spelling(typed: str) -> None:
    assert normalise_email(typed) == "jo.bloggs@example.com"


def test_unicode_spellings_of_one_address_are_the_same_person(session: Session) -> None:
    composed = unicodedata.normalize("NFC", "zoë@example.com")
    decomposed = unicodedata.normalize("NFD", "ZOË@example.com")
    assert composed != decomposed
    first = people.find_or_create(session, composed)
    second = people.find_or_create(session, decomposed)
    assert first.id == second.id
    assert session.exec(select(func.count()).select_from(Person)).one() == 1


@pytest.mark.parametrize(
    "bad",
    [
        "",
        "   ",
        "not-an-email",
        "a@b",
        "jo@@example.com",
        "jo bloggs@example.com",
        "jo@example.com\x00",
        "jo\r\n@example.com",
        "x" * 250 + "@example.com",
        None,
        42,
    ],
)
def test_invalid_addresses_are_refused_with_a_clear_message(bad: object) -> None:
    with pytest.raises(InvalidInput) as error:
        normalise_email(bad)  # type: ignore[arg-type]
    assert error.value.field == "email"
    assert "email address" in error.value.message.lower()


FIXTURES_OK = [HealthCheck.function_scoped_fixture]


@settings(
    max_examples=150, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture]
)
@given(text=st.text(max_size=300))
def test_any_text_either_normalises_or_is_refused_and_nothing_is_written(
    db: Database, text: str
) -> None:
    with db.reader() as session:
        before = session.exec(select(func.count()).select_from(Person)).one()
    try:
        with db.transaction() as session:
            person = people.find_or_create(session, text, name=text)
            assert person.email == normalise_email(person.email)
            assert len(person.email) <= 254
    except InvalidInput:
        with db.reader() as session:
            assert session.exec(select(func.count()).select_from(Person)).one() == before


def test_find_or_create_reuses_the_record(session: Session) -> None:
    first = people.find_or_create(session, "sam@example.com")
    second = people.find_or_create(session, "SAM@example.com", name="Sam Patel")
    assert first.id == second.id and second.name == "Sam Patel"


def test_correcting_details_records_which_fields_but_not_their_values(session: Session) -> None:
    person = factories.person(session, name="Sam Patel")
    factories.member(session, factories.panel(session), person)
    changed = people.correct_details(
        session,
        person,
        {"name": "Sam Patel-Jones", "phone": "07700 900982", "postcode": "ne1 4st"},
        channel="email_link",
        actor="self",
    )
    assert sorted(changed) == ["name", "phone", "postcode"]
    assert (person.phone, person.postcode) == ("+447700900982", "NE1 4ST")
    record = session.exec(select(PersonChange)).one()
    assert record.fields == "name,phone,postcode" and record.channel == "email_link"
    assert "Jones" not in (record.note or "")
    assert (
        people.correct_details(
            session, person, {"name": "Sam Patel-Jones"}, channel="email_link", actor="self"
        )
        == []
    )


def test_names_beginning_outside_ascii_are_found_however_they_were_written(
    db: Database, tmp_path: Path
) -> None:
    """SQLite's lower() folds ASCII only, so search reads a key case-folded in Python: every
    way a name is written must keep that key, and erasure must blank it."""
    day = (utcnow() - timedelta(days=1)).astimezone(LONDON).date().isoformat()
    sheet = tmp_path / "sheet.csv"
    sheet.write_text(
        f"email,name,consented_at,evidence\nzofia@example.com,Żaneta Nowak,{day},Hub\n"
    )
    with db.transaction() as session:
        people.find_or_create(session, "elodie@example.com", name="Élodie Martin")
        people.find_or_create(session, "lukasz@example.com")
        people.find_or_create(session, "lukasz@example.com", name="Łukasz Nowak")
        corrected = factories.person(session, "unal@example.com", name="Ozil")
        people.correct_details(
            session, corrected, {"name": "Özil Ünal"}, channel="admin", actor="admin:1"
        )
        gone = factories.person(session, "oscar@example.com", name="Ørjan Berg")
        imports.commit(session, sheet, "newsletter", actor="c", actor_id=None, source="t")
    with db.transaction() as session:
        people.erase(session, session.get(Person, gone.id), channel="admin", actor="admin:1")
    with db.reader() as session:
        found = {
            typed: [person.email for person in casework.search(session, typed)]
            for typed in ("élodie", "ÉLODIE M", "łukasz", "ÖZIL", "żaneta", "ørjan", "Ozil")
        }
        keys = session.execute(select(Person.name_key).where(Person.erased_at.is_not(None)))
        assert list(keys.scalars()) == [None]
    assert found == {
        "élodie": ["elodie@example.com"],
        "ÉLODIE M": ["elodie@example.com"],
        "łukasz": ["lukasz@example.com"],
        "ÖZIL": ["unal@example.com"],
        "żaneta": ["zofia@example.com"],
        "ørjan": [],
        "Ozil": [],
    }


def test_only_a_panel_member_s_phone_number_is_kept(session: Session) -> None:
    """It is asked for so the Family Hub team can call about meetings, and goes with the
    last membership: someone on no panel would otherwise keep it for as long as they are
    held for anything else."""
    person = factories.consenting(session, "newsletter", email="news@example.com")
    with pytest.raises(InvalidInput) as refused:
        people.correct_details(
            session, person, {"phone": "07700 900982"}, channel="email_link", actor="self"
        )
    assert refused.value.field == "phone" and person.phone is None
    factories.member(session, factories.panel(session), person)
    people.correct_details(
        session, person, {"phone": "07700 900982"}, channel="email_link", actor="self"
    )
    assert person.phone == "+447700900982"
    ledger.withdraw(session, person, "panel_contact", channel="email_link", actor="self")
    assert person.phone is None
    with pytest.raises(InvalidInput):
        people.correct_details(
            session, person, {"phone": "07700 900982"}, channel="email_link", actor="self"
        )


def test_a_number_kept_from_before_does_not_stop_other_corrections(session: Session) -> None:
    """Saved before only members' numbers were kept (the upgrade drops such numbers, but one
    page may be open across it): sent back unchanged, it is no new number."""
    person = factories.consenting(session, "newsletter", email="news@example.com")
    person.phone = "+447700900982"
    changed = people.correct_details(
        session,
        person,
        {"name": "New Name", "phone": "+447700900982"},
        channel="email_link",
        actor="self",
    )
    assert changed == ["name"]


@pytest.mark.parametrize(
    ("typed", "stored"),
    [
        ("07911 123456", "+447911123456"),
        ("0161 496 0000", "+441614960000"),
        ("+1 202 555 0143", "+12025550143"),
        ("07700 900982", "+447700900982"),  # Ofcom's range for examples, as our hints use
        ("01632 960001", "+441632960001"),
    ],
)
def test_a_phone_number_that_can_be_dialled_is_kept_in_full_form(typed: str, stored: str) -> None:
    assert normalise_phone(typed) == stored


@pytest.mark.parametrize(
    ("typed", "message"),
    [
        ("07700 90098", "Enter a full telephone number"),  # a digit short
        ("07911 12345", "Enter a full telephone number"),
        ("01234", "Enter a full telephone number"),  # a local number without its area code
        ("00000 000000", "Enter a full telephone number"),
        ("01632 960001 ext 123", "without an extension"),
    ],
)
def test_a_phone_number_we_could_not_call_is_refused(typed: str, message: str) -> None:
    with pytest.raises(InvalidInput) as refused:
        normalise_phone(typed)
    assert message in refused.value.message


@pytest.mark.parametrize(
    ("field", "value"),
    [
        ("name", "x" * 201),
        ("name", "Sam\x07"),
        ("phone", "12"),
        ("postcode", "NOPE"),
        ("email", "someone@example.com"),
    ],
)
def test_bad_corrections_are_refused_and_nothing_changes(
    db: Database, field: str, value: str
) -> None:
    with db.transaction() as session:
        person_id = factories.person(session, name="Sam Patel").id
    with pytest.raises(InvalidInput), db.transaction() as session:
        person = session.get(Person, person_id)
        people.correct_details(
            session,
            person,
            {"postcode": "NE1 4ST", field: value},
            channel="email_link",
            actor="self",
        )
    with db.reader() as session:
        again = session.get(Person, person_id)
        assert (again.name, again.postcode) == ("Sam Patel", None)
        assert session.exec(select(func.count()).select_from(PersonChange)).one() == 0


def test_an_address_used_by_someone_else_cannot_be_taken(session: Session) -> None:
    factories.person(session, "taken@example.com")
    person = factories.person(session)
    with pytest.raises(Conflict):
        people.change_email(session, person, "Taken@example.com", channel="admin", actor="a:1")


def _book(session: Session, workshop: Workshop, email: str) -> tuple[Booking, bool]:
    return workshops.book(
        session,
        workshop,
        name="Bea Booker",
        email=email,
        setting=None,
        district="Riverside",
        job_role="Volunteer",
    )


def test_a_booker_who_changed_address_books_no_second_place_on_a_workshop(
    session: Session,
) -> None:
    workshop = factories.workshop(session, capacity=5)
    first = factories.booking(session, workshop, email="old@example.com")
    person = people.find_by_email(session, "old@example.com")
    people.change_email(session, person, "new@example.com", channel="email_link", actor="self")
    again, created = _book(session, workshop, "new@example.com")
    assert (again.id, created) == (first.id, False)
    assert workshops.places_taken(session, workshop) == 1


def test_a_place_booked_under_an_address_no_longer_used_still_counts_as_theirs(
    session: Session,
) -> None:
    """Bookings made before they followed their booker to a new address keep the old one."""
    workshop = factories.workshop(session, capacity=5)
    person = factories.person(session, "now@example.com")
    before = Booking(workshop_id=workshop.id, person_id=person.id, email="before@example.com")
    session.add(before)
    session.flush()
    again, created = _book(session, workshop, "now@example.com")
    assert (again.id, created) == (before.id, False)


def test_a_booking_follows_its_booker_to_their_new_address(session: Session) -> None:
    """The coordinator's list and the booker's download show the address we now use, and
    whoever takes the old address next is not mistaken for the booker."""
    workshop = factories.workshop(session, capacity=5)
    booking = factories.booking(session, workshop, email="old@example.com")
    person = people.find_by_email(session, "old@example.com")
    people.change_email(session, person, "new@example.com", channel="email_link", actor="self")
    assert booking.email == "new@example.com"
    theirs, created = workshops.book(
        session,
        workshop,
        name="Someone Else",
        email="old@example.com",
        setting=None,
        district="Riverside",
        job_role="Volunteer",
    )
    assert created and theirs.id != booking.id
    assert theirs.person_id != person.id
    assert workshops.places_taken(session, workshop) == 2


def test_someone_booked_twice_on_one_workshop_can_still_change_address(
    session: Session,
) -> None:
    """Two places under two old addresses (booked before bookings followed their booker)
    cannot both take the new address: one workshop keeps one booking per address."""
    workshop = factories.workshop(session, capacity=5)
    first = factories.booking(session, workshop, email="old@example.com")
    person = people.find_by_email(session, "old@example.com")
    session.add(Booking(workshop_id=workshop.id, person_id=person.id, email="mid@example.com"))
    session.flush()
    people.change_email(session, person, "new@example.com", channel="email_link", actor="self")
    moved = session.exec(select(Booking).where(Booking.email == "new@example.com")).all()
    assert [booking.id for booking in moved] == [first.id]


def _fully_described_person(session: Session) -> tuple[Person, dict[str, str]]:
    details = {
        "email": "rosalind.quartermaine@example.com",
        "name": "Rosalind Quartermaine",
        "phone": "+447700900123",
        "postcode": "SW1A 1AA",
    }
    person = people.find_or_create(session, details["email"], name=details["name"])
    panel = factories.panel(session)
    factories.member(
        session, panel, person, special={"needs": "Rosalind Quartermaine uses a wheelchair"}
    )
    people.correct_details(
        session,
        person,
        {"phone": "07700 900123", "postcode": "sw1a1aa"},
        channel="admin",
        actor="admin:1",
        note="Rosalind Quartermaine phoned from 07700 900123",
    )
    ledger.give(
        session,
        person,
        "newsletter",
        channel="admin",
        actor="admin:1",
        note="Rosalind Quartermaine agreed on the phone",
    )
    ledger.give(session, person, "workshops", channel="web_form", actor="self")
    session.add(
        RightsRequest(
            person_id=person.id,
            kind="access",
            channel="post",
            requester="Rosalind Quartermaine",
            received_at=utcnow(),
            due_at=utcnow(),
            status="completed",
            outcome="Sent Rosalind Quartermaine her data by post",
        )
    )
    return person, details


def _raw_sqlite_bytes(db: Database) -> bytes:
    """The database files as bytes, after a checkpoint: what a stolen disk would show."""
    with db.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
    path = Path(db.engine.url.database)
    return b"".join(p.read_bytes() for p in path.parent.glob(path.name + "*"))


def test_erasure_leaves_no_personal_detail_in_any_table(db: Database) -> None:
    with db.transaction() as session:
        person, details = _fully_described_person(session)
        token = make_token(db.settings, person, "manage")
    assert find_anywhere(db.engine, [details["email"], details["name"]])
    if db.dialect == "sqlite":
        assert details["email"].encode() in _raw_sqlite_bytes(db)

    with db.transaction() as session:
        person = session.get(Person, person.id)
        report = people.erase(
            session, person, channel="admin", actor="admin:1", note="Erasure request by post"
        )
    assert sorted(report.withdrawn) == ["newsletter", "panel_contact", "workshops"]

    needles = [*details.values(), "Quartermaine", "07700 900123", "wheelchair"]
    assert find_anywhere(db.engine, needles) == []
    if db.dialect == "sqlite":
        raw = _raw_sqlite_bytes(db)
        for needle in needles:
            assert needle.encode() not in raw, needle
            assert needle.lower().encode() not in raw, needle

    with db.reader() as session:
        person = session.get(Person, person.id)
        assert person.erased_at is not None
        events = ledger.events_for(session, person)
        assert events and all(e.note is None for e in events)
        assert ledger.verify(session).ok
        digest = people.email_hmac(db.settings.hash_key, details["email"])
        assert session.exec(select(Suppression).where(Suppression.email_hmac == digest)).one()
        with pytest.raises(RevokedLink):
            resolve(session, token, "manage")


def test_a_suppressed_address_needs_fresh_consent(db: Database) -> None:
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="gone@example.com")
        people.erase(session, person, channel="email_link", actor="self")
    with pytest.raises(Suppressed), db.transaction() as session:
        again = people.find_or_create(session, "Gone@example.com")
        ledger.give(session, again, "newsletter", channel="import", actor="import:list.csv")
    with db.reader() as session:
        assert session.exec(select(func.count()).select_from(ConsentEvent)).one() == 2
        assert people.find_by_email(session, "gone@example.com") is None
    with db.transaction() as session:
        again = people.find_or_create(session, "gone@example.com")
        assert ledger.give(session, again, "newsletter", channel="email_link", actor="self")
        assert not people.is_suppressed(session, "gone@example.com")


def test_erasing_twice_is_harmless(session: Session) -> None:
    person = factories.consenting(session, "newsletter")
    people.erase(session, person, channel="email_link", actor="self")
    assert people.erase(session, person, channel="email_link", actor="self").already_erased


def test_database_errors_reach_the_logs_without_personal_data(
    db: Database, caplog: pytest.LogCaptureFixture
) -> None:
    """PostgreSQL quotes a duplicate key's value and SQLAlchemy would quote bound values;
    neither may reach a log, which outlives an erasure."""
    log_privacy.install()
    with db.transaction() as session:
        factories.person(session, "quoted@example.com")
    with pytest.raises(IntegrityError), db.transaction() as session:
        try:
            session.add(Person(email="quoted@example.com", name="Quentin Quoted"))
            session.flush()
        except IntegrityError:
            logging.getLogger("consent.test").exception("could not add %s", "quoted@example.com")
            raise
    assert "IntegrityError" in caplog.text and "could not add [email]" in caplog.text
    assert "quoted@example.com" not in caplog.text
    assert "Quentin" not in caplog.text


def test_a_badly_formed_log_call_is_left_to_logging_to_report() -> None:
    """Cleaning records must not turn a logging mistake into an error in the caller."""
    log_privacy.install()
    make = logging.getLogRecordFactory()
    record = make("consent.test", logging.WARNING, __file__, 1, "two %s %s", ("one",), None)
    assert record.msg == "two %s %s"
    clean = make("consent.test", logging.WARNING, __file__, 1, "to %s", ("a@example.com",), None)
    assert clean.getMessage() == "to [email]"


def test_a_join_sent_with_a_number_an_older_check_let_through_still_joins(db: Database) -> None:
    """A form waiting for its link across the stricter phone check: the number is left out,
    not the person."""
    with db.transaction() as session:
        panel = factories.panel(session)
        contact = notices.current_notice(session, notices.get_purpose(session, "panel_contact"))
        pending = signups.request_panel(
            session,
            panel,
            email="joining@example.com",
            name=None,
            phone="07700 900982",
            profile=panels.ProfileInput(),
            recordings=False,
            shown={"panel_contact": contact.id or 0},
        )
        cipher = crypto.cipher_for(session)
        answers = cipher.decrypt_json(pending.payload or "")
        pending.payload = cipher.encrypt_json({**answers, "phone": "07700 90098"})
        pending_id = pending.id
    with db.transaction() as session:
        person = people.find_by_email(session, "joining@example.com")
        signups.confirm(session, person, session.get(PendingSignup, pending_id))
        assert ledger.has_consent(session, person, "panel_contact")
        assert person.phone is None
