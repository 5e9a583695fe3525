"""The background process: jobs in the database's job store, one leader, clean stops."""

from __future__ import annotations

import itertools
import signal
import subprocess
import sys
import time
from collections import defaultdict
from dataclasses import replace
from datetime import timedelta
from pathlib import Path

from sqlalchemy import select

from consent import scheduling
from consent.config import REPO_ROOT, Settings
from consent.db import Database
from consent.models import JobRun
from consent.timeutil import utcnow
from tests.helpers import child_environment

JOB_NAMES = {
    "deliver_mail",
    "push_mailchimp",
    "reconcile_mailchimp",
    "retention",
    "reminders",
    "verify_ledger",
    "refresh_statistics",
}


def _runs(db: Database) -> list[JobRun]:
    with db.reader() as session:
        return list(session.execute(select(JobRun).order_by(JobRun.id)).scalars())


def _wait(predicate, timeout: float = 30.0, step: float = 0.2) -> bool:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if predicate():
            return True
        time.sleep(step)
    return False


def test_every_job_runs_and_leaves_a_record(settings: Settings) -> None:
    db = Database(replace(settings, scheduler_tick=1))
    scheduler = scheduling.start_scheduler(db)
    try:
        assert _wait(lambda: {r.job for r in _runs(db) if r.status == "ok"} >= JOB_NAMES)
    finally:
        scheduler.shutdown(wait=True)
        db.dispose()
    runs = _runs(db)
    assert all(r.finished_at is not None for r in runs if r.status == "ok")
    assert not [r for r in runs if r.status == "error"], [r.detail for r in runs]


def test_runs_missed_while_down_are_caught_up_once(settings: Settings) -> None:
    db = Database(replace(settings, scheduler_tick=3600))
    scheduler = scheduling.start_scheduler(db)
    scheduler.shutdown(wait=True)
    scheduler = scheduling.start_scheduler(db)
    try:
        scheduler.pause()
        scheduler.modify_job("retention", next_run_time=utcnow() - timedelta(hours=5))
        scheduler.resume()
        assert _wait(lambda: any(r.job == "retention" for r in _runs(db)), timeout=15)
        time.sleep(3)
    finally:
        scheduler.shutdown(wait=True)
        db.dispose()
    assert [r.job for r in _runs(db)] == ["retention"], "five missed hours, one run"


def _start(settings: Settings, log: Path) -> subprocess.Popen[bytes]:
    env = child_environment(
        settings,
        CONSENT_SCHEDULER_TICK="2",
        CONSENT_SCHEDULER_POLL="1",
        CONSENT_MAIL_BACKEND="file",
    )
    return subprocess.Popen(
        [sys.executable, str(REPO_ROOT / "scheduler.py")],
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )


def test_two_processes_one_leader_and_the_other_takes_over(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    first = _start(settings, tmp_path / "first.log")
    second = _start(settings, tmp_path / "second.log")
    processes = {str(first.pid): first, str(second.pid): second}
    try:
        assert _wait(lambda: len(_runs(db)) >= 12, timeout=60)
        runs = _runs(db)
        runners = {r.runner.rsplit(":", 1)[1] for r in runs}
        assert len(runners) == 1, "only the leader runs jobs"
        leader_pid = runners.pop()
        ticks: dict[str, list[float]] = defaultdict(list)
        for run in runs:
            ticks[run.job].append(run.started_at.timestamp())
        for job, starts in ticks.items():
            gaps = [b - a for a, b in itertools.pairwise(starts)]
            assert all(gap > 1.0 for gap in gaps), (job, gaps)

        leader = processes.pop(leader_pid)
        follower_pid, follower = processes.popitem()
        leader.send_signal(signal.SIGKILL)
        leader.wait()
        killed_at = utcnow()
        assert _wait(
            lambda: any(
                r.runner.endswith(f":{follower_pid}") and r.started_at > killed_at
                for r in _runs(db)
            ),
            timeout=60,
        ), (tmp_path / "second.log").read_text() + (tmp_path / "first.log").read_text()

        follower.send_signal(signal.SIGTERM)
        assert follower.wait(timeout=30) == 0
        logs = (tmp_path / "first.log").read_text() + (tmp_path / "second.log").read_text()
        assert "stopped" in logs
    finally:
        for process in (first, second):
            if process.poll() is None:
                process.kill()
                process.wait()


def test_the_statistics_job_analyses_sqlite_and_leaves_postgresql_alone(
    db: Database, backend: str
) -> None:
    from consent import jobs
    from tests import factories

    with db.transaction() as session:
        for number in range(30):
            factories.consenting(session, "newsletter", email=f"s{number}@example.com")
    detail = jobs.refresh_statistics(db)
    if backend != "sqlite":
        assert "skipped" in detail
        return
    with db.engine.connect() as conn:
        analysed = {row[0] for row in conn.exec_driver_sql("SELECT DISTINCT tbl FROM sqlite_stat1")}
    assert {"person", "consent_state", "consent_event"} <= analysed
    assert detail == {"tables": len(analysed)}
