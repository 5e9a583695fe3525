"""The outbox worker: claims due messages, sends them, and records what happened.

Each message is marked sent in its own transaction right after the relay accepts it, so
a crash can repeat at most the one message in flight. Once half the lease has passed, the
worker renews its claims on the rest of the batch, and skips any it has lost: a worker
that stalled past the lease may have had them handed to another, which sends them instead.

A web process keeps one worker thread that sleeps until a commit that queued mail wakes
it; the scheduler runs the same worker every minute as a safety net.
"""

from __future__ import annotations

import logging
import os
import socket
import threading
from dataclasses import dataclass, field
from datetime import timedelta

from sqlmodel import Session

from consent.db import Database
from consent.services import link_requests, outbox
from consent.timeutil import utcnow
from mailers import message as messages
from mailers.backends import (
    Backend,
    PermanentFailure,
    RelayUnavailable,
    TemporaryFailure,
    from_settings,
)

#: A batch renews its claims once half the lease has passed, well before they run out.
RENEW_AFTER = outbox.LEASE / 2

log = logging.getLogger(__name__)


@dataclass
class DeliveryReport:
    """What one run did; ``lost`` counts messages another worker took over mid-batch."""

    sent: int = 0
    retrying: int = 0
    failed: int = 0
    released: int = 0
    requeued: int = 0
    lost: int = 0
    errors: list[str] = field(default_factory=list)


class OutboxWorker:
    """Delivers the mail queue through one backend."""

    def __init__(
        self,
        database: Database,
        backend: Backend | None = None,
        *,
        batch_size: int = 100,
        name: str | None = None,
    ) -> None:
        self.database = database
        self.backend = backend or from_settings(database.settings)
        self.batch_size = batch_size
        self.name = name or f"{socket.gethostname()}:{os.getpid()}:{id(self):x}"
        self._wake = threading.Event()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._lock = threading.Lock()

    def run_once(self, max_batches: int | None = None) -> DeliveryReport:
        """Send everything due now, batch by batch; stops early if the relay is down."""
        report = DeliveryReport()
        try:
            while True:
                with self.database.transaction() as session:
                    if not link_requests.answer(session):
                        break
        except Exception:
            log.exception("answering requests for a new link failed; the mail goes on")
        with self.database.transaction() as session:
            stale = outbox.requeue_stale(session)
        report.requeued, report.failed = stale.requeued, stale.failed
        batches = 0
        while max_batches is None or batches < max_batches:
            with self.database.transaction() as session:
                ids = outbox.claim(session, self.name, self.batch_size)
            if not ids:
                break
            batches += 1
            if not self._send_batch(ids, report):
                break
        return report

    def _send_batch(self, ids: list[int], report: DeliveryReport) -> bool:
        """Send a claimed batch, renewing the claims still to send whenever half the lease
        has passed, and skipping any this worker no longer holds.

        Renewing only then, and all at once, costs a batch that sends quickly nothing: each
        renewal rewrites the message rows, bodies and all. Whether the next message is
        still held (erasure cancels it) is asked in the transaction that records the one
        before, not a transaction of its own.
        """
        pending = list(ids)
        held, renewed_at = set(ids), utcnow()
        in_flight: int | None = None
        try:
            with self.backend.connect() as connection:
                with self.database.reader() as session:
                    rows = {row.id: row for row in outbox.load(session, ids, worker=self.name)}
                cleared = next(iter(rows), None)
                for position, outbox_id in enumerate(ids):
                    following = ids[position + 1] if position + 1 < len(ids) else None
                    row = rows.pop(outbox_id, None)
                    if utcnow() - renewed_at >= RENEW_AFTER:
                        renewed_at = utcnow()
                        with self.database.transaction() as session:
                            held = outbox.renew(
                                session,
                                [i for i in pending if i in held],
                                worker=self.name,
                                now=renewed_at,
                            )
                    if (
                        row is None
                        or outbox_id not in held
                        or (outbox_id != cleared and not self._still_held(outbox_id))
                    ):
                        pending.remove(outbox_id)
                        report.lost += 1
                        continue
                    try:
                        mime = messages.build(row, self.database.settings)
                        in_flight = outbox_id
                        connection.send(mime, reference=str(outbox_id))
                        in_flight = None
                    except (TemporaryFailure, PermanentFailure, ValueError) as exc:
                        permanent = not isinstance(exc, TemporaryFailure)
                        with self.database.transaction() as session:
                            outcome = outbox.mark_failed_attempt(
                                session,
                                outbox_id,
                                str(exc),
                                permanent=permanent,
                                worker=self.name,
                            )
                            cleared = self._clear(session, following)
                        pending.remove(outbox_id)
                        report.errors.append(f"{outbox_id}: {exc}")
                        if outcome == "failed":
                            report.failed += 1
                        elif outcome == "retry":
                            report.retrying += 1
                        else:
                            report.lost += 1
                        continue
                    with self.database.transaction() as session:
                        outbox.mark_sent(session, outbox_id, worker=self.name)
                        cleared = self._clear(session, following)
                    pending.remove(outbox_id)
                    report.sent += 1
        except RelayUnavailable as exc:
            log.warning("mail relay unavailable; %d message(s) wait: %s", len(pending), exc)
            with self.database.transaction() as session:
                if in_flight is not None:
                    pending.remove(in_flight)
                    outcome = outbox.mark_failed_attempt(
                        session, in_flight, str(exc), permanent=False, worker=self.name
                    )
                    report.retrying += outcome == "retry"
                    report.failed += outcome == "failed"
                outbox.release(session, pending, str(exc), worker=self.name)
            report.released += len(pending)
            report.errors.append(str(exc))
            return False
        return True

    def _clear(self, session: Session, outbox_id: int | None) -> int | None:
        """``outbox_id`` if this worker may still send it, as of this transaction."""
        return outbox_id if outbox.still_held(session, outbox_id, worker=self.name) else None

    def _still_held(self, outbox_id: int) -> bool:
        """For a message no earlier transaction of the batch has cleared."""
        with self.database.reader() as session:
            return outbox.still_held(session, outbox_id, worker=self.name)

    def purge(self, keep: timedelta | None = None) -> int:
        """Blank bodies of messages sent longer ago than the configured keep time."""
        keep = keep or timedelta(days=self.database.settings.mail_body_keep_days)
        total = 0
        while True:
            with self.database.transaction() as session:
                done = outbox.purge_bodies(session, keep=keep, now=utcnow())
            total += done
            if not done:
                return total

    # ---- waking from the web process ---------------------------------------------------

    def wake(self) -> None:
        """Ask the background thread to deliver now; starts it on first use."""
        with self._lock:
            if self._thread is None or not self._thread.is_alive():
                self._stop.clear()
                self._thread = threading.Thread(
                    target=self._loop, name="outbox-worker", daemon=True
                )
                self._thread.start()
        self._wake.set()

    def _loop(self) -> None:
        while not self._stop.is_set():
            self._wake.wait()
            self._wake.clear()
            if self._stop.is_set():
                return
            try:
                self.run_once()
            except Exception:
                log.exception("outbox delivery failed; the scheduler will try again")

    def stop(self, timeout: float = 5) -> None:
        self._stop.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join(timeout)
