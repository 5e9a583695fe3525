"""Outbox benchmark: the worker delivering 10,000 queued messages to a local SMTP server,
beside a bare smtplib loop sending the same prepared messages over one connection.

    .venv/bin/python bench/outbox.py
    .venv/bin/python bench/outbox.py --messages 2000 --database-url postgresql+psycopg://...

The SMTP server (aiosmtpd's Sink handler) runs as a separate process, so it does not
share the interpreter with what is measured. Prints figures; asserts nothing.
"""

from __future__ import annotations

import argparse
import os
import resource
import smtplib
import socket
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import free_port
from consent.config import load_settings
from consent.db import Database, make_engine
from consent.models import Outbox
from consent.schema import upgrade
from consent.services import outbox, people
from mailers import message as messages
from mailers.backends import SmtpBackend
from mailers.outbox import OutboxWorker


def start_smtp(port: int) -> subprocess.Popen[bytes]:
    server = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "aiosmtpd",
            "-n",
            "-l",
            f"127.0.0.1:{port}",
            "-c",
            "aiosmtpd.handlers.Sink",
        ],
    )
    deadline = time.monotonic() + 10
    while time.monotonic() < deadline:
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return server
        except OSError:
            time.sleep(0.05)
    server.kill()
    raise RuntimeError("the SMTP server did not start")


def rss_mb() -> float:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * os.sysconf("SC_PAGE_SIZE") / 1024 / 1024


class RssSampler(threading.Thread):
    def __init__(self) -> None:
        super().__init__(daemon=True)
        self.peak = 0.0
        self.stop = threading.Event()

    def run(self) -> None:
        while not self.stop.is_set():
            self.peak = max(self.peak, rss_mb())
            time.sleep(0.05)


def prepare(url: str, instance: Path, count: int) -> Database:
    settings = load_settings(
        environ={"CONSENT_ENV": "test"},
        overrides={
            "database_url": url,
            "instance_path": instance,
            "base_url": "https://bench.test",
            "secret_keys": ("bench-secret-key-" + "s" * 40,),
            "field_keys": (Fernet.generate_key().decode(),),
            "hash_key": "h" * 44,
            "mail_backend": "smtp",
            "mail_wake": False,
        },
    )
    if not url.startswith("sqlite"):
        engine = make_engine(url, pool=False)
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    upgrade(settings)
    db = Database(settings)
    done = 0
    while done < count:
        with db.transaction() as session:
            for _ in range(min(1000, count - done)):
                person = people.find_or_create(session, f"reader{done}@example.com")
                outbox.queue(session, "welcome", person=person, context={"name": f"Reader {done}"})
                done += 1
    return db


def bare_smtplib(db: Database, port: int) -> float:
    """The floor: already-built messages, one connection, nothing recorded."""
    with db.reader() as session:
        rows = session.execute(select(Outbox).order_by(Outbox.id)).scalars().all()
        prepared = [messages.build(row, db.settings) for row in rows]
    start = time.perf_counter()
    with smtplib.SMTP("127.0.0.1", port, timeout=30) as client:
        for message in prepared:
            client.send_message(message)
    return len(prepared) / (time.perf_counter() - start)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--messages", type=int, default=10_000)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--batch-size", type=int, default=100)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as scratch:
        instance = Path(scratch)
        url = args.database_url or f"sqlite:///{instance / 'outbox.db'}"
        print(f"queueing {args.messages:,} messages ...", flush=True)
        db = prepare(url, instance, args.messages)
        port = free_port()
        server = start_smtp(port)
        try:
            before = rss_mb()
            sampler = RssSampler()
            sampler.start()
            worker = OutboxWorker(
                db, SmtpBackend("127.0.0.1", port, timeout=30), batch_size=args.batch_size
            )
            start = time.perf_counter()
            report = worker.run_once()
            seconds = time.perf_counter() - start
            sampler.stop.set()
            sampler.join()
            floor = bare_smtplib(db, port)
        finally:
            server.terminate()
            server.wait()
        rate = report.sent / seconds
        print(f"\n{report.sent:,} messages sent by the outbox worker in {seconds:.1f} s")
        print(f"  outbox worker (claim, build, send, mark sent)  {rate:8.0f} messages/s")
        print(f"  bare smtplib, prepared messages, one connection {floor:7.0f} messages/s")
        print(f"  worker / bare                                   {rate / floor:7.0%}")
        print(f"  memory: {before:.0f} MB before sending, {sampler.peak:.0f} MB peak while sending")
        print(
            f"  process peak RSS {resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024:.0f} MB"
        )
        db.dispose()


if __name__ == "__main__":
    main()
