"""The mail queue and its worker, delivering to a real SMTP server on loopback."""

from __future__ import annotations

import contextlib
import re
import socket
import threading
import time
from collections import Counter
from collections.abc import Callable, Iterator
from datetime import timedelta
from email.message import EmailMessage, Message
from pathlib import Path

import pytest
import time_machine
from sqlalchemy import func, update
from sqlmodel import Session, select

from consent import create_app, jobs, links
from consent.config import Settings
from consent.db import Database
from consent.models import JobRun, Outbox, Person
from consent.services import link_requests, outbox, people
from consent.timeutil import utcnow
from consent.validation import without_addresses
from mailers.backends import FileBackend, RelayUnavailable, SmtpBackend
from mailers.outbox import OutboxWorker
from tests import factories
from tests.smtp_sink import (
    SmtpServer,
    authenticator,
    client_context,
    self_signed,
    server_context,
)
from tests.web import submit

Open = Callable[..., Database]


def _queue(db: Database, count: int = 1, template: str = "welcome") -> list[int]:
    ids = []
    with db.transaction() as session:
        for _ in range(count):
            person = factories.person(session)
            ids.append(outbox.queue(session, template, person=person, context={"name": "Sam"}))
    return ids


def _rows(db: Database) -> list[Outbox]:
    with db.reader() as session:
        return list(session.exec(select(Outbox).order_by(Outbox.id)))


def _parts(message: EmailMessage) -> tuple[str, str]:
    text = message.get_body(("plain",)).get_content()
    html = message.get_body(("html",)).get_content()
    return text, html


def test_mail_is_queued_in_the_same_transaction_as_its_cause(db: Database) -> None:
    with pytest.raises(RuntimeError), db.transaction() as session:
        person = factories.consenting(session, "newsletter")
        outbox.queue(session, "welcome", person=person, context={"name": None})
        raise RuntimeError("the request failed after queueing")
    with db.reader() as session:
        assert session.exec(select(func.count()).select_from(Outbox)).one() == 0


def test_a_delivered_message_has_both_parts_and_the_right_headers(
    configured: Open, smtp: SmtpServer, smtp_settings: dict, settings: Settings
) -> None:
    db = configured(**smtp_settings)
    with db.transaction() as session:
        person = factories.consenting(session, "panel_contact", email="mum@example.com")
        panel = factories.panel(session)
        factories.member(session, panel, person, special={"needs": "Deaf; uses BSL"})
        outbox.queue(
            session,
            "panel_session_invitation",
            person=person,
            context={
                "name": "Jo",
                "panel_name": panel.name,
                "family_hub": panel.family_hub,
                "session_title": "Spring meeting",
                "session_when": "5 March 2027 at 6pm",
                "session_where": "Northfield Family Hub",
                "session_recorded": True,
                "recording_consent": False,
            },
        )
    report = OutboxWorker(db).run_once()
    assert report.sent == 1
    [message] = smtp.sink.messages
    assert message["To"] == "mum@example.com"
    assert message["Subject"] == "The next Parent Carer Panel meeting"
    assert message["Message-ID"].startswith("<") and message["Message-ID"].endswith(">")
    assert message["Date"]
    assert message["List-Unsubscribe-Post"] == "List-Unsubscribe=One-Click"
    unsubscribe = re.fullmatch(r"<(https://[^>]+)>", message["List-Unsubscribe"])
    assert unsubscribe, message["List-Unsubscribe"]
    assert message.get_content_type() == "multipart/alternative"
    text, html = _parts(message)
    for part in (text, html):
        assert settings.council_name in part
        assert "Why you are getting this email" in part
        assert "Spring meeting" in part
        assert "BSL" not in part and "Deaf" not in part
    manage = re.search(r"https://consent\.test/manage/([\w.-]+)", text)
    assert manage and manage.group(0) in html
    with db.reader() as session:
        found, _ = links.resolve(session, manage.group(1), "manage")
        assert found.email == "mum@example.com"
        token = unsubscribe.group(1).rsplit("/", 1)[1]
        _, claims = links.resolve(session, token, "unsubscribe")
        assert claims.purpose == "panel_contact"
    [row] = _rows(db)
    assert (row.status, row.attempts) == ("sent", 1) and row.sent_at is not None


def test_html_part_escapes_what_people_typed(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    db = configured(**smtp_settings)
    with db.transaction() as session:
        person = factories.person(session)
        outbox.queue(session, "welcome", person=person, context={"name": "<script>x</script>"})
    OutboxWorker(db).run_once()
    _, html = _parts(smtp.sink.messages[0])
    assert "<script>" not in html and "&lt;script&gt;" in html


def test_every_template_renders_with_a_preferences_link(db: Database) -> None:
    from consent.emails import EMAILS

    with db.transaction() as session:
        person = factories.person(session)
        for template, spec in EMAILS.items():
            context = {name: "x" for name in spec.fields}
            if "withdrawn" in spec.fields:
                context["withdrawn"] = ["Family Hubs newsletter"]
            outbox.queue(session, template, person=person, context=context)
    rows = _rows(db)
    assert len(rows) == len(EMAILS) >= 12
    for row in rows:
        assert "https://consent.test/manage/" in row.body_text, row.template
        assert "https://consent.test/manage/" in row.body_html, row.template
        assert "List-Unsubscribe" in row.headers


def test_the_relay_refusing_connections_keeps_mail_queued_until_it_is_back(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    db = configured(**smtp_settings)
    ids = _queue(db, 5)
    smtp.stop()
    worker = OutboxWorker(db, batch_size=2)
    report = worker.run_once()
    assert report.sent == 0 and report.released == 2
    rows = _rows(db)
    assert [r.status for r in rows] == ["queued"] * 5
    assert all(r.attempts == 0 for r in rows) and "connect" in rows[0].last_error.lower()

    smtp.start()
    with time_machine.travel(utcnow() + timedelta(minutes=2), tick=True):
        assert worker.run_once().sent == 5
        assert worker.run_once().sent == 0
    received = Counter(m["Message-ID"] for m in smtp.sink.messages)
    assert len(received) == 5 and set(received.values()) == {1}
    assert {r.id for r in _rows(db) if r.status == "sent"} == set(ids)


def test_temporary_refusals_retry_with_backoff_and_permanent_ones_stop(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    db = configured(**smtp_settings)
    with db.transaction() as session:
        later = factories.person(session, "later@example.com")
        never = factories.person(session, "never@example.com")
        outbox.queue(session, "welcome", person=later, context={})
        outbox.queue(session, "welcome", person=never, context={})
    smtp.sink.refuse = {
        "later@example.com": "451 4.3.0 Try again later",
        "never@example.com": "550 5.1.1 <never@example.com> No such mailbox",
    }
    start = utcnow()
    report = OutboxWorker(db).run_once()
    assert (report.sent, report.retrying, report.failed) == (0, 1, 1)
    retry, failed = _rows(db)
    assert retry.status == "queued" and retry.next_attempt_at > start + timedelta(seconds=14)
    assert failed.status == "failed" and "550" in failed.last_error
    assert "never@example.com" not in failed.last_error, "errors outlive the person"

    smtp.sink.refuse = {}
    assert OutboxWorker(db).run_once().sent == 0
    with time_machine.travel(retry.next_attempt_at + timedelta(seconds=1), tick=True):
        assert OutboxWorker(db).run_once().sent == 1
    assert [m["To"] for m in smtp.sink.messages] == ["later@example.com"]


def test_the_mail_job_s_record_keeps_no_address_a_relay_quoted(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    """Job records outlive the people they mention; erasure and retention never look there."""
    db = configured(**smtp_settings)
    with db.transaction() as session:
        person = factories.person(session, "jane.doe@example.com")
        outbox.queue(session, "welcome", person=person, context={})
    smtp.sink.refuse_data = {"jane.doe@example.com": "554 5.7.1 <jane.doe@example.com> rejected"}
    jobs.record(db, "deliver_mail", jobs.deliver_mail)
    with db.reader() as session:
        [run] = session.exec(select(JobRun)).all()
    assert run.status == "ok" and "554" in (run.detail or "") and "[email]" in (run.detail or "")
    assert "jane.doe" not in (run.detail or "")


@pytest.mark.parametrize(
    "address",
    [
        "mary.o'brien@example.com",
        "ann=bob@example.com",
        "first+tag@example.com",
        "dept/team@example.com",
        "sales&hire@example.co.uk",
        "Jane.Doe@Example.com",
    ],
)
def test_every_kind_of_address_is_taken_out_of_recorded_errors(address: str) -> None:
    """Relays quote refused addresses in many ways; none of it may reach a log or a record."""
    local = address.split("@")[0]
    for quoted in (f"550 <{address}>: rejected", f"to={address}, status=bounced", f"'{address}'"):
        cleaned = without_addresses(quoted)
        left = [word for word in re.findall(r"[a-z0-9]{2,}", local.lower()) if word in cleaned]
        assert "[email]" in cleaned and not left, (quoted, cleaned)


def test_a_message_refused_after_it_is_sent_retries_or_stops_by_the_code(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    """Relays often judge the message itself (spam, greylisting) only after DATA."""
    db = configured(**smtp_settings)
    with db.transaction() as session:
        for address in ("grey@example.com", "spam@example.com"):
            outbox.queue(session, "welcome", person=factories.person(session, address), context={})
    smtp.sink.refuse_data = {
        "grey@example.com": "451 4.7.1 Greylisted, try again later",
        "spam@example.com": "554 5.7.1 Message rejected",
    }
    report = OutboxWorker(db).run_once()
    assert (report.sent, report.retrying, report.failed) == (0, 1, 1)
    retry, failed = _rows(db)
    assert retry.status == "queued" and retry.attempts == 1 and "451" in retry.last_error
    assert failed.status == "failed" and "554" in failed.last_error
    smtp.sink.refuse_data = {}
    with time_machine.travel(retry.next_attempt_at + timedelta(seconds=1), tick=True):
        assert OutboxWorker(db).run_once().sent == 1
    assert [m["To"] for m in smtp.sink.messages] == ["grey@example.com"]


def test_a_message_that_keeps_failing_stops_at_the_maximum(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    db = configured(**smtp_settings)
    _queue(db, 1)
    [row] = _rows(db)
    smtp.sink.refuse = {row.to_address: "452 4.2.2 Mailbox full"}
    moment = utcnow()
    for _ in range(outbox.MAX_ATTEMPTS):
        with time_machine.travel(moment, tick=True):
            OutboxWorker(db).run_once()
        moment += outbox.BACKOFF_CAP + timedelta(minutes=1)
    [row] = _rows(db)
    assert row.status == "failed" and row.attempts == outbox.MAX_ATTEMPTS
    assert "452" in row.last_error


def test_a_dedupe_key_queues_a_message_only_once(db: Database) -> None:
    with db.transaction() as session:
        person = factories.person(session)
        first = outbox.queue(session, "welcome", person=person, context={}, dedupe_key="k1")
        second = outbox.queue(session, "welcome", person=person, context={}, dedupe_key="k1")
    assert first is not None and second is None
    assert len(_rows(db)) == 1


def test_suppressed_addresses_get_only_mail_they_asked_for(db: Database) -> None:
    with db.transaction() as session:
        person = factories.consenting(session, "newsletter", email="gone@example.com")
        people.erase(session, person, channel="email_link", actor="self")
        again = people.find_or_create(session, "gone@example.com")
        assert outbox.queue(session, "welcome", person=again, context={}) is None
        assert outbox.queue(
            session,
            "confirm_newsletter",
            person=again,
            context={"confirm_url": "https://consent.test/confirm/x"},
        )
    assert [r.template for r in _rows(db)] == ["confirm_newsletter"]


def test_bodies_are_purged_after_the_keep_time_but_history_stays(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    db = configured(**smtp_settings, mail_body_keep_days=7)
    _queue(db, 2)
    worker = OutboxWorker(db)
    worker.run_once()
    assert worker.purge() == 0
    with time_machine.travel(utcnow() + timedelta(days=8), tick=True):
        assert worker.purge() == 2
    for row in _rows(db):
        assert row.status == "sent" and row.sent_at and row.subject and row.template
        assert row.body_text is None and row.body_html is None and row.to_address is None
        assert row.purged_at is not None


def test_purge_on_send_keeps_nothing_after_delivery(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    db = configured(**smtp_settings)
    with db.transaction() as session:
        person = factories.person(session, "last@example.com")
        outbox.queue(session, "data_deleted", person=person, context={}, purge_on_send=True)
    OutboxWorker(db).run_once()
    assert smtp.sink.messages[0]["To"] == "last@example.com"
    [row] = _rows(db)
    assert row.status == "sent" and row.to_address is None and row.body_text is None


def test_a_worker_that_died_mid_send_has_its_messages_requeued(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    db = configured(**smtp_settings)
    _queue(db, 3)
    with db.transaction() as session:
        assert len(outbox.claim(session, "dead-worker", 10)) == 3
    assert OutboxWorker(db).run_once().sent == 0
    with time_machine.travel(utcnow() + outbox.LEASE + timedelta(minutes=1), tick=True):
        report = OutboxWorker(db).run_once()
    assert report.requeued == 3 and report.sent == 3


class SlowRelay:
    """The real relay on loopback, but each accepted message costs ``per_message`` of
    (travelled) time, after which ``meanwhile`` runs with the count accepted so far."""

    def __init__(
        self,
        relay: SmtpServer,
        clock: time_machine.Coordinates,
        per_message: timedelta,
        meanwhile: Callable[[int], None],
    ) -> None:
        self.backend = SmtpBackend("127.0.0.1", relay.port, timeout=5)
        self.clock, self.per_message, self.meanwhile = clock, per_message, meanwhile
        self.accepted = 0

    @contextlib.contextmanager
    def connect(self) -> Iterator[SlowRelay]:
        with self.backend.connect() as self.connection:
            yield self

    def send(self, message: Message, *, reference: str) -> None:
        self.connection.send(message, reference=reference)
        self.accepted += 1
        self.clock.shift(self.per_message)
        self.meanwhile(self.accepted)


def test_a_batch_slower_than_the_lease_sends_each_message_once(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    """Three minutes a message: by the fourth the batch has outlived its lease. The worker
    renews its claims as it goes, so a second worker finds nothing stale to take over, and
    the last message, on its last attempt, is sent rather than failed unsent."""
    db = configured(**smtp_settings)
    *_, last = _queue(db, 5)
    with db.transaction() as session:
        session.execute(
            update(Outbox).where(Outbox.id == last).values(attempts=outbox.MAX_ATTEMPTS - 1)
        )
    other = OutboxWorker(db, name="B")
    reports = []

    def meanwhile(accepted: int) -> None:
        if accepted == 4:
            reports.append(other.run_once())

    with time_machine.travel(utcnow(), tick=True) as clock:
        slow = SlowRelay(smtp, clock, timedelta(minutes=3), meanwhile)
        report = OutboxWorker(db, slow, name="A").run_once()
    received = Counter(m["Message-ID"] for m in smtp.sink.messages)
    assert len(received) == 5 and set(received.values()) == {1}, received
    assert (report.sent, report.lost) == (5, 0)
    assert (reports[0].requeued, reports[0].failed, reports[0].sent) == (0, 0, 0)
    assert [(r.status, r.claimed_by) for r in _rows(db)] == [("sent", None)] * 5


def test_a_relay_lost_mid_batch_costs_only_the_message_in_flight_an_attempt(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    """Those not yet reached never used an attempt. The one being sent when the relay went
    uses its attempt and waits its turn: it may be what made the relay hang up."""
    db = configured(**smtp_settings)
    _queue(db, 4)

    def meanwhile(accepted: int) -> None:
        if accepted == 2:
            smtp.stop()

    with time_machine.travel(utcnow(), tick=True) as clock:
        dropping = SlowRelay(smtp, clock, timedelta(0), meanwhile)
        report = OutboxWorker(db, dropping).run_once()
    assert (report.sent, report.retrying, report.released) == (2, 1, 1)
    assert [(r.status, r.attempts) for r in _rows(db)][2:] == [("queued", 1), ("queued", 0)]


def test_only_the_message_in_flight_past_the_lease_can_go_twice(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    """Eleven minutes pass while the relay takes the first message: the second worker
    resends that one (delivery is at least once) but none of the four still waiting."""
    db = configured(**smtp_settings)
    first, *waiting = _queue(db, 5)
    other = OutboxWorker(db, name="B")

    def meanwhile(accepted: int) -> None:
        if accepted == 1:
            other.run_once()

    with time_machine.travel(utcnow(), tick=True) as clock:
        slow = SlowRelay(smtp, clock, timedelta(minutes=11), meanwhile)
        report = OutboxWorker(db, slow, name="A").run_once()
    received = Counter(m["Message-ID"] for m in smtp.sink.messages)
    ids = {row.message_id: row.id for row in _rows(db)}
    assert {ids[key]: count for key, count in received.items()} == {
        first: 2,
        **dict.fromkeys(waiting, 1),
    }
    assert (report.sent, report.lost) == (1, 4)


@pytest.mark.parametrize(
    ("stop", "why"),
    [
        (
            lambda session, ids: outbox.cancel_unsent(
                session, ids, ("welcome",), reason="they opted out."
            ),
            "Cancelled: they opted out.",
        ),
        (
            lambda session, ids: people.scrub(
                session, ids, reason="nothing_held", suppress_ids=set()
            ),
            "Cancelled: the person's data was deleted.",
        ),
    ],
    ids=["opted-out", "erased"],
)
def test_a_message_cancelled_while_the_relay_takes_it_is_recorded_as_sent(
    configured: Open,
    smtp: SmtpServer,
    smtp_settings: dict,
    stop: Callable[[Session, list[int]], object],
    why: str,
) -> None:
    """The person opts out, or is erased, as the relay accepts their message: it went, so
    the record says so and why it was to be cancelled. The next, cancelled before it was
    sent, does not go."""
    db = configured(**smtp_settings)
    first, second = _queue(db, 2)
    rows = {row.id: row.person_id for row in _rows(db)}

    def meanwhile(accepted: int) -> None:
        if accepted == 1:
            with db.transaction() as session:
                stop(session, [person_id for person_id in rows.values() if person_id])

    with time_machine.travel(utcnow(), tick=True) as clock:
        slow = SlowRelay(smtp, clock, timedelta(0), meanwhile)
        report = OutboxWorker(db, slow).run_once()
    assert (report.sent, report.lost) == (1, 1)
    assert len(smtp.sink.messages) == 1
    by_id = {row.id: (row.status, row.last_error, row.sent_at is not None) for row in _rows(db)}
    assert by_id == {
        first: ("sent", f"Sent before it could be cancelled. {why}", True),
        second: ("cancelled", why, False),
    }


def test_a_worker_that_lost_its_claim_records_nothing_over_the_new_holder(
    db: Database,
) -> None:
    [message] = _queue(db, 1)
    with db.transaction() as session:
        assert outbox.claim(session, "A", 10) == [message]
    later = utcnow() + outbox.LEASE + timedelta(minutes=1)
    with db.transaction() as session:
        assert outbox.requeue_stale(session, now=later).requeued == 1
        assert outbox.claim(session, "B", 10, now=later) == [message]
    with db.transaction() as session:
        assert outbox.renew(session, [message], worker="A", now=later) == set()
        outbox.mark_sent(session, message, worker="A", now=later)
        assert (
            outbox.mark_failed_attempt(session, message, "x", permanent=True, worker="A") == "gone"
        )
        outbox.release(session, [message], "relay down", worker="A", now=later)
    [row] = _rows(db)
    assert (row.status, row.claimed_by, row.attempts, row.sent_at) == ("sending", "B", 2, None)
    with db.transaction() as session:
        assert outbox.renew(session, [message], worker="B", now=later) == {message}


def test_a_message_whose_worker_keeps_dying_fails_at_the_maximum_attempts(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    """Each claim counts an attempt; a message that kills its worker every time must stop."""
    db = configured(**smtp_settings)
    _queue(db, 1)
    moment = utcnow()
    for attempt in range(1, outbox.MAX_ATTEMPTS + 1):
        if attempt > 1:
            with db.transaction() as session:
                outbox.requeue_stale(session, now=moment)
        with db.transaction() as session:
            assert len(outbox.claim(session, f"dies-{attempt}", 10, now=moment)) == 1
        moment += outbox.LEASE + timedelta(minutes=1)
    with time_machine.travel(moment, tick=True):
        report = OutboxWorker(db).run_once()
    assert (report.sent, report.requeued, report.failed) == (0, 0, 1)
    assert smtp.sink.messages == []
    [row] = _rows(db)
    assert (row.status, row.attempts, row.claimed_by) == ("failed", outbox.MAX_ATTEMPTS, None)
    assert "no attempts left" in row.last_error


def _written_within_seconds(folder: Path, seconds: float = 10) -> list[Path]:
    """The .eml files the file backend wrote, once there are any or the time is up."""
    deadline = time.monotonic() + seconds
    files: list[Path] = []
    while time.monotonic() < deadline and not files:
        files = list(folder.glob("*.eml"))
        time.sleep(0.05)
    return files


def test_mail_queued_by_the_web_process_is_delivered_within_seconds(
    settings: Settings, tmp_path: Path
) -> None:
    app = create_app(replace_settings(settings, mail_dir=tmp_path / "mail", mail_wake=True))
    database: Database = app.extensions["consent.db"]
    with database.transaction() as session:
        person = factories.person(session, "soon@example.com")
        outbox.queue(session, "preferences_link", person=person, context={"name": None})
    files = _written_within_seconds(tmp_path / "mail")
    app.extensions["consent.mailer"].stop()
    assert len(files) == 1
    content = files[0].read_text()
    assert "To: soon@example.com" in content and "Your link to manage your preferences" in content


def test_a_link_asked_for_on_the_web_is_emailed_within_seconds(
    settings: Settings, tmp_path: Path
) -> None:
    app = create_app(replace_settings(settings, mail_dir=tmp_path / "mail", mail_wake=True))
    database: Database = app.extensions["consent.db"]
    with database.transaction() as session:
        factories.person(session, "soon@example.com")
    submit(app.test_client(), "/link", {"email": "soon@example.com"})
    files = _written_within_seconds(tmp_path / "mail")
    app.extensions["consent.mailer"].stop()
    assert len(files) == 1
    assert "To: soon@example.com" in files[0].read_text()


def replace_settings(settings: Settings, **changes: object) -> Settings:
    from dataclasses import replace

    return replace(settings, **changes)


def test_a_failure_answering_link_requests_does_not_stop_the_mail(
    db: Database, tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    _queue(db, 1)

    def broken(session: object) -> int:
        raise RuntimeError("a request that cannot be answered")

    monkeypatch.setattr(link_requests, "answer", broken)
    report = OutboxWorker(db, FileBackend(tmp_path / "out")).run_once()
    assert report.sent == 1


def _sent_to(db: Database, *addresses: str) -> None:
    with db.transaction() as session:
        for address in addresses:
            outbox.queue(session, "welcome", person=factories.person(session, address), context={})


def test_an_address_on_an_international_domain_is_sent_to_its_ascii_form(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    """Relays and mail clients read only the ASCII (IDNA) form of a domain; we keep the
    address as the person gave it."""
    db = configured(**smtp_settings)
    _sent_to(db, "parent@bücher.example")
    report = OutboxWorker(db).run_once()
    assert report.sent == 1, report.errors
    [(_, envelope_to)] = smtp.sink.envelopes
    assert envelope_to == ["parent@xn--bcher-kva.example"]
    assert smtp.sink.messages[0]["To"] == "parent@xn--bcher-kva.example"
    [row] = _rows(db)
    assert (row.status, row.to_address) == ("sent", "parent@bücher.example")


def test_a_non_ascii_name_before_the_at_goes_by_smtputf8_when_the_relay_offers_it(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    db = configured(**smtp_settings)
    _sent_to(db, "jösé@bücher.example", "after@example.com")
    report = OutboxWorker(db).run_once()
    assert report.sent == 2, report.errors
    assert [to for _, to in smtp.sink.envelopes] == [
        ["jösé@xn--bcher-kva.example"],
        ["after@example.com"],
    ]
    assert smtp.sink.messages[0]["To"] == "jösé@xn--bcher-kva.example"


def test_a_relay_without_smtputf8_fails_only_the_address_it_cannot_take(
    configured: Open,
) -> None:
    server = SmtpServer(enable_SMTPUTF8=False).start()
    try:
        db = configured(
            mail_backend="smtp", smtp_host="127.0.0.1", smtp_port=server.port, smtp_timeout=5
        )
        _sent_to(db, "jösé@bücher.example", "after@example.com")
        report = OutboxWorker(db).run_once()
        assert (report.sent, report.failed) == (1, 1), report.errors
        failed, sent = _rows(db)
        assert failed.status == "failed" and "does not offer SMTPUTF8" in (failed.last_error or "")
        assert (failed.to_address, sent.status) == ("jösé@bücher.example", "sent")
        assert [m["To"] for m in server.sink.messages] == ["after@example.com"]
    finally:
        server.stop()


def test_the_file_backend_writes_real_eml_files(db: Database, tmp_path: Path) -> None:
    _queue(db, 2)
    OutboxWorker(db, FileBackend(tmp_path / "out")).run_once()
    files = sorted((tmp_path / "out").glob("*.eml"))
    assert len(files) == 2
    import email
    from email.policy import default

    parsed = email.message_from_bytes(files[0].read_bytes(), policy=default)
    assert parsed.get_body(("plain",)) is not None and parsed.get_body(("html",)) is not None
    assert not list((tmp_path / "out").glob(".writing-*"))


def test_the_file_backend_writes_international_addresses_as_mail_carries_them(
    db: Database, tmp_path: Path
) -> None:
    import email
    from email.policy import default

    _sent_to(db, "parent@bücher.example", "jösé@bücher.example")
    assert OutboxWorker(db, FileBackend(tmp_path / "out")).run_once().sent == 2
    files = sorted((tmp_path / "out").glob("*.eml"))
    to = [email.message_from_bytes(f.read_bytes(), policy=default)["To"] for f in files]
    assert to == ["parent@xn--bcher-kva.example", "jösé@xn--bcher-kva.example"]


def test_the_console_backend_prints_messages(configured: Open) -> None:
    import io

    from mailers.backends import ConsoleBackend

    db = configured(mail_backend="console")
    _queue(db, 1)
    stream = io.StringIO()
    OutboxWorker(db, ConsoleBackend(stream)).run_once()
    assert "Subject: You are subscribed to the Family Hubs newsletter" in stream.getvalue()


def test_starttls_with_login(configured: Open, tmp_path: Path) -> None:
    cert, key = self_signed(tmp_path)
    server = SmtpServer(
        tls_context=server_context(cert, key),
        require_starttls=True,
        authenticator=authenticator("relay-user", "relay-pass"),
        auth_require_tls=True,
    ).start()
    try:
        db = configured()
        _queue(db, 2)
        backend = SmtpBackend(
            "127.0.0.1",
            server.port,
            security="starttls",
            username="relay-user",
            password="relay-pass",
            timeout=5,
            ssl_context=client_context(cert),
        )
        assert OutboxWorker(db, backend).run_once().sent == 2
        assert len(server.sink.messages) == 2
        wrong = SmtpBackend(
            "127.0.0.1",
            server.port,
            security="starttls",
            username="relay-user",
            password="nope",
            timeout=5,
            ssl_context=client_context(cert),
        )
        with pytest.raises(RelayUnavailable), wrong.connect():
            pass
    finally:
        server.stop()


def test_a_relay_that_never_answers_times_out(db: Database) -> None:
    listener = socket.socket()
    listener.bind(("127.0.0.1", 0))
    listener.listen(1)
    try:
        backend = SmtpBackend("127.0.0.1", listener.getsockname()[1], timeout=0.5)
        start = time.monotonic()
        with pytest.raises(RelayUnavailable), backend.connect():
            pass
        assert time.monotonic() - start < 5
    finally:
        listener.close()


def test_two_workers_racing_over_500_messages_deliver_each_once(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    seed = configured(**smtp_settings)
    with seed.transaction() as session:
        person = factories.person(session, "many@example.com")
        for index in range(500):
            outbox.queue(session, "welcome", person=person, context={"name": f"n{index}"})
    workers = [
        OutboxWorker(configured(**smtp_settings), batch_size=25, name=f"w{i}") for i in range(2)
    ]
    reports = []
    threads = [threading.Thread(target=lambda w=w: reports.append(w.run_once())) for w in workers]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(120)
    received = Counter(m["Message-ID"] for m in smtp.sink.messages)
    assert len(received) == 500
    assert max(received.values()) == 1
    assert sum(r.sent for r in reports) == 500
    assert all(r.sent > 0 for r in reports), [r.sent for r in reports]
    with seed.reader() as session:
        assert session.exec(select(func.count()).where(Outbox.status == "sent")).one() == 500


def test_erasure_cancels_queued_mail_and_blanks_it(db: Database) -> None:
    with db.transaction() as session:
        person = factories.person(session, "cancel@example.com")
        outbox.queue(session, "welcome", person=person, context={})
        people.erase(session, person, channel="email_link", actor="self")
    [row] = _rows(db)
    assert row.status == "cancelled" and row.to_address is None and row.body_text is None
    with db.reader() as session:
        assert session.get(Person, row.person_id).email is None


@pytest.mark.parametrize("erased", ["second", "first"])
def test_mail_of_someone_erased_while_their_batch_is_being_sent_is_not_sent(
    configured: Open, smtp: SmtpServer, smtp_settings: dict, erased: str
) -> None:
    """The batch is claimed before the relay answers and sent one by one; erasure after
    the claim, whether before the first send or part-way through, cancels the message."""
    db = configured(**smtp_settings)
    with db.transaction() as session:
        everyone = {
            name: factories.person(session, f"{name}@example.com") for name in ("first", "second")
        }
        for person in everyone.values():
            outbox.queue(session, "welcome", person=person, context={"name": "Sam"})
        erased_id = everyone[erased].id

    def erase() -> None:
        with db.transaction() as session:
            people.erase(session, session.get(Person, erased_id), channel="web_form", actor="self")

    class ErasingRelay:
        def __init__(self) -> None:
            self.backend = SmtpBackend("127.0.0.1", smtp.port, timeout=5)

        @contextlib.contextmanager
        def connect(self) -> Iterator[ErasingRelay]:
            with self.backend.connect() as self.connection:
                if erased == "first":
                    erase()
                yield self

        def send(self, message: Message, *, reference: str) -> None:
            self.connection.send(message, reference=reference)
            if erased == "second" and message["To"] == "first@example.com":
                erase()

    report = OutboxWorker(db, ErasingRelay()).run_once()
    kept = "first" if erased == "second" else "second"
    assert (report.sent, report.lost, report.errors) == (1, 1, [])
    assert smtp.sink.by_recipient(f"{erased}@example.com") == []
    assert len(smtp.sink.by_recipient(f"{kept}@example.com")) == 1
    rows = {row.person_id: row for row in _rows(db)}
    assert (rows[erased_id].status, rows[erased_id].to_address, rows[erased_id].sent_at) == (
        "cancelled",
        None,
        None,
    )


def test_a_message_that_makes_the_relay_hang_up_does_not_hold_up_the_rest(
    configured: Open, smtp: SmtpServer, smtp_settings: dict
) -> None:
    """A message a relay's filter drops the connection on would otherwise be first in line
    for ever, with its attempt given back each time, and no mail would go."""
    db = configured(**smtp_settings)
    real = smtp.sink.handle_DATA

    async def handle_DATA(server, session, envelope):  # type: ignore[no-untyped-def]
        if "poison@example.com" in envelope.rcpt_tos:
            server.transport.close()
            return "421 closing"
        return await real(server, session, envelope)

    smtp.sink.handle_DATA = handle_DATA  # type: ignore[method-assign]
    with db.transaction() as session:
        for address in ("poison@example.com", "ok0@example.com", "ok1@example.com"):
            person = factories.person(session, address)
            outbox.queue(session, "welcome", person=person, context={"name": "P"})
    start = utcnow()
    for step in range(60):
        with time_machine.travel(start + timedelta(minutes=30 * step), tick=True):
            OutboxWorker(db).run_once()
    rows = [(r.status, r.attempts) for r in _rows(db)]
    assert rows == [("failed", outbox.MAX_ATTEMPTS), ("sent", 1), ("sent", 1)]
    assert len(smtp.sink.by_recipient("ok0@example.com")) == 1
