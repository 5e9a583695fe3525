"""The background process: APScheduler 3 with its job store in the application database.

Several processes may run (for resilience); exactly one is the leader and runs jobs. On
PostgreSQL leadership is a session advisory lock, held for as long as the leader's
connection lives; on SQLite it is a file lock beside the database. A follower tries for
the lock every ``scheduler_poll`` seconds, so if the leader dies another takes over
within a minute. Jobs coalesce and have no misfire limit: a process that was down runs
each missed job once when it comes back, not once per missed tick.
"""

from __future__ import annotations

import fcntl
import logging
import signal
import threading
from pathlib import Path
from types import FrameType
from typing import Any, Protocol

from apscheduler.jobstores.sqlalchemy import SQLAlchemyJobStore
from apscheduler.schedulers.background import BackgroundScheduler
from apscheduler.triggers.interval import IntervalTrigger
from flask import Flask
from sqlalchemy import text
from sqlalchemy.engine import Connection, make_url

from consent import jobs, log_privacy
from consent.config import Settings
from consent.db import Database, make_engine

log = logging.getLogger("consent.scheduler")
LOCK_KEY = 0x636F6E7363686564  # "conssched"
JOB_STORE_TABLE = "apscheduler_jobs"


class Leadership(Protocol):
    def try_acquire(self) -> bool: ...
    def alive(self) -> bool: ...
    def release(self) -> None: ...


class PostgresLeadership:
    """A session advisory lock on a connection kept open for as long as we lead."""

    def __init__(self, url: str) -> None:
        self.engine = make_engine(url, pool=False)
        self.connection: Connection | None = None

    def try_acquire(self) -> bool:
        try:
            if self.connection is None:
                self.connection = self.engine.connect().execution_options(
                    isolation_level="AUTOCOMMIT"
                )
            got = self.connection.execute(
                text("SELECT pg_try_advisory_lock(:key)"), {"key": LOCK_KEY}
            ).scalar()
            return bool(got)
        except Exception:
            log.warning("could not reach the database to take the scheduler lock", exc_info=True)
            self._drop()
            return False

    def alive(self) -> bool:
        if self.connection is None:
            return False
        try:
            self.connection.execute(text("SELECT 1"))
            return True
        except Exception:
            self._drop()
            return False

    def release(self) -> None:
        if self.connection is not None:
            try:
                self.connection.execute(text("SELECT pg_advisory_unlock(:key)"), {"key": LOCK_KEY})
            except Exception:
                log.debug("advisory unlock failed; closing the connection releases it")
        self._drop()
        self.engine.dispose()

    def _drop(self) -> None:
        if self.connection is not None:
            try:
                self.connection.close()
            except Exception:
                log.debug("closing the lock connection failed", exc_info=True)
        self.connection = None


class FileLeadership:
    """An exclusive lock on a file beside the SQLite database (one host, many processes)."""

    def __init__(self, path: Path) -> None:
        self.path = path
        self.handle: Any = None

    def try_acquire(self) -> bool:
        self.path.parent.mkdir(parents=True, exist_ok=True)
        handle = open(self.path, "a")  # noqa: SIM115 (held open while we lead)
        try:
            fcntl.flock(handle, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except OSError:
            handle.close()
            return False
        self.handle = handle
        return True

    def alive(self) -> bool:
        return self.handle is not None

    def release(self) -> None:
        if self.handle is not None:
            fcntl.flock(self.handle, fcntl.LOCK_UN)
            self.handle.close()
            self.handle = None


def leadership_for(settings: Settings) -> Leadership:
    url = make_url(settings.database_url)
    if url.get_backend_name() == "postgresql":
        return PostgresLeadership(settings.database_url)
    database = Path(url.database or settings.instance_path / "consent.db")
    return FileLeadership(database.with_name(database.name + ".scheduler.lock"))


def intervals(settings: Settings) -> dict[str, int]:
    if settings.scheduler_tick:
        return {name: settings.scheduler_tick for name in jobs.INTERVALS}
    return dict(jobs.INTERVALS)


def start_scheduler(database: Database) -> BackgroundScheduler:
    """Start the jobs, adding any the store lacks and keeping the schedule of the rest, so
    a missed run is caught up instead of pushed back by a restart."""
    jobs.Runtime.database = database
    scheduler = BackgroundScheduler(
        jobstores={
            "default": SQLAlchemyJobStore(engine=database.engine, tablename=JOB_STORE_TABLE)
        },
        job_defaults={"coalesce": True, "max_instances": 1, "misfire_grace_time": None},
        timezone="UTC",
    )
    scheduler.start(paused=True)
    for name, seconds in intervals(database.settings).items():
        trigger = IntervalTrigger(seconds=seconds, timezone="UTC")
        existing = scheduler.get_job(name)
        if existing is None:
            scheduler.add_job("consent.jobs:run", trigger=trigger, args=[name], id=name, name=name)
        elif getattr(existing.trigger, "interval", None) != trigger.interval:
            scheduler.reschedule_job(name, trigger=trigger)
    scheduler.resume()
    return scheduler


class Leader:
    """Try to lead; while leading, run the scheduler; stop cleanly when asked."""

    def __init__(self, database: Database) -> None:
        self.database = database
        self.leadership = leadership_for(database.settings)
        self.stop_event = threading.Event()
        self.scheduler: BackgroundScheduler | None = None

    def serve(self) -> None:
        poll = self.database.settings.scheduler_poll
        log.info("scheduler process %s waiting to lead", jobs.RUNNER)
        try:
            while not self.stop_event.is_set():
                if self.scheduler is None:
                    if self.leadership.try_acquire():
                        log.info("scheduler process %s is the leader", jobs.RUNNER)
                        self.scheduler = start_scheduler(self.database)
                elif not self.leadership.alive():
                    log.warning("lost the scheduler lock; standing down")
                    self.scheduler.shutdown(wait=False)
                    self.scheduler = None
                self.stop_event.wait(poll)
        finally:
            if self.scheduler is not None:
                self.scheduler.shutdown(wait=True)
                self.scheduler = None
            self.leadership.release()
            log.info("scheduler process %s stopped", jobs.RUNNER)

    def stop(self) -> None:
        self.stop_event.set()


def start_in_process(app: Flask) -> Leader:
    """For ``consent run`` with CONSENT_RUN_SCHEDULER on: the same jobs, in a thread."""
    leader = Leader(app.extensions["consent.db"])
    threading.Thread(target=leader.serve, name="scheduler", daemon=True).start()
    return leader


def main() -> None:
    """``python scheduler.py``: run until SIGTERM or Ctrl+C."""
    from consent import create_app
    from consent.config import ConfigError

    logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
    log_privacy.install()
    try:
        app = create_app()
    except ConfigError as exc:
        raise SystemExit(str(exc)) from exc
    leader = Leader(app.extensions["consent.db"])

    def _stop(signum: int, frame: FrameType | None) -> None:
        log.info("received signal %s; stopping", signum)
        leader.stop()

    signal.signal(signal.SIGTERM, _stop)
    signal.signal(signal.SIGINT, _stop)
    leader.serve()
