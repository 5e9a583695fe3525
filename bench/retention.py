"""Retention benchmark: a million panel members, a tenth of them past two years.

Prints the sweep's wall time beside raw SQL making the same row changes in one run, the
sweep's peak memory, and the time of a sweep that finds nothing to do.

    .venv/bin/python bench/retention.py                  # SQLite; builds the data once (~10 min)
    .venv/bin/python bench/retention.py --reuse
    .venv/bin/python bench/retention.py --people 100000  # a quicker run
"""

from __future__ import annotations

import argparse
import random
import secrets
import shutil
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select, text

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import FIELD_KEY, RESULTS, run_cli, settings_for
from consent.crypto import FieldCipher
from consent.db import Database, make_engine
from consent.models import (
    ConsentEvent,
    ConsentState,
    Notice,
    Panel,
    PanelMembership,
    PanelProfile,
    Person,
    Purpose,
)
from consent.models.people import name_key
from consent.schema import upgrade
from consent.services import retention
from consent.services.ledger import GENESIS, event_hash

NOW = datetime.now(UTC)
BATCH = 20_000


def generate(url: str, people: int, expired_share: float) -> None:
    """Members with one chained panel-contact event, state, membership and profile each."""
    upgrade(settings_for(url))
    engine = make_engine(url, pool=False)
    rng = random.Random(3)
    cipher = FieldCipher([FIELD_KEY])
    special = cipher.encrypt_json({"ethnicity": "Prefer not to say", "needs": "None"})
    with engine.begin() as conn:
        purpose_id, key, notice_id, notice_hash, statement = conn.execute(
            select(Purpose.id, Purpose.key, Notice.id, Notice.text_hash, Notice.statement)
            .join(Notice, Notice.purpose_id == Purpose.id)
            .where(Purpose.key == "panel_contact")
        ).one()
        panel_id = conn.execute(
            insert(Panel)
            .values(
                name="Bench panel", family_hub="Hub", description="d", status="open", created_at=NOW
            )
            .returning(Panel.id)
        ).scalar_one()
    done = 0
    while done < people:
        size = min(BATCH, people - done)
        person_rows, event_rows, state_rows, member_rows, profile_rows = [], [], [], [], []
        for offset in range(size):
            pid = done + offset + 1
            expired = rng.random() < expired_share
            given = NOW - timedelta(days=rng.randint(731, 800) if expired else rng.randint(1, 700))
            person_rows.append(
                {
                    "id": pid,
                    "public_id": secrets.token_urlsafe(16),
                    "email": f"member{pid}@example.com",
                    "name": f"Member {pid}",
                    "name_key": name_key(f"Member {pid}"),
                    "postcode": "NE1 4ST",
                    "token_version": 1,
                    "created_at": given,
                    "updated_at": given,
                }
            )
            digest = event_hash(
                person_id=pid,
                seq=1,
                purpose_key=key,
                notice_hash=notice_hash,
                action="given",
                channel="web_form",
                actor="self",
                occurred_at=given,
                wording=statement,
                note_digest=None,
                prev_hash=GENESIS,
            )
            event_rows.append(
                {
                    "id": pid,
                    "person_id": pid,
                    "seq": 1,
                    "purpose_id": purpose_id,
                    "notice_id": notice_id,
                    "action": "given",
                    "channel": "web_form",
                    "actor": "self",
                    "occurred_at": given,
                    "wording": statement,
                    "prev_hash": GENESIS,
                    "hash": digest,
                }
            )
            expires = given + timedelta(days=730)
            state_rows.append(
                {
                    "person_id": pid,
                    "purpose_id": purpose_id,
                    "status": "given",
                    "notice_id": notice_id,
                    "channel": "web_form",
                    "given_at": given,
                    "changed_at": given,
                    "expires_at": expires,
                    "last_event_id": pid,
                }
            )
            member_rows.append(
                {
                    "id": pid,
                    "panel_id": panel_id,
                    "person_id": pid,
                    "joined_at": given,
                    "expires_at": expires,
                }
            )
            profile_rows.append(
                {
                    "membership_id": pid,
                    "postcode": "NE1 4ST",
                    "age_band": "25 to 34",
                    "children_count": 2,
                    "special_category": special,
                    "created_at": given,
                    "updated_at": given,
                }
            )
        with engine.begin() as conn:
            conn.execute(insert(Person), person_rows)
            conn.execute(insert(ConsentEvent), event_rows)
            conn.execute(insert(ConsentState), state_rows)
            conn.execute(insert(PanelMembership), member_rows)
            conn.execute(insert(PanelProfile), profile_rows)
        done += size
        print(f"  {done:,} members", end="\r", flush=True)
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()
        raw.execute("ANALYZE")
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw.close()
    engine.dispose()
    print()


RAW = [
    "DELETE FROM panel_profile WHERE membership_id IN (SELECT id FROM panel_membership "
    "WHERE left_at IS NULL AND expires_at <= :now)",
    "UPDATE panel_membership SET left_at = :now, left_reason = 'expired', data_destroyed_at "
    "= :now WHERE left_at IS NULL AND expires_at <= :now",
    "UPDATE person SET email = NULL, name = NULL, phone = NULL, postcode = NULL, erased_at = "
    ":now, token_version = token_version + 1 WHERE id IN (SELECT person_id FROM consent_state "
    "WHERE status = 'given' AND expires_at <= :now)",
    "UPDATE consent_state SET status = 'expired', changed_at = :now, expires_at = NULL "
    "WHERE status = 'given' AND expires_at <= :now",
]


def raw_sql(url: str) -> float:
    """The same row changes as plain statements in one transaction (no ledger events)."""
    engine = make_engine(url, pool=False)
    stamp = NOW.replace(tzinfo=None) if engine.dialect.name == "sqlite" else NOW
    start = time.perf_counter()
    with engine.begin() as conn:
        for statement in RAW:
            conn.execute(text(statement), {"now": stamp})
    seconds = time.perf_counter() - start
    engine.dispose()
    return seconds


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--expired", type=float, default=0.10)
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    source = RESULTS / "retention-source.db"
    if not (args.reuse and source.exists()):
        for leftover in RESULTS.glob("retention-*"):
            leftover.unlink()
        print(f"generating {args.people:,} panel members, {args.expired:.0%} past two years")
        generate(f"sqlite:///{source}", args.people, args.expired)
    copies = {}
    for name in ("sweep", "raw"):
        copies[name] = RESULTS / f"retention-{name}.db"
        shutil.copyfile(source, copies[name])
    with make_engine(f"sqlite:///{source}", pool=False).connect() as conn:
        due = conn.execute(
            select(func.count())
            .select_from(ConsentState)
            .where(ConsentState.status == "given", ConsentState.expires_at <= NOW)
        ).scalar()
        conn.rollback()
    print(f"{due:,} members past two years")

    raw_seconds = raw_sql(f"sqlite:///{copies['raw']}")
    seconds, peak_mb, output = run_cli(f"sqlite:///{copies['sweep']}", "retention", "run")
    database = Database(settings_for(f"sqlite:///{copies['sweep']}"))
    start = time.perf_counter()
    empty = retention.sweep(database)
    idle = time.perf_counter() - start
    database.dispose()

    print(
        "\nretention sweep over the expired members (ledger events, profiles destroyed, "
        "memberships ended, people erased)"
    )
    print(
        f"  consent retention run (whole process)   {seconds:7.1f} s   peak memory {peak_mb:.0f} MB"
    )
    print(f"  raw SQL, the same rows, one transaction {raw_seconds:7.1f} s")
    print(f"  sweep / raw                             {seconds / raw_seconds:7.1f}x")
    print(f"  a sweep that finds nothing              {idle:7.3f} s   removed {empty.as_dict()}")
    for line in output.splitlines()[-3:]:
        print(f"  | {line}")


if __name__ == "__main__":
    main()
