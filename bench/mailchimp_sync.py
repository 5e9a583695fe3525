"""Mailchimp sync benchmark: 50,000 newsletter changes pushed to the fake Mailchimp
through the official client. Prints HTTP requests made, by kind, and wall time.

    .venv/bin/python bench/mailchimp_sync.py
    .venv/bin/python bench/mailchimp_sync.py --changes 5000
"""

from __future__ import annotations

import argparse
import sys
import tempfile
import time
from collections import Counter
from pathlib import Path

from cryptography.fernet import Fernet
from sqlalchemy import insert

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from consent.config import load_settings
from consent.db import Database
from consent.models import MailchimpChange
from consent.schema import upgrade
from consent.services.mailchimp import subscriber_hash
from consent.timeutil import utcnow
from mailers.mailchimp import BATCH_SIZE, Pusher
from tests.fake_mailchimp import FakeMailchimp


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--changes", type=int, default=50_000)
    parser.add_argument("--database-url", default="")
    parser.add_argument("--poll-interval", type=float, default=0.2)
    args = parser.parse_args()
    fake = FakeMailchimp(polls_before_finished=2).start()
    with tempfile.TemporaryDirectory() as scratch:
        url = args.database_url or f"sqlite:///{Path(scratch) / 'sync.db'}"
        settings = load_settings(
            environ={"CONSENT_ENV": "test"},
            overrides={
                "database_url": url,
                "instance_path": Path(scratch),
                "secret_keys": ("bench-secret-key-" + "s" * 40,),
                "field_keys": (Fernet.generate_key().decode(),),
                "hash_key": "h" * 44,
                "mailchimp_api_key": fake.api_key,
                "mailchimp_list_id": fake.list_id,
                "mailchimp_api_url": fake.url,
            },
        )
        upgrade(settings)
        db = Database(settings)
        now = utcnow()
        rows = [
            {
                "action": "subscribe",
                "subscriber_hash": subscriber_hash(f"r{i}@example.com"),
                "email": f"r{i}@example.com",
                "name": None,
                "opt_in_at": now,
                "status": "pending",
                "attempts": 0,
                "next_attempt_at": now,
                "created_at": now,
            }
            for i in range(args.changes)
        ]
        with db.engine.begin() as conn:
            conn.execute(insert(MailchimpChange), rows)
        start = time.perf_counter()
        report = Pusher(db, poll_interval=args.poll_interval).push()
        seconds = time.perf_counter() - start
        db.dispose()
    fake.stop()
    kinds = Counter()
    for method, path in fake.requests:
        if path == "/3.0/batches":
            kinds["start a batch"] += 1
        elif path.startswith("/3.0/batches/"):
            kinds["poll a batch"] += 1
        elif path.startswith("/results/"):
            kinds["download results"] += 1
        else:
            kinds[f"{method} member"] += 1
    print(
        f"{report.pushed:,} of {args.changes:,} changes pushed in {seconds:.1f} s "
        f"({report.pushed / seconds:,.0f} changes/s), {report.failed} failed"
    )
    print(
        f"HTTP requests: {len(fake.requests)} in all "
        f"(limit for one batch per {BATCH_SIZE} changes: {-(-args.changes // BATCH_SIZE)} "
        "batches, plus polling and results)"
    )
    for kind, count in sorted(kinds.items()):
        print(f"  {kind:18} {count}")
    print(f"members in the fake audience: {len(fake.members):,}")


if __name__ == "__main__":
    main()
