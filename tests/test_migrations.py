"""The migrations build exactly the schema the models describe, on SQLite and PostgreSQL."""

from __future__ import annotations

from datetime import UTC, datetime, timedelta

from alembic import command
from alembic.autogenerate import compare_metadata
from alembic.migration import MigrationContext
from sqlalchemy import insert, inspect, select, update
from sqlmodel import SQLModel

import consent.models  # noqa: F401
from consent.config import Settings
from consent.db import Database, make_engine
from consent.models import Attendance, MailchimpChange, Outbox, Person, RightsRequest
from consent.schema import FOREIGN_TABLES, alembic_config, include_object, upgrade
from consent.services import casework, ledger, panels, preferences, reminders, workshops
from consent.timeutil import LONDON, add_months_dt, utcnow
from tests import factories
from tests.fake_mailchimp import md5


def _differences(url: str) -> list:
    engine = make_engine(url, pool=False)
    try:
        with engine.connect() as conn:
            context = MigrationContext.configure(
                conn,
                opts={
                    "compare_type": True,
                    "compare_server_default": True,
                    "include_object": include_object,
                },
            )
            return compare_metadata(context, SQLModel.metadata)
    finally:
        engine.dispose()


def test_models_and_migrations_agree(settings: Settings) -> None:
    assert _differences(settings.database_url) == []


def test_every_model_table_exists(settings: Settings) -> None:
    engine = make_engine(settings.database_url, pool=False)
    tables = set(inspect(engine).get_table_names())
    engine.dispose()
    assert set(SQLModel.metadata.tables) <= tables


def test_downgrade_to_nothing_and_up_again(settings: Settings) -> None:
    config = alembic_config(settings.database_url)
    command.downgrade(config, "base")
    engine = make_engine(settings.database_url, pool=False)
    assert set(inspect(engine).get_table_names()) <= {"alembic_version", *FOREIGN_TABLES}
    engine.dispose()
    upgrade(settings)
    assert _differences(settings.database_url) == []


def test_upgrading_gives_people_already_there_a_search_key_folded_beyond_ascii(
    settings: Settings,
) -> None:
    """The key is folded in Python, as the application folds it: SQLite's lower() would
    leave "É" as it is."""
    command.downgrade(alembic_config(settings.database_url), "0009")
    engine = make_engine(settings.database_url, pool=False)
    now = utcnow()
    with engine.begin() as conn:
        conn.execute(
            insert(Person.__table__).values(token_version=1, created_at=now, updated_at=now),
            [
                {"public_id": "p1", "email": "e@example.com", "name": "Élodie Martin"},
                {"public_id": "p2", "email": "n@example.com", "name": None},
            ],
        )
    upgrade(settings)
    with engine.connect() as conn:
        keys = conn.execute(select(Person.public_id, Person.name_key).order_by(Person.public_id))
        assert keys.all() == [("p1", "élodie martin"), ("p2", None)]
    engine.dispose()
    db = Database(settings)
    with db.reader() as session:
        assert [person.public_id for person in casework.search(session, "élo")] == ["p1"]
    db.dispose()


def test_upgrading_keeps_people_whose_invitation_still_works(settings: Settings) -> None:
    """Invitations sent before the upgrade hold their person as new ones do."""
    command.downgrade(alembic_config(settings.database_url), "0012")
    engine = make_engine(settings.database_url, pool=False)
    now = utcnow()
    with engine.begin() as conn:
        ids = (
            conn.execute(
                insert(Person.__table__)
                .values(token_version=1, created_at=now, updated_at=now)
                .returning(Person.__table__.c.id, sort_by_parameter_order=True),
                [
                    {"public_id": "recent", "email": "r@example.com"},
                    {"public_id": "lapsed", "email": "l@example.com"},
                    {"public_id": "declined", "email": "d@example.com"},
                ],
            )
            .scalars()
            .all()
        )
        conn.execute(
            update(Person.__table__)
            .where(Person.__table__.c.id == ids[2])
            .values(invitations_declined_at=now)
        )
        sent = [(ids[0], 40), (ids[0], 10), (ids[1], 40), (ids[2], 10)]
        conn.execute(
            insert(Outbox.__table__),
            [
                {
                    "person_id": person_id,
                    "template": "panel_invitation",
                    "subject": "You are invited to join a Parent Carer Panel",
                    "message_id": f"<{index}@test>",
                    "status": "sent",
                    "attempts": 1,
                    "next_attempt_at": now - timedelta(days=days),
                    "created_at": now - timedelta(days=days),
                }
                for index, (person_id, days) in enumerate(sent)
            ],
        )
    upgrade(settings)
    with engine.connect() as conn:
        held = dict(conn.execute(select(Person.public_id, Person.invited_until)).all())
    engine.dispose()
    assert held["lapsed"] is None and held["declined"] is None
    expected = now - timedelta(days=10) + timedelta(days=30, hours=1)
    assert abs(held["recent"] - expected) < timedelta(seconds=1)


def test_upgrading_tries_again_the_unsubscribes_and_deletes_mailchimp_refused(
    settings: Settings,
) -> None:
    """They were given up before, leaving Mailchimp holding the person. One whose member a
    later change settles, or whose address someone here now agrees at, is left alone, as is
    a delete of an address someone here has (Mailchimp never lets a deleted one back).
    The rows are written at the newest revision, then the database is taken back to before
    the migration: the models only describe the newest."""
    db = Database(settings)
    with db.transaction() as session:
        factories.consenting(session, "newsletter", email="again@example.com")
        left = factories.consenting(session, "newsletter", email="left@example.com")
        ledger.withdraw(session, left, "newsletter", channel="web_form", actor="self")
        factories.person(session, "kept@example.com")
        rows = [
            MailchimpChange(action=action, subscriber_hash=md5(email), status=status)
            for action, email, status in [
                ("unsubscribe", "left@example.com", "failed"),
                ("unsubscribe", "again@example.com", "failed"),
                ("delete", "gone@example.com", "failed"),
                ("delete", "kept@example.com", "failed"),
                ("unsubscribe", "later@example.com", "failed"),
                ("subscribe", "later@example.com", "pending"),
                ("subscribe", "refused@example.com", "failed"),
            ]
        ]
        session.add_all(rows)
    db.dispose()
    command.downgrade(alembic_config(settings.database_url), "0016")
    upgrade(settings)
    engine = make_engine(settings.database_url, pool=False)
    with engine.connect() as conn:
        table = MailchimpChange.__table__
        statuses = conn.execute(select(table.c.status).order_by(table.c.id)).scalars().all()
    engine.dispose()
    assert statuses == ["pending", "failed", "pending", "failed", "failed", "pending", "failed"]


def test_upgrading_drops_the_phone_numbers_of_people_on_no_panel(settings: Settings) -> None:
    db = Database(settings)
    with db.transaction() as session:
        member = factories.person(session, "member@example.com")
        factories.member(session, factories.panel(session), member)
        for person in (member, factories.person(session, "news@example.com")):
            person.phone = "+447700900982"
    db.dispose()
    command.downgrade(alembic_config(settings.database_url), "0018")
    upgrade(settings)
    engine = make_engine(settings.database_url, pool=False)
    with engine.connect() as conn:
        table = Person.__table__
        phones = dict(conn.execute(select(table.c.email, table.c.phone)).all())
    engine.dispose()
    assert phones == {"member@example.com": "+447700900982", "news@example.com": None}


def test_upgrading_lets_leaving_or_cancelling_still_stop_mail_already_waiting(
    settings: Settings,
) -> None:
    """Mail queued before the migration named its membership or booking only in its
    once-only key: after it, leaving the panel or cancelling the booking must still stop
    it, and only it."""
    db = Database(settings)
    with db.transaction() as session:
        panel, other = factories.panel(session), factories.panel(session, "Riverside Panel")
        member = factories.person(session, "member@example.com")
        for on in (panel, other):
            factories.member(session, on, member)
        factories.member(session, panel, factories.person(session, "stays@example.com"))
        factories.meeting(session, other, days=20)
        assert panels.invite_to_session(session, factories.meeting(session, panel, days=30)) == 2
        workshop = factories.workshop(session, starts_at=utcnow() + timedelta(hours=20))
        booking = factories.booking(session, workshop, "booker@example.com")
        factories.booking(session, workshop, "keeps@example.com")
        assert reminders.workshop_reminders(session) == 2
        ids = (member.id, panel.id, booking.person_id, booking.id)
    db.dispose()
    command.downgrade(alembic_config(settings.database_url), "0020")
    upgrade(settings)
    db = Database(settings)
    with db.transaction() as session:
        person_id, panel_id, booker_id, booking_id = ids
        preferences.leave_panel(session, session.get(Person, person_id), panel_id)
        preferences.cancel_booking(session, session.get(Person, booker_id), booking_id)
    with db.reader() as session:
        about = Outbox.template.in_(("panel_session_invitation", "workshop_reminder"))
        rows = session.execute(select(Outbox.to_address, Outbox.status).where(about)).all()
    db.dispose()
    assert sorted(rows) == [
        ("booker@example.com", "cancelled"),
        ("keeps@example.com", "queued"),
        ("member@example.com", "cancelled"),
        ("stays@example.com", "queued"),
    ]


def test_upgrading_clears_a_register_recorded_before_its_session_started(
    settings: Settings,
) -> None:
    """The register now opens at the session's start: what was recorded ahead of it (came,
    agreed to be recorded) is cleared; what was recorded for a session already held stays."""
    db = Database(settings)
    with db.transaction() as session:
        panel = factories.panel(session)
        membership = factories.member(session, panel)
        for days in (-1, 10):
            meeting = factories.meeting(session, panel, days=days)
            session.add(
                Attendance(
                    session_id=meeting.id,
                    membership_id=membership.id,
                    attended=True,
                    recording_consent=True,
                    recording_consent_at=utcnow(),
                )
            )
    db.dispose()
    command.downgrade(alembic_config(settings.database_url), "0021")
    upgrade(settings)
    engine = make_engine(settings.database_url, pool=False)
    with engine.connect() as conn:
        table = Attendance.__table__
        rows = conn.execute(
            select(
                table.c.attended, table.c.recording_consent, table.c.recording_consent_at
            ).order_by(table.c.session_id)
        ).all()
    engine.dispose()
    assert [(row[0], row[1], row[2] is not None) for row in rows] == [
        (True, True, True),
        (None, False, False),
    ]


def test_upgrading_moves_rights_deadlines_off_weekends_and_bank_holidays(
    settings: Settings,
) -> None:
    """Logged before, a deadline fell on the corresponding date even at a weekend."""
    db = Database(settings)
    received = datetime(2026, 1, 31, 12, tzinfo=LONDON).astimezone(UTC)
    kept = datetime(2026, 11, 23, 12, tzinfo=LONDON).astimezone(UTC)
    with db.transaction() as session:
        for day in (received, kept):
            session.add(
                RightsRequest(
                    kind="access",
                    channel="post",
                    requester="Pat",
                    received_at=day,
                    due_at=add_months_dt(day, 1),
                )
            )
    db.dispose()
    command.downgrade(alembic_config(settings.database_url), "0022")
    upgrade(settings)
    engine = make_engine(settings.database_url, pool=False)
    with engine.connect() as conn:
        table = RightsRequest.__table__
        due = conn.execute(select(table.c.due_at).order_by(table.c.id)).scalars().all()
    engine.dispose()
    assert [moment.astimezone(LONDON).isoformat() for moment in due] == [
        "2026-03-02T12:00:00+00:00",
        "2026-12-23T12:00:00+00:00",
    ]


def test_upgrading_names_the_booking_of_a_waiting_workshop_cancellation(
    settings: Settings,
) -> None:
    """Until now its booking was read back out of its key: after the upgrade, the bookers of
    a cancelled workshop are still kept until their cancellation email has gone."""
    db = Database(settings)
    with db.transaction() as session:
        workshop = factories.workshop(session, days=3)
        factories.booking(session, workshop, "booker@example.com")
        workshops.cancel_workshop(session, workshop)
        session.flush()
        session.execute(
            update(Outbox).where(Outbox.template == "workshop_cancelled").values(booking_id=None)
        )
        assert workshops.cancellations_waiting(session) == set()
        workshop_id = workshop.id
    db.dispose()
    command.downgrade(alembic_config(settings.database_url), "0024")
    upgrade(settings)
    db = Database(settings)
    with db.reader() as session:
        assert workshops.cancellations_waiting(session) == {workshop_id}
    db.dispose()
