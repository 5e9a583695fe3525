"""The jobs the scheduler runs. Each calls services in its own transactions, is safe to run
twice, and leaves a ``JobRun`` row saying when it ran, where, and what it did."""

from __future__ import annotations

import json
import logging
import os
import socket
from collections.abc import Callable
from dataclasses import asdict
from typing import Any

from consent.db import Database
from consent.models import JobRun
from consent.services import mailchimp as mailchimp_queue
from consent.services import reminders, retention
from consent.timeutil import utcnow
from consent.validation import without_addresses

log = logging.getLogger(__name__)
RUNNER = f"{socket.gethostname()}:{os.getpid()}"


class Runtime:
    """What scheduled jobs run against; set once by the process that schedules them.

    APScheduler stores jobs by reference (``consent.jobs:run``), so the database cannot be
    an argument: it lives here instead.
    """

    database: Database | None = None


def run(name: str) -> dict[str, Any]:
    """The scheduler's entry point for every job: look it up, run it, record the run."""
    database = Runtime.database
    if database is None:
        raise RuntimeError("No database: the scheduler process did not set consent.jobs.Runtime.")
    return record(database, name, JOBS[name])


def record(
    database: Database, name: str, job: Callable[[Database], dict[str, Any]]
) -> dict[str, Any]:
    with database.transaction() as session:
        entry = JobRun(job=name, runner=RUNNER[:100], started_at=utcnow())
        session.add(entry)
        session.flush()
        run_id = entry.id
    status, detail = "ok", {}
    try:
        detail = job(database)
        return detail
    except Exception as exc:
        status, detail = (
            "error",
            {"error": without_addresses(f"{type(exc).__name__}: {exc}")[:1000]},
        )
        log.exception("job %s failed", name)
        raise
    finally:
        with database.transaction() as session:
            entry = session.get(JobRun, run_id)
            assert entry is not None
            entry.finished_at, entry.status = utcnow(), status
            entry.detail = without_addresses(json.dumps(detail, default=str))[:4000]


def deliver_mail(database: Database) -> dict[str, Any]:
    """The outbox's safety net: whatever the web processes' wake-ups missed."""
    from mailers.outbox import OutboxWorker

    return asdict(OutboxWorker(database).run_once())


def push_mailchimp(database: Database) -> dict[str, Any]:
    with database.reader() as session:
        if not mailchimp_queue.enabled(session):
            return {"skipped": "no Mailchimp audience configured"}
    from mailers.mailchimp import Pusher

    return asdict(Pusher(database).push())


def reconcile_mailchimp(database: Database) -> dict[str, Any]:
    with database.reader() as session:
        if not mailchimp_queue.enabled(session):
            return {"skipped": "no Mailchimp audience configured"}
    from mailers.mailchimp import reconcile

    return asdict(reconcile(database))


def run_retention(database: Database) -> dict[str, Any]:
    report = retention.sweep(database)
    return {"removed": report.as_dict(), "seconds": round(report.seconds, 3)}


def send_reminders(database: Database) -> dict[str, Any]:
    with database.transaction() as session:
        renewals = reminders.renewal_reminders(session)
    with database.transaction() as session:
        workshops = reminders.workshop_reminders(session)
    with database.transaction() as session:
        evaluations = reminders.evaluation_requests(session)
    return {"renewals": renewals, "workshop_reminders": workshops, "evaluations": evaluations}


def verify_ledger(database: Database) -> dict[str, Any]:
    """Walk every chain once a day, so the DPO sees that the records are intact."""
    from consent.services import audit, ledger

    with database.reader() as session:
        chains = ledger.verify(session)
        log_chain = audit.verify(session)
    return {
        "ok": chains.ok and log_chain.ok,
        "events": chains.events,
        "audit_events": log_chain.events,
        "problems": (chains.problems + log_chain.problems)[:20],
    }


def refresh_statistics(database: Database) -> dict[str, Any]:
    """Keep SQLite's query planner statistics current, so it picks the right index.

    Without them SQLite can choose a poor index for the sweep's queries on a large
    database. PostgreSQL's autovacuum already keeps its statistics up to date.
    """
    if database.dialect != "sqlite":
        return {"skipped": "PostgreSQL keeps its own statistics"}
    with database.engine.connect() as conn:
        conn.exec_driver_sql("PRAGMA analysis_limit=1000")
        conn.exec_driver_sql("ANALYZE")
        conn.commit()
        tables = conn.exec_driver_sql("SELECT count(DISTINCT tbl) FROM sqlite_stat1").scalar()
    return {"tables": tables}


#: name -> (function, seconds between runs)
JOBS: dict[str, Callable[[Database], dict[str, Any]]] = {
    "deliver_mail": deliver_mail,
    "push_mailchimp": push_mailchimp,
    "reconcile_mailchimp": reconcile_mailchimp,
    "retention": run_retention,
    "reminders": send_reminders,
    "verify_ledger": verify_ledger,
    "refresh_statistics": refresh_statistics,
}
INTERVALS: dict[str, int] = {
    "deliver_mail": 60,
    "push_mailchimp": 300,
    "reconcile_mailchimp": 3600,
    "retention": 3600,
    "reminders": 3600,
    "verify_ledger": 86400,
    "refresh_statistics": 86400,
}
