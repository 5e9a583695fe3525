"""The in-memory catalogue of purposes and notices is never stale in a way a person could see.

A copy is reused within one process, dropped when that process publishes, reloaded when a
person's consent points at a version it lacks, and reloaded after ``MAX_AGE`` otherwise, so
another process's publish shows within that time.
"""

from __future__ import annotations

from collections.abc import Callable

import pytest
from flask import Flask
from sqlalchemy.orm import object_session
from sqlmodel import Session, select

from consent import links
from consent.db import AFTER_COMMIT, Database
from consent.models import Notice, Person
from consent.services import ledger, notice_catalogue, notices, preferences
from consent.services.notice_catalogue import Catalogue, CatalogueCache
from tests import factories
from tests.web import csrf


class Clock:
    def __init__(self) -> None:
        self.now = 1000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def clock(db: Database) -> Clock:
    clock = Clock()
    db.shared["catalogue"] = CatalogueCache(clock=clock)
    return clock


def _read(db: Database) -> Catalogue:
    with db.reader() as session:
        return notice_catalogue.current(session)


def _newest_version(catalogue: Catalogue, key: str) -> int:
    purpose = next(p for p in catalogue.purposes if p.key == key)
    return catalogue.newest[purpose.id].version


def _publish(db: Database, key: str, wording: str) -> None:
    with db.transaction() as session:
        notices.publish(session, key, f"Yes, {wording}.", f"We {wording}.")


def test_the_catalogue_matches_the_database(db: Database) -> None:
    catalogue = _read(db)
    with db.reader() as session:
        expected = [p.key for p in notices.all_purposes(session)]
        stored = {n.id: n.version for n in session.exec(select(Notice)).all()}
    assert [p.key for p in catalogue.purposes] == expected
    assert {i: n.version for i, n in catalogue.notices.items()} == stored
    assert {p.key: _newest_version(catalogue, p.key) for p in catalogue.purposes} == dict.fromkeys(
        expected, 1
    )


def test_a_copy_is_shared_by_sessions_and_belongs_to_none(db: Database, clock: Clock) -> None:
    first = _read(db)
    clock.now += notice_catalogue.MAX_AGE - 1
    assert _read(db) is first
    for item in (*first.purposes, *first.notices.values()):
        assert object_session(item) is None
    with db.transaction() as session:
        loaded = notices.get_purpose(session, "newsletter")
        assert all(p is not loaded for p in notice_catalogue.current(session).purposes)


def test_a_publish_in_this_process_shows_at_once(db: Database, clock: Clock) -> None:
    assert _newest_version(_read(db), "workshops") == 1
    _publish(db, "workshops", "now tell you about workshops by text message")
    catalogue = _read(db)
    workshops = next(p for p in catalogue.purposes if p.key == "workshops")
    assert catalogue.newest[workshops.id].version == 2
    assert catalogue.newest[workshops.id].statement.startswith("Yes, now tell")


def test_a_publish_that_rolls_back_leaves_no_trace(db: Database, clock: Clock) -> None:
    before = _read(db)
    with pytest.raises(RuntimeError), db.transaction() as session:
        notices.publish(session, "workshops", "Yes, a draft.", "A draft.")
        assert _newest_version(notice_catalogue.current(session), "workshops") == 2
        raise RuntimeError("abandoned")
    assert _read(db) is before
    assert _newest_version(_read(db), "workshops") == 1


def test_another_process_publish_shows_after_max_age(
    db: Database, clock: Clock, configured: Callable[..., Database]
) -> None:
    other = configured()
    assert _newest_version(_read(db), "newsletter") == 1
    _publish(other, "newsletter", "send the newsletter monthly")
    clock.now += notice_catalogue.MAX_AGE - 1
    assert _newest_version(_read(db), "newsletter") == 1
    clock.now += 1
    assert _newest_version(_read(db), "newsletter") == 2


def test_a_consent_to_a_version_this_copy_lacks_reloads_it(
    db: Database, clock: Clock, configured: Callable[..., Database]
) -> None:
    other = configured()
    with db.transaction() as session:
        person_id = factories.person(session, "ada@example.org").id
    assert _newest_version(_read(db), "newsletter") == 1
    with other.transaction() as session:
        new = notices.publish(session, "newsletter", "Yes, monthly.", "We send it monthly.")
        person = session.get(Person, person_id)
        ledger.give(session, person, "newsletter", channel="web_form", actor="self", notice=new)
    with db.reader() as session:
        person = session.get(Person, person_id)
        view = next(
            v
            for v in preferences.overview(session, person).purposes
            if v.purpose.key == "newsletter"
        )
    assert view.given
    assert view.agreed_notice is not None and view.agreed_notice.version == 2
    assert view.notice.version == 2


def test_a_copy_loaded_while_a_publish_commits_is_not_kept(
    db: Database, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    cache = db.shared["catalogue"]
    real_load = notice_catalogue.load

    def load_then_publish_elsewhere(session: Session) -> Catalogue:
        copy = real_load(session)
        cache.forget()
        return copy

    monkeypatch.setattr(notice_catalogue, "load", load_then_publish_elsewhere)
    first = _read(db)
    monkeypatch.setattr(notice_catalogue, "load", real_load)
    assert _read(db) is not first


def test_a_sync_asks_for_one_reload_however_many_purposes_it_touches(
    db: Database, clock: Clock
) -> None:
    with db.transaction() as session:
        notices.sync_from_file(session)
        assert len(session.info[AFTER_COMMIT]) == 1


def test_agreeing_from_a_page_shown_from_an_older_copy_records_the_version_shown(
    app: Flask, configured: Callable[..., Database]
) -> None:
    db: Database = app.extensions["consent.db"]
    db.shared["catalogue"] = CatalogueCache(clock=Clock())
    client = app.test_client()
    with db.transaction() as session:
        person = factories.person(session, "ada@example.org")
        path = "/manage/" + links.make_token(db.settings, person, "manage")
        shown = notices.current_notice(session, notices.get_purpose(session, "newsletter"))
    client.get(path)
    with configured().transaction() as session:
        newer = notices.publish(session, "newsletter", "Yes, monthly.", "We send it monthly.")
    page = client.get(path).get_data(as_text=True)
    assert f'name="notice" value="{shown.id}"' in page and "Yes, monthly." not in page
    client.post(
        f"{path}/consent",
        data={
            "csrf_token": csrf(page),
            "purpose": "newsletter",
            "agree": "yes",
            "notice": shown.id,
        },
    )
    with db.reader() as session:
        events = ledger.events_for(session, session.get(Person, person.id))
    assert [(e.action, e.notice_id) for e in events] == [("given", shown.id)]
    assert newer.id != shown.id
