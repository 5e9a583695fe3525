"""Mailchimp kept in step, through the official client talking to a fake over real HTTP."""

from __future__ import annotations

from collections.abc import Callable
from datetime import timedelta

import pytest
import time_machine
from flask import Flask
from sqlmodel import select

from consent import create_app, links
from consent.config import Settings
from consent.db import Database
from consent.models import ConsentEvent, MailchimpChange, Person, PersonChange
from consent.services import ledger, mailchimp, people
from consent.services.mailchimp import subscriber_hash
from consent.timeutil import utcnow
from mailers.mailchimp import MailchimpUnavailable, Pusher, ReconcileIncomplete, reconcile
from tests import factories
from tests.fake_mailchimp import FakeMailchimp, md5
from tests.helpers import Beside, crossing_writers_only, find_anywhere, until_done_or_waiting

Open = Callable[..., Database]


def _changes(db: Database) -> list[MailchimpChange]:
    with db.reader() as session:
        return list(session.exec(select(MailchimpChange).order_by(MailchimpChange.id)))


def _subscribers(db: Database, prefix: str, count: int) -> None:
    """``count`` people agreeing to the newsletter, as prefix0@example.com and on."""
    with db.transaction() as session:
        for index in range(count):
            factories.consenting(session, "newsletter", email=f"{prefix}{index}@example.com")


def _pusher(db: Database, **options: object) -> Pusher:
    return Pusher(db, poll_interval=0.01, **options)


def test_nothing_is_queued_when_no_audience_is_configured(db: Database) -> None:
    with db.transaction() as session:
        factories.consenting(session, "newsletter")
    assert _changes(db) == []


@pytest.mark.parametrize("pushed", [False, True])
def test_erasure_while_sync_is_off_leaves_no_name_or_address_in_the_queue(
    db: Database,
    configured: Open,
    mailchimp_settings: dict,
    mailchimp_fake: FakeMailchimp,
    pushed: bool,
) -> None:
    """The audience was configured, then its settings removed. A subscribe still waiting is
    dropped with its name and address; if Mailchimp already holds the person, only the
    delete (Mailchimp's hash of the address) waits, for when sync resumes."""
    synced = configured(**mailchimp_settings)
    with synced.transaction() as session:
        person = factories.person(session, "ivo.pendleton@example.com", name="Ivo Pendleton")
        ledger.give(session, person, "newsletter", channel="web_form", actor="self")
    if pushed:
        _pusher(synced).push()
    with db.transaction() as session:
        people.erase(session, session.get(Person, person.id), channel="email_link", actor="self")
    digest = md5("ivo.pendleton@example.com")
    assert find_anywhere(db.engine, ["Pendleton", "ivo.pendleton@example.com"]) == []
    waiting = [(c.action, c.subscriber_hash) for c in _changes(db) if c.status == "pending"]
    assert waiting == ([("delete", digest)] if pushed else [])
    _pusher(synced).push()
    assert mailchimp_fake.members == {}
    assert find_anywhere(db.engine, [digest]) == []


@pytest.mark.parametrize("pushed", [False, True])
def test_an_opt_out_while_sync_is_off_is_not_undone_when_sync_resumes(
    db: Database,
    configured: Open,
    mailchimp_settings: dict,
    mailchimp_fake: FakeMailchimp,
    pushed: bool,
) -> None:
    """A subscribe still waiting is dropped; if Mailchimp already holds the person, the
    unsubscribe waits for sync to resume (reconciliation would not see them: they have not
    changed in Mailchimp since its last run)."""
    synced = configured(**mailchimp_settings)
    with synced.transaction() as session:
        person = factories.consenting(session, "newsletter", email="v@example.com")
    if pushed:
        _pusher(synced).push()
        reconcile(synced)
    _withdraw_here(db, person.id)
    with time_machine.travel(utcnow() + timedelta(hours=1), tick=True):
        reconcile(synced)
        _pusher(synced).push()
    member = mailchimp_fake.members.get(md5("v@example.com"))
    if pushed:
        assert member is not None and member["status"] == "unsubscribed"
    else:
        assert member is None
    assert [method for method, _ in mailchimp_fake.requests].count("PUT") == int(pushed)


def test_agreeing_again_while_sync_is_off_drops_the_unsubscribe_still_waiting(
    db: Database, configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    synced = configured(**mailchimp_settings)
    with synced.transaction() as session:
        person = factories.consenting(session, "newsletter", email="back@example.com")
    _pusher(synced).push()
    _withdraw_here(synced, person.id)
    with db.transaction() as session:
        ledger.give(
            session, session.get(Person, person.id), "newsletter", channel="web_form", actor="self"
        )
    _pusher(synced).push()
    assert mailchimp_fake.members[md5("back@example.com")]["status"] == "subscribed"


def test_an_address_changed_while_sync_is_off_is_followed_when_sync_resumes(
    db: Database, configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    """Else the withdrawal that follows would unsubscribe the new address, where Mailchimp
    has no one, and leave the old one subscribed."""
    synced = configured(**mailchimp_settings)
    with synced.transaction() as session:
        person = factories.consenting(session, "newsletter", email="a1@example.com")
    _pusher(synced).push()
    _change_email(db, person.id, "a2@example.com")
    _withdraw_here(db, person.id)
    _pusher(synced).push()
    assert set(mailchimp_fake.members) == {md5("a2@example.com")}
    assert mailchimp_fake.members[md5("a2@example.com")]["status"] == "unsubscribed"


def test_consent_given_subscribes_with_the_opt_in_time(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        person = factories.person(session, "Reader@Example.com", name="Ria")
        event = ledger.give(session, person, "newsletter", channel="email_link", actor="self")
    report = _pusher(db).push()
    assert (report.pushed, report.batches, report.requests) == (1, 0, 1)
    member = mailchimp_fake.members[md5("reader@example.com")]
    assert member["status"] == "subscribed"
    assert member["timestamp_opt"] == event.occurred_at.strftime("%Y-%m-%d %H:%M:%S")
    assert member["merge_fields"] == {"FNAME": "Ria"}
    [change] = _changes(db)
    assert change.status == "done" and change.email is None and change.subscriber_hash is None


def test_withdrawal_unsubscribes_and_erasure_deletes_permanently(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="leaving@example.com")
    _pusher(db).push()
    with db.transaction() as session:
        person = session.get(Person, person.id)
        ledger.withdraw(
            session, person, "newsletter", channel="one_click_unsubscribe", actor="self"
        )
    _pusher(db).push()
    assert mailchimp_fake.members[md5("leaving@example.com")]["status"] == "unsubscribed"
    with db.transaction() as session:
        people.erase(session, session.get(Person, person.id), channel="email_link", actor="self")
    _pusher(db).push()
    assert md5("leaving@example.com") not in mailchimp_fake.members
    assert (
        "POST",
        f"/3.0/lists/list123/members/{md5('leaving@example.com')}/actions/delete-permanent",
    ) in mailchimp_fake.requests
    assert all(c.status == "done" and c.subscriber_hash is None for c in _changes(db))


@pytest.mark.parametrize("outcome", ["done", "retry", "failed"])
def test_erasure_while_a_change_is_being_pushed_leaves_no_trace_whatever_its_outcome(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp, outcome: str
) -> None:
    """The change in flight is superseded by the erasure's delete: its late outcome keeps
    nothing (not even Mailchimp's hash of the address) and it is never sent again."""
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="inflight@example.com")
    with db.transaction() as session:
        [in_flight] = mailchimp.claim(session, 10)
        in_flight_id = in_flight.id
    with db.transaction() as session:
        people.erase(session, session.get(Person, person.id), channel="email_link", actor="self")
    with db.transaction() as session:
        if outcome == "done":
            mailchimp.mark_done(session, [in_flight_id])
        elif outcome == "retry":
            mailchimp.mark_retry(session, [in_flight_id], "HTTP 503", timedelta(0))
        else:
            mailchimp.mark_failed(session, [in_flight_id], "HTTP 400")
    report = _pusher(db).push()
    assert report.pushed == 1
    assert [m for m, _ in mailchimp_fake.requests] == ["POST"]
    assert [(c.action, c.status) for c in _changes(db)] == [
        ("subscribe", "superseded"),
        ("unsubscribe", "superseded"),
        ("delete", "done"),
    ]
    digest = md5("inflight@example.com")
    assert find_anywhere(db.engine, [digest, "inflight@example.com"]) == []


def test_a_change_waits_while_an_earlier_one_for_the_member_is_being_pushed(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    """A second pusher (a command-line push beside the scheduler's) must not send the
    unsubscribe while the subscribe is still on its way: arriving after, the subscribe
    would put back on the list someone who asked to come off it (promise 10)."""
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        leaving = factories.consenting(session, "newsletter", email="leaving@example.com")
    with db.transaction() as session:
        [in_flight] = mailchimp.claim(session, 10)
        in_flight_id = in_flight.id
    with db.transaction() as session:
        factories.consenting(session, "newsletter", email="other@example.com")
        ledger.withdraw(
            session, session.get(Person, leaving.id), "newsletter", channel="web_form", actor="self"
        )
    assert _pusher(db).push().pushed == 1
    assert [path for _, path in mailchimp_fake.requests] == [
        f"/3.0/lists/list123/members/{md5('other@example.com')}"
    ]
    with db.transaction() as session:
        mailchimp.mark_done(session, [in_flight_id])
    assert _pusher(db).push().pushed == 1
    assert mailchimp_fake.requests[-1] == (
        "PATCH",
        f"/3.0/lists/list123/members/{md5('leaving@example.com')}",
    )


def test_a_later_change_supersedes_one_not_yet_pushed(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="flip@example.com")
        ledger.withdraw(session, person, "newsletter", channel="email_link", actor="self")
    report = _pusher(db).push()
    assert report.pushed == 1
    assert [c.status for c in _changes(db)] == ["superseded", "done"]
    assert all(c.subscriber_hash is None for c in _changes(db))
    assert [m for m, _ in mailchimp_fake.requests] == ["PATCH"]


def test_many_changes_go_by_batch_of_at_most_500(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    _subscribers(db, "bulk", 1203)
    report = _pusher(db).push()
    assert report.pushed == 1203 and report.batches == 3
    starts = [r for r in mailchimp_fake.requests if r == ("POST", "/3.0/batches")]
    assert len(starts) == 3
    assert len(mailchimp_fake.members) == 1203
    assert all(m["status"] == "subscribed" for m in mailchimp_fake.members.values())


def test_one_refused_operation_in_a_batch_fails_alone(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    mailchimp_fake.member_failures[md5("fake-looking@example.com")] = 400
    _subscribers(db, "ok", 20)
    with db.transaction() as session:
        factories.consenting(session, "newsletter", email="fake-looking@example.com")
    report = _pusher(db).push()
    assert (report.pushed, report.failed, report.retrying) == (20, 1, 0)
    failed = [c for c in _changes(db) if c.status == "failed"]
    assert len(failed) == 1 and "400" in failed[0].last_error
    assert "fake-looking@example.com" not in failed[0].last_error
    with db.transaction() as session:
        people.erase(
            session,
            people.find_by_email(session, "fake-looking@example.com"),
            channel="email_link",
            actor="self",
        )
    assert find_anywhere(db.engine, ["fake-looking@example.com", "Fake-Looking"]) == []
    digest = md5("fake-looking@example.com")
    assert [c.status for c in _changes(db) if c.subscriber_hash == digest] == ["pending"], (
        "only the delete still to be pushed may keep Mailchimp's hash of the address"
    )
    del mailchimp_fake.member_failures[digest]
    assert _pusher(db).push().pushed == 1
    assert find_anywhere(db.engine, [digest]) == []


@pytest.mark.parametrize("code", [429, 500, 503])
def test_a_failed_push_retries_later_and_nothing_is_dropped(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp, code: int
) -> None:
    db = configured(**mailchimp_settings)
    _subscribers(db, "wait", 3)
    mailchimp_fake.fail_next = [code]
    report = _pusher(db).push()
    assert report.pushed == 0 and report.retrying == 3
    assert all(c.status == "pending" and c.email for c in _changes(db))
    assert _pusher(db).push().pushed == 0
    with time_machine.travel(utcnow() + timedelta(minutes=6), tick=True):
        assert _pusher(db).push().pushed == 3
    assert len(mailchimp_fake.members) == 3


def test_a_batch_rejected_outright_is_retried(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    _subscribers(db, "b", 15)
    mailchimp_fake.fail_next = [500]
    assert _pusher(db).push().retrying == 15
    with time_machine.travel(utcnow() + timedelta(minutes=6), tick=True):
        assert _pusher(db).push().pushed == 15


def test_a_slow_batch_is_waited_for_and_one_that_never_finishes_is_sent_again(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    _subscribers(db, "slow", 15)
    mailchimp_fake.polls_before_finished = 10**6
    report = _pusher(db, poll_timeout=0.3).push()
    assert (report.pushed, report.retrying) == (0, 15)
    assert all(c.status == "pending" and c.email for c in _changes(db))
    mailchimp_fake.polls_before_finished = 4
    with time_machine.travel(utcnow() + timedelta(minutes=6), tick=True):
        report = _pusher(db).push()
    assert (report.pushed, report.batches) == (15, 1)
    assert len(mailchimp_fake.members) == 15
    assert mailchimp_fake.batches["b2"]["polls"] == 4


def test_mailchimp_unreachable_keeps_changes(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**{**mailchimp_settings, "mailchimp_api_url": "http://127.0.0.1:9/3.0"})
    with db.transaction() as session:
        factories.consenting(session, "newsletter", email="offline@example.com")
    report = _pusher(db).push()
    assert report.retrying == 1 and "HTTP 0" in report.errors[0]
    assert _changes(db)[0].status == "pending"


def test_an_address_change_moves_the_member(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="old@example.com")
    _pusher(db).push()
    _change_email(db, person.id, "new@example.com")
    _pusher(db).push()
    assert md5("old@example.com") not in mailchimp_fake.members
    assert mailchimp_fake.members[md5("new@example.com")]["email_address"] == "new@example.com"


def _change_email(db: Database, person_id: int | None, new: str) -> None:
    with db.transaction() as session:
        people.change_email(
            session, session.get(Person, person_id), new, channel="email_link", actor="self"
        )


def test_an_address_changed_before_the_first_push_is_subscribed_at_the_new_address(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="first@example.com")
    _change_email(db, person.id, "second@example.com")
    report = _pusher(db).push()
    assert (report.pushed, report.failed) == (1, 0)
    assert set(mailchimp_fake.members) == {md5("second@example.com")}
    member = mailchimp_fake.members[md5("second@example.com")]
    assert member["status"] == "subscribed" and member["timestamp_opt"]
    assert [(c.action, c.status) for c in _changes(db)] == [
        ("subscribe", "superseded"),
        ("subscribe", "done"),
    ]


def test_a_withdrawal_after_an_address_change_is_not_undone_by_it(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="first@example.com")
    _change_email(db, person.id, "second@example.com")
    with db.transaction() as session:
        ledger.withdraw(
            session, session.get(Person, person.id), "newsletter", channel="web_form", actor="self"
        )
    report = _pusher(db).push()
    assert (report.pushed, report.failed) == (1, 0)
    assert mailchimp_fake.members == {}
    assert not any(method == "PUT" for method, _ in mailchimp_fake.requests)


@pytest.mark.parametrize("refused", [False, True])
def test_erasure_before_an_address_change_is_done_deletes_the_member_at_either_address(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp, refused: bool
) -> None:
    """The change may still be queued, or Mailchimp may have refused it for good: either
    way the member is still under the old address."""
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="first@example.com")
    _pusher(db).push()
    _change_email(db, person.id, "second@example.com")
    if refused:
        mailchimp_fake.member_failures[md5("first@example.com")] = 400
        assert _pusher(db).push().failed == 1
        del mailchimp_fake.member_failures[md5("first@example.com")]
        assert md5("first@example.com") in mailchimp_fake.members
    with db.transaction() as session:
        people.erase(session, session.get(Person, person.id), channel="email_link", actor="self")
    report = _pusher(db).push()
    assert report.failed == 0
    assert mailchimp_fake.members == {}
    needles = ["first@example.com", "second@example.com"]
    assert find_anywhere(db.engine, needles + [md5(a) for a in needles]) == []


def test_a_change_refused_for_good_keeps_no_address(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        factories.consenting(session, "newsletter", email="refused@example.com")
    mailchimp_fake.member_failures[md5("refused@example.com")] = 400
    assert _pusher(db).push().failed == 1
    [change] = _changes(db)
    assert (change.status, change.email, change.name) == ("failed", None, None)
    assert change.subscriber_hash == md5("refused@example.com")


@pytest.mark.parametrize("code", [400, 401, 403])
def test_an_erasure_s_delete_mailchimp_refuses_is_tried_again_until_it_goes(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp, code: int
) -> None:
    """A 401 while an API key is replaced, or any other refusal. The delete replaced the
    pending unsubscribe, and reconciliation reads only recent changes: given up, it would
    leave Mailchimp holding the erased person, subscribed, for good."""
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        person = factories.person(session, "gone.chimp@example.com", name="Gwen Chimp")
        ledger.give(session, person, "newsletter", channel="web_form", actor="self")
    _pusher(db).push()
    with db.transaction() as session:
        people.erase(session, session.get(Person, person.id), channel="email_link", actor="self")
    mailchimp_fake.fail_next = [code]
    report = _pusher(db).push()
    assert (report.pushed, report.refused, report.failed) == (0, 1, 0)
    delete = _changes(db)[-1]
    assert (delete.action, delete.status) == ("delete", "pending")
    assert f"HTTP {code}" in (delete.last_error or "")
    with time_machine.travel(utcnow() + timedelta(minutes=6), tick=True):
        assert _pusher(db).push().pushed == 1
    assert md5("gone.chimp@example.com") not in mailchimp_fake.members
    needles = [md5("gone.chimp@example.com"), "gone.chimp@example.com", "Gwen Chimp"]
    assert find_anywhere(db.engine, needles) == []


@pytest.mark.parametrize("count", [2, 12])
def test_an_unsubscribe_mailchimp_refuses_stays_queued_and_holds_up_no_other(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp, count: int
) -> None:
    """One by one or by batch, the refused unsubscribe waits for its next try alone; after
    as many tries as a subscribe gets, the dashboard shows it."""
    db = configured(**mailchimp_settings)
    _subscribers(db, "out", count)
    _pusher(db).push()
    with db.transaction() as session:
        for index in range(count):
            person = people.find_by_email(session, f"out{index}@example.com")
            ledger.withdraw(session, person, "newsletter", channel="web_form", actor="self")
    mailchimp_fake.member_failures[md5("out0@example.com")] = 400
    report = _pusher(db).push()
    assert (report.pushed, report.refused, report.failed) == (count - 1, 1, 0)
    start = utcnow()
    for hour in range(48):
        with time_machine.travel(start + timedelta(hours=hour), tick=True):
            _pusher(db).push()
    unsubscribe = _changes(db)[count]
    assert (unsubscribe.action, unsubscribe.status) == ("unsubscribe", "pending")
    assert unsubscribe.attempts >= mailchimp.MAX_ATTEMPTS
    with db.reader() as session:
        assert mailchimp.sync_state(session)[mailchimp.STUCK] == 1
    del mailchimp_fake.member_failures[md5("out0@example.com")]
    with time_machine.travel(start + timedelta(hours=60), tick=True):
        assert _pusher(db).push().pushed == 1
    assert all(m["status"] == "unsubscribed" for m in mailchimp_fake.members.values())
    with db.reader() as session:
        assert mailchimp.STUCK not in mailchimp.sync_state(session)


def test_the_dashboard_shows_an_unsubscribe_still_retried_after_many_tries(app: Flask) -> None:
    from tests.admin_client import staff_client
    from tests.web import text

    with app.extensions["consent.db"].transaction() as session:
        session.add(
            MailchimpChange(
                action="unsubscribe", subscriber_hash="0" * 32, attempts=mailchimp.MAX_ATTEMPTS
            )
        )
    dashboard = text(staff_client(app, "coordinator").get("/admin/"))
    assert f"pending: 1; {mailchimp.STUCK}: 1." in dashboard


def test_reconciliation_records_unsubscribes_and_cleans_since_the_last_run(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        for name in ("stays", "unsub", "cleaned"):
            factories.consenting(session, "newsletter", email=f"{name}@example.com")
    _pusher(db).push()
    mailchimp_fake.members[md5("unsub@example.com")]["status"] = "unsubscribed"
    mailchimp_fake.members[md5("cleaned@example.com")]["status"] = "cleaned"
    mailchimp_fake.add_member("stranger@example.com", "unsubscribed")
    report = reconcile(db)
    assert report.withdrawn == 2
    with db.reader() as session:
        for name, status in (("stays", "given"), ("unsub", "withdrawn"), ("cleaned", "withdrawn")):
            person = people.find_by_email(session, f"{name}@example.com")
            assert ledger.states_for(session, person)["newsletter"].status == status
        events = session.exec(select(ConsentEvent).where(ConsentEvent.action == "withdrawn")).all()
        assert {(e.channel, e.actor) for e in events} == {
            ("mailchimp_webhook", "mailchimp:reconcile")
        }
    assert not [c for c in _changes(db) if c.status == "pending"]

    before = len(mailchimp_fake.requests)
    assert reconcile(db).withdrawn == 0
    listing = [path for _, path in mailchimp_fake.requests[before:]]
    assert listing == ["/3.0/lists/list123/members"] * 3


def test_an_unsubscribe_older_than_a_fresh_agreement_does_not_undo_it(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    """A first reconciliation reads every unsubscribe Mailchimp ever recorded; someone who
    agreed again here since then has changed their mind, and keeps getting the newsletter."""
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        for name in ("again", "gone"):
            factories.consenting(session, "newsletter", email=f"{name}@example.com")
    _pusher(db).push()
    last_year = (utcnow() - timedelta(days=365)).strftime("%Y-%m-%dT%H:%M:%S+00:00")
    mailchimp_fake.members[md5("again@example.com")].update(
        status="unsubscribed", last_changed=last_year
    )
    mailchimp_fake.members[md5("gone@example.com")]["status"] = "unsubscribed"
    assert reconcile(db).withdrawn == 1
    with db.reader() as session:
        for name, status in (("again", "given"), ("gone", "withdrawn")):
            person = people.find_by_email(session, f"{name}@example.com")
            assert ledger.states_for(session, person)["newsletter"].status == status


def test_an_unsubscribe_dated_at_the_end_of_time_is_still_recorded(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        factories.consenting(session, "newsletter", email="odd@example.com")
    _pusher(db).push()
    mailchimp_fake.members[md5("odd@example.com")].update(
        status="unsubscribed", last_changed="9999-12-31T23:59:59+00:00"
    )
    assert reconcile(db).withdrawn == 1
    assert _newsletter(db, "odd@example.com") == "withdrawn"


def test_reconciliation_says_when_mailchimp_is_down(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    mailchimp_fake.fail_next = [500]
    with pytest.raises(MailchimpUnavailable):
        reconcile(db)
    with db.reader() as session:
        from consent.services import bookmarks

        assert bookmarks.get(session, "mailchimp.reconciled_at") is None


@pytest.mark.parametrize("address", ["taro.@example.com", "x@school.local"])
@pytest.mark.parametrize("listed_as", ["unsubscribed", "subscribed"])
def test_a_member_at_an_address_we_would_not_accept_is_skipped_and_reconciliation_goes_on(
    configured: Open,
    mailchimp_settings: dict,
    mailchimp_fake: FakeMailchimp,
    caplog: pytest.LogCaptureFixture,
    address: str,
    listed_as: str,
) -> None:
    """Nobody here can have such an address. Stopping at it, reconciliation would never
    move its bookmark on and fail at the same member every hour."""
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        factories.consenting(session, "newsletter", email="unsub@example.com")
    _pusher(db).push()
    mailchimp_fake.add_member(address, listed_as)
    mailchimp_fake.members[md5("unsub@example.com")]["status"] = "unsubscribed"
    report = reconcile(db)
    assert (report.withdrawn, report.skipped, report.failed) == (1, 1, 0)
    assert _newsletter(db, "unsub@example.com") == "withdrawn"
    assert address not in caplog.text and "skipped" in caplog.text
    with db.reader() as session:
        from consent.services import bookmarks

        assert bookmarks.get(session, "mailchimp.reconciled_at") is not None


def test_a_member_that_fails_holds_up_no_other_and_is_read_again_next_run(
    configured: Open,
    mailchimp_settings: dict,
    mailchimp_fake: FakeMailchimp,
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        for name in ("a", "b", "c"):
            factories.consenting(session, "newsletter", email=f"{name}@example.com")
    _pusher(db).push()
    for name in ("a", "b", "c"):
        mailchimp_fake.members[md5(f"{name}@example.com")]["status"] = "unsubscribed"
    real = mailchimp.record_unsubscribe

    def record(session, email, **kwargs):  # type: ignore[no-untyped-def]
        if email == "b@example.com":
            raise RuntimeError("something unforeseen")
        return real(session, email, **kwargs)

    monkeypatch.setattr(mailchimp, "record_unsubscribe", record)
    with pytest.raises(ReconcileIncomplete):
        reconcile(db)
    assert [_newsletter(db, f"{n}@example.com") for n in "abc"] == [
        "withdrawn",
        "given",
        "withdrawn",
    ]
    monkeypatch.setattr(mailchimp, "record_unsubscribe", real)
    assert reconcile(db).withdrawn == 1
    assert _newsletter(db, "b@example.com") == "withdrawn"


# ---- the webhook -------------------------------------------------------------------------


@pytest.fixture
def hook_app(settings: Settings, mailchimp_settings: dict) -> Flask:
    from dataclasses import replace

    return create_app(replace(settings, **mailchimp_settings, mail_wake=False))


def _hook(app: Flask, data: dict[str, str], secret: str = "hook-secret-0123456789"):  # type: ignore[no-untyped-def]
    return app.test_client().post(f"/webhooks/mailchimp/{secret}", data=data)


def test_the_webhook_answers_mailchimp_s_check_and_hides_from_wrong_secrets(
    hook_app: Flask,
) -> None:
    client = hook_app.test_client()
    assert client.get("/webhooks/mailchimp/hook-secret-0123456789").status_code == 200
    assert client.get("/webhooks/mailchimp/wrong").status_code == 404
    assert _hook(hook_app, {"type": "unsubscribe"}, secret="wrong").status_code == 404


def test_webhook_unsubscribe_and_cleaned_are_withdrawals(hook_app: Flask) -> None:
    db: Database = hook_app.extensions["consent.db"]
    with db.transaction() as session:
        for name in ("a", "b"):
            factories.consenting(session, "newsletter", email=f"{name}@example.com")
    fired_at = (utcnow() + timedelta(seconds=2)).strftime("%Y-%m-%d %H:%M:%S")
    base = {"data[list_id]": "list123", "fired_at": fired_at}
    assert (
        _hook(
            hook_app,
            {
                **base,
                "type": "unsubscribe",
                "data[email]": "A@example.com",
                "data[reason]": "manual",
            },
        ).status_code
        == 200
    )
    assert (
        _hook(
            hook_app,
            {**base, "type": "cleaned", "data[email]": "b@example.com", "data[reason]": "hard"},
        ).status_code
        == 200
    )
    with db.reader() as session:
        for name in ("a", "b"):
            person = people.find_by_email(session, f"{name}@example.com")
            state = ledger.states_for(session, person)["newsletter"]
            assert (state.status, state.channel) == ("withdrawn", "mailchimp_webhook")
    assert [(c.action, c.status) for c in _changes(db)] == [("subscribe", "superseded")] * 2


def test_webhook_address_change_is_a_correction(hook_app: Flask) -> None:
    db: Database = hook_app.extensions["consent.db"]
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="before@example.com")
        old_link = "/manage/" + links.make_token(db.settings, person, "manage")
    assert hook_app.test_client().get(old_link).status_code == 200
    response = _hook(
        hook_app,
        {
            "type": "upemail",
            "data[list_id]": "list123",
            "data[old_email]": "before@example.com",
            "data[new_email]": "after@example.com",
        },
    )
    assert response.status_code == 200
    with db.reader() as session:
        assert people.find_by_email(session, "after@example.com") is not None
        change = session.exec(select(PersonChange)).one()
        assert (change.fields, change.channel) == ("email", "mailchimp_webhook")
    assert hook_app.test_client().get(old_link).status_code == 410


@pytest.mark.parametrize(
    "data",
    [
        {},
        {"type": "explode", "data[email]": "a@example.com"},
        {"type": "unsubscribe"},
        {"type": "unsubscribe", "data[email]": "not an email"},
        {"type": "unsubscribe", "data[email]": "a@example.com", "data[list_id]": "other"},
        {"type": "unsubscribe", "data[email]": "a@example.com"},
        {"type": "upemail", "data[old_email]": "a@example.com"},
        {"type": "cleaned", "data[email]": "a@example.com", "fired_at": "yesterday"},
        {"type": "unsubscribe", "data[email]": "a@example.com\x00"},
    ],
)
def test_malformed_webhooks_are_a_400_and_write_nothing(hook_app: Flask, data: dict) -> None:
    db: Database = hook_app.extensions["consent.db"]
    with db.transaction() as session:
        factories.consenting(session, "newsletter", email="a@example.com")
    with db.reader() as session:
        before = len(session.exec(select(ConsentEvent)).all())
    assert _hook(hook_app, data).status_code == 400
    with db.reader() as session:
        assert len(session.exec(select(ConsentEvent)).all()) == before
        assert session.exec(select(PersonChange)).all() == []


@pytest.mark.parametrize("ahead", [timedelta(days=2), None])
def test_an_unsubscribe_webhook_dated_in_the_future_is_a_400_and_writes_nothing(
    hook_app: Flask, ahead: timedelta | None
) -> None:
    """Taken at its word, a future fired_at would outrank any agreement given here since."""
    db: Database = hook_app.extensions["consent.db"]
    with db.transaction() as session:
        factories.consenting(session, "newsletter", email="a@example.com")
    fired = "9999-12-31 23:59:59" if ahead is None else f"{utcnow() + ahead:%Y-%m-%d %H:%M:%S}"
    response = _hook(
        hook_app,
        {
            "type": "unsubscribe",
            "fired_at": fired,
            "data[list_id]": "list123",
            "data[email]": "a@example.com",
        },
    )
    assert response.status_code == 400
    assert "more than a day in the future" in response.get_data(as_text=True)
    assert _newsletter(db, "a@example.com") == "given"


def test_webhook_for_an_unknown_address_is_acknowledged_and_ignored(hook_app: Flask) -> None:
    response = _hook(
        hook_app,
        {"type": "unsubscribe", "data[email]": "who@example.com", "data[list_id]": "list123"},
    )
    assert response.status_code == 200


def test_subscriber_hash_matches_mailchimp_s_definition() -> None:
    assert subscriber_hash("Urist.McVankab@freddiesjokes.com") == "62eeb292278cc15f5817cb78f7790b08"


def _newsletter(db: Database, email: str) -> str:
    with db.reader() as session:
        person = people.find_by_email(session, email)
        return ledger.states_for(session, person)["newsletter"].status


def _withdraw_here(db: Database, person_id: int | None) -> None:
    with db.transaction() as session:
        ledger.withdraw(
            session, session.get(Person, person_id), "newsletter", channel="web_form", actor="self"
        )


def test_an_unsubscribe_made_in_mailchimp_drops_a_subscribe_not_yet_pushed(
    hook_app: Flask, mailchimp_fake: FakeMailchimp
) -> None:
    db: Database = hook_app.extensions["consent.db"]
    with db.transaction() as session:
        factories.consenting(session, "newsletter", email="x@example.com")
    mailchimp_fake.add_member("x@example.com", "unsubscribed")
    response = _hook(
        hook_app,
        {"type": "unsubscribe", "data[list_id]": "list123", "data[email]": "x@example.com"},
    )
    assert response.status_code == 200
    assert _newsletter(db, "x@example.com") == "withdrawn"
    _pusher(db).push()
    assert mailchimp_fake.members[md5("x@example.com")]["status"] == "unsubscribed"


def test_a_reconciled_unsubscribe_drops_a_subscribe_not_yet_pushed(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        factories.consenting(session, "newsletter", email="y@example.com")
    with time_machine.travel(utcnow() + timedelta(seconds=5), tick=True):
        mailchimp_fake.add_member("y@example.com", "unsubscribed")
        assert reconcile(db).withdrawn == 1
        _pusher(db).push()
    assert mailchimp_fake.members[md5("y@example.com")]["status"] == "unsubscribed"


def test_a_subscribe_retried_after_the_person_withdrew_is_dropped(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    """The withdrawal came while the subscribe was on its way and failed: pushed after the
    unsubscribe, the retried subscribe would undo it."""
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        person_id = factories.consenting(session, "newsletter", email="r@example.com").id
    real_route = mailchimp_fake.route
    first = [True]

    def route(method, path, query, data):  # type: ignore[no-untyped-def]
        if method == "PUT" and first:
            first.clear()
            _withdraw_here(db, person_id)
            return 503, {"title": "busy"}
        return real_route(method, path, query, data)

    mailchimp_fake.route = route  # type: ignore[method-assign]
    _pusher(db).push()
    _pusher(db).push()
    with time_machine.travel(utcnow() + timedelta(hours=1), tick=True):
        _pusher(db).push()
    assert _newsletter(db, "r@example.com") == "withdrawn"
    assert mailchimp_fake.members.get(md5("r@example.com"), {}).get("status") != "subscribed"
    assert [(c.action, c.status) for c in _changes(db)] == [
        ("subscribe", "superseded"),
        ("unsubscribe", "done"),
    ]


def test_an_unsubscribe_webhook_older_than_a_fresh_agreement_does_not_undo_it(
    hook_app: Flask,
) -> None:
    """Mailchimp sends a webhook again when it thinks the first try failed."""
    db: Database = hook_app.extensions["consent.db"]
    with db.transaction() as session:
        factories.consenting(session, "newsletter", email="z@example.com")
    fired = (utcnow() - timedelta(minutes=5)).strftime("%Y-%m-%d %H:%M:%S")
    response = _hook(
        hook_app,
        {
            "type": "unsubscribe",
            "fired_at": fired,
            "data[list_id]": "list123",
            "data[email]": "z@example.com",
        },
    )
    assert response.status_code == 200
    assert _newsletter(db, "z@example.com") == "given"


def test_an_unsubscribe_is_retried_through_a_long_outage_and_never_given_up(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="gone@example.com")
    _pusher(db).push()
    _withdraw_here(db, person.id)
    mailchimp_fake.member_failures[md5("gone@example.com")] = 503
    start = utcnow()
    for hour in range(48):
        with time_machine.travel(start + timedelta(hours=hour), tick=True):
            _pusher(db).push()
    unsubscribe = _changes(db)[-1]
    assert (unsubscribe.status, unsubscribe.action) == ("pending", "unsubscribe")
    assert mailchimp.MAX_ATTEMPTS < unsubscribe.attempts < 20
    del mailchimp_fake.member_failures[md5("gone@example.com")]
    with time_machine.travel(start + timedelta(hours=60), tick=True):
        _pusher(db).push()
    assert mailchimp_fake.members[md5("gone@example.com")]["status"] == "unsubscribed"


def test_a_subscribe_that_keeps_failing_is_given_up_for_a_person_to_see(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    _subscribers(db, "never", 1)
    mailchimp_fake.member_failures[md5("never0@example.com")] = 503
    start = utcnow()
    for hour in range(48):
        with time_machine.travel(start + timedelta(hours=hour), tick=True):
            _pusher(db).push()
    [change] = _changes(db)
    assert (change.status, change.attempts, change.email) == (
        "failed",
        mailchimp.MAX_ATTEMPTS,
        None,
    )


def test_changes_not_tried_because_mailchimp_asked_us_to_wait_keep_their_attempts(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    db = configured(**mailchimp_settings)
    _subscribers(db, "later", 3)
    mailchimp_fake.fail_next = [429]
    assert _pusher(db).push().retrying == 3
    assert [c.attempts for c in _changes(db)] == [1, 0, 0]


def test_two_pushers_never_take_the_same_change(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    """Between one pusher's read of what is due and its update, another claims: it waits
    its turn, then finds every change taken."""
    from sqlalchemy import event

    db = configured(**mailchimp_settings)
    crossing_writers_only(db.engine.dialect.name)
    other = configured(**mailchimp_settings)
    _subscribers(db, "dup", 2)
    beside: list[Beside] = []

    def claim_beside() -> list[int]:
        with other.transaction() as session:
            return [c.id or 0 for c in mailchimp.claim(session, 10)]

    @event.listens_for(db.engine, "before_cursor_execute")
    def meanwhile(conn, cursor, statement, params, context, many):  # type: ignore[no-untyped-def]
        claiming = statement.startswith("UPDATE mailchimp_change") and "attempts" in statement
        if claiming and not beside:
            beside.append(Beside(claim_beside))
            beside[0].start()
            until_done_or_waiting(other.engine, beside[0])

    with db.transaction() as session:
        mine = [c.id for c in mailchimp.claim(session, 10)]
    [second] = beside
    second.join(timeout=30)
    assert second.error is None
    assert len(mine) == 2 and second.result == []


def test_mailchimp_moving_a_member_takes_a_queued_unsubscribe_to_the_new_address(
    hook_app: Flask, mailchimp_fake: FakeMailchimp
) -> None:
    db: Database = hook_app.extensions["consent.db"]
    with db.transaction() as session:
        person_id = factories.consenting(session, "newsletter", email="old@example.com").id
    _pusher(db).push()
    _withdraw_here(db, person_id)
    mailchimp_fake._patch(md5("old@example.com"), {"email_address": "new@example.com"})
    upemail = {
        "type": "upemail",
        "data[list_id]": "list123",
        "data[old_email]": "old@example.com",
        "data[new_email]": "new@example.com",
    }
    assert _hook(hook_app, upemail).status_code == 200
    _pusher(db).push()
    assert _newsletter(db, "new@example.com") == "withdrawn"
    assert mailchimp_fake.members[md5("new@example.com")]["status"] == "unsubscribed"


@pytest.mark.parametrize("erased", [False, True])
def test_someone_mailchimp_subscribes_again_after_they_opted_out_is_unsubscribed(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp, erased: bool
) -> None:
    """An import into the audience, or Mailchimp's own form, is not consent given here."""
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="w@example.com")
        factories.consenting(session, "newsletter", email="keeps@example.com")
        ledger.withdraw(session, person, "newsletter", channel="web_form", actor="self")
        if erased:
            people.erase(session, person, channel="web_form", actor="self")
    _pusher(db).push()
    reconcile(db)
    with time_machine.travel(utcnow() + timedelta(minutes=5), tick=True):
        mailchimp_fake.add_member("w@example.com", "subscribed")
        mailchimp_fake.add_member("stranger@example.com", "subscribed")
    with time_machine.travel(utcnow() + timedelta(hours=1), tick=True):
        assert reconcile(db).unsubscribed_again == 1
        _pusher(db).push()
    assert mailchimp_fake.members[md5("w@example.com")]["status"] == "unsubscribed"
    assert mailchimp_fake.members[md5("keeps@example.com")]["status"] == "subscribed"
    assert mailchimp_fake.members[md5("stranger@example.com")]["status"] == "subscribed"


def test_an_address_change_here_keeps_an_unsubscribe_made_in_mailchimp(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    """The webhook was lost, so we still hold them as agreeing when they change address."""
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        person_id = factories.consenting(session, "newsletter", email="m1@example.com").id
    _pusher(db).push()
    reconcile(db)
    with time_machine.travel(utcnow() + timedelta(minutes=1), tick=True):
        mailchimp_fake._patch(md5("m1@example.com"), {"status": "unsubscribed"})
    with time_machine.travel(utcnow() + timedelta(minutes=2), tick=True):
        _change_email(db, person_id, "m2@example.com")
        _pusher(db).push()
    assert mailchimp_fake.members[md5("m2@example.com")]["status"] == "unsubscribed"
    with time_machine.travel(utcnow() + timedelta(hours=1), tick=True):
        reconcile(db)
    assert _newsletter(db, "m2@example.com") == "withdrawn"


def test_a_change_sent_back_to_wait_while_a_newer_one_is_queued_never_undoes_it(
    configured: Open,
    mailchimp_settings: dict,
    mailchimp_fake: FakeMailchimp,
    backend: str,
) -> None:
    """Mailchimp was busy, so a subscribe goes back to wait, while the person withdraws. On
    PostgreSQL neither sees the other's change: the subscribe is left waiting beside the
    unsubscribe, and, pushed after it, would put back someone who asked to come off."""
    crossing_writers_only(backend)
    db = configured(**mailchimp_settings)
    mailchimp_fake.add_member("leaving@example.com", "subscribed")
    with db.transaction() as session:
        person_id = factories.consenting(session, "newsletter", email="leaving@example.com").id
    with db.transaction() as session:
        [subscribe] = mailchimp.claim(session, 10)
        subscribe_id = subscribe.id
    assert subscribe_id is not None

    def withdraw() -> None:
        with db.transaction() as session:
            person = session.get(Person, person_id)
            ledger.withdraw(session, person, "newsletter", channel="web_form", actor="self")

    with db.transaction() as session:
        mailchimp.mark_retry(session, [subscribe_id], "Mailchimp was busy", timedelta(minutes=5))
        withdrawing = Beside(withdraw)
        withdrawing.start()
        withdrawing.join(timeout=30)
        assert not withdrawing.is_alive(), "the withdrawal waited for the retry"
    assert withdrawing.error is None
    _pusher(db).push()
    with time_machine.travel(utcnow() + timedelta(hours=1)):
        _pusher(db).push()
    assert mailchimp_fake.members[md5("leaving@example.com")]["status"] == "unsubscribed"
    assert [(c.action, c.status) for c in _changes(db)] == [
        ("subscribe", "superseded"),
        ("unsubscribe", "done"),
    ]


def test_a_change_left_waiting_behind_a_newer_one_is_dropped_when_the_newer_is_taken(
    configured: Open, mailchimp_settings: dict, mailchimp_fake: FakeMailchimp
) -> None:
    """However the two came to wait side by side, only the newer is pushed, even while the
    older waits to be tried again; another member's waiting change is left alone."""
    db = configured(**mailchimp_settings)
    later = utcnow() + timedelta(minutes=30)
    with db.transaction() as session:
        for email, action, due in (
            ("leaving@example.com", "subscribe", later),
            ("other@example.com", "subscribe", later),
            ("leaving@example.com", "unsubscribe", utcnow()),
        ):
            session.add(
                MailchimpChange(
                    action=action,
                    subscriber_hash=subscriber_hash(email),
                    email=email if action == "subscribe" else None,
                    next_attempt_at=due,
                )
            )
    assert _pusher(db).push().pushed == 1
    assert [(c.action, c.status) for c in _changes(db)] == [
        ("subscribe", "superseded"),
        ("subscribe", "pending"),
        ("unsubscribe", "done"),
    ]


def test_two_pushers_claiming_at_once_never_take_two_changes_for_one_member(
    configured: Open,
    mailchimp_settings: dict,
    mailchimp_fake: FakeMailchimp,
    backend: str,
) -> None:
    """A second pusher's claim, made before the first has committed, must not take the newer
    change while the first sends the older: the two would reach Mailchimp in either order."""
    crossing_writers_only(backend)
    db = configured(**mailchimp_settings)
    with db.transaction() as session:
        for action in ("subscribe", "unsubscribe"):
            session.add(
                MailchimpChange(
                    action=action,
                    subscriber_hash=subscriber_hash("member@example.com"),
                    email="member@example.com" if action == "subscribe" else None,
                )
            )
        session.add(
            MailchimpChange(
                action="subscribe",
                subscriber_hash=subscriber_hash("other@example.com"),
                email="other@example.com",
            )
        )

    def second_claim() -> list[str]:
        with db.transaction() as session:
            return [change.email or change.action for change in mailchimp.claim(session, 10)]

    with db.transaction() as session:
        assert [change.action for change in mailchimp.claim(session, 1)] == ["subscribe"]
        second = Beside(second_claim)
        second.start()
        until_done_or_waiting(db.engine, second)
    second.join(timeout=30)
    assert second.error is None
    assert second.result == ["other@example.com"]
