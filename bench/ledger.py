"""Ledger benchmark: write rate against raw SQL, state lookup time, and full-chain verify.

    .venv/bin/python bench/ledger.py                       # 1,000,000 people on SQLite
    .venv/bin/python bench/ledger.py --people 100000       # a quicker run
    .venv/bin/python bench/ledger.py --database-url postgresql+psycopg://postgres@127.0.0.1/test

Prints figures; asserts nothing. The population is kept between runs (``--reuse``).
"""

from __future__ import annotations

import argparse
import random
import statistics
import sys
import time
from pathlib import Path

from sqlalchemy import func, text
from sqlmodel import select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, run_cli, settings_for
from bench.population import generate
from consent.db import Database, make_engine
from consent.models import ConsentEvent, ConsentState, Notice, Person, Purpose
from consent.schema import upgrade
from consent.services import ledger
from consent.services.ledger import ACTION_STATUS, event_hash
from consent.services.reports import period_of
from consent.timeutil import utcnow


def prepare(url: str, people: int, per_person: float, reuse: bool) -> None:
    settings = settings_for(url)
    engine = make_engine(url, pool=False)
    existing = 0
    if reuse:
        try:
            with engine.connect() as conn:
                existing = conn.execute(select(func.count()).select_from(Person)).scalar_one()
        except Exception:
            existing = 0
    if existing >= people:
        print(f"reusing a population of {existing:,} people")
        engine.dispose()
        return
    if url.startswith("sqlite"):
        path = Path(engine.url.database)
        engine.dispose()
        for leftover in path.parent.glob(path.name + "*"):
            leftover.unlink()
    else:
        with engine.begin() as conn:
            conn.execute(text("DROP SCHEMA public CASCADE"))
            conn.execute(text("CREATE SCHEMA public"))
        engine.dispose()
    upgrade(settings)
    engine = make_engine(url, pool=False)
    print(f"generating {people:,} people with about {per_person} events each ...", flush=True)
    population = generate(engine, people, per_person)
    if url.startswith("sqlite"):
        raw = engine.raw_connection()
        raw.execute("ANALYZE")
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw.close()
    else:
        with engine.connect() as conn:
            conn.execution_options(isolation_level="AUTOCOMMIT").exec_driver_sql("VACUUM ANALYZE")
    engine.dispose()
    print(
        f"  {population.people:,} people, {population.events:,} events "
        f"in {population.seconds:.0f} s",
        flush=True,
    )


def pick_writes(db: Database, count: int, rng: random.Random) -> list[tuple[int, str]]:
    """People from the population and a purpose each does not currently consent to."""
    with db.reader() as session:
        max_id = session.scalar(select(func.max(Person.id)))
        keys = dict(session.exec(select(Purpose.id, Purpose.key)).all())
        chosen: list[tuple[int, str]] = []
        seen: set[int] = set()
        while len(chosen) < count:
            person_id = rng.randint(1, max_id)
            if person_id in seen:
                continue
            seen.add(person_id)
            given = set(
                session.exec(
                    select(ConsentState.purpose_id).where(
                        ConsentState.person_id == person_id, ConsentState.status == "given"
                    )
                ).all()
            )
            free = [k for pid, k in keys.items() if pid not in given]
            if free:
                chosen.append((person_id, rng.choice(free)))
    return chosen


def service_writes(db: Database, work: list[tuple[int, str]]) -> float:
    start = time.perf_counter()
    for person_id, key in work:
        with db.transaction() as session:
            person = session.get(Person, person_id)
            assert person is not None
            ledger.give(session, person, key, channel="web_form", actor="self")
    return len(work) / (time.perf_counter() - start)


def raw_rows(db: Database, work: list[tuple[int, str]]) -> list[dict]:
    """The exact rows the ledger would write, computed ahead so only the inserts are timed."""
    rows = []
    with db.reader() as session:
        purposes = {p.key: p for p in session.exec(select(Purpose))}
        for person_id, key in work:
            purpose = purposes[key]
            notice = session.exec(
                select(Notice)
                .where(Notice.purpose_id == purpose.id)
                .order_by(Notice.version.desc())
            ).first()
            last = session.exec(
                select(ConsentEvent.seq, ConsentEvent.hash)
                .where(ConsentEvent.person_id == person_id)
                .order_by(ConsentEvent.seq.desc())
            ).first()
            seq, prev = (last[0] + 1, last[1]) if last else (1, ledger.GENESIS)
            at = utcnow()
            digest = event_hash(
                person_id=person_id,
                seq=seq,
                purpose_key=key,
                notice_hash=notice.text_hash,
                action="given",
                channel="web_form",
                actor="self",
                occurred_at=at,
                wording=notice.statement,
                note_digest=None,
                prev_hash=prev,
            )
            rows.append(
                {
                    "person_id": person_id,
                    "seq": seq,
                    "purpose_id": purpose.id,
                    "notice_id": notice.id,
                    "at": at,
                    "wording": notice.statement,
                    "prev": prev,
                    "hash": digest,
                    "key": key,
                    "status": ACTION_STATUS["given"],
                }
            )
    return rows


def raw_writes(db: Database, rows: list[dict]) -> float:
    """Plain SQL through the driver, one commit per event: the floor the ledger is measured on."""
    sqlite = db.dialect == "sqlite"
    mark = (lambda n: "?") if sqlite else (lambda n: "%s")
    marks = ", ".join(mark(i) for i in range(11))
    event_sql = (
        "INSERT INTO consent_event (person_id, seq, purpose_id, notice_id, action, channel, "
        f"actor, occurred_at, wording, prev_hash, hash) VALUES ({marks}) RETURNING id"
    )
    state_sql = (
        "INSERT INTO consent_state (person_id, purpose_id, status, notice_id, channel, given_at, "
        f"changed_at, last_event_id) VALUES ({', '.join(mark(i) for i in range(8))}) "
        "ON CONFLICT (person_id, purpose_id) DO UPDATE SET status = excluded.status, "
        "notice_id = excluded.notice_id, channel = excluded.channel, given_at = "
        "excluded.given_at, changed_at = excluded.changed_at, last_event_id = "
        "excluded.last_event_id"
    )
    counter_sql = (
        "INSERT INTO stat_counter (period, metric, scope, dimension, value, count) VALUES "
        f"({', '.join(mark(i) for i in range(6))}) ON CONFLICT (period, metric, scope, "
        "dimension, value) DO UPDATE SET count = stat_counter.count + 1"
    )
    raw = db.engine.raw_connection()
    try:
        cursor = raw.cursor()
        start = time.perf_counter()
        for row in rows:
            at = row["at"].replace(tzinfo=None) if sqlite else row["at"]
            if sqlite:
                cursor.execute("BEGIN IMMEDIATE")
            cursor.execute(
                event_sql,
                (
                    row["person_id"],
                    row["seq"],
                    row["purpose_id"],
                    row["notice_id"],
                    "given",
                    "web_form",
                    "self",
                    at,
                    row["wording"],
                    row["prev"],
                    row["hash"],
                ),
            )
            event_id = cursor.fetchone()[0]
            cursor.execute(
                state_sql,
                (
                    row["person_id"],
                    row["purpose_id"],
                    "given",
                    row["notice_id"],
                    "web_form",
                    at,
                    at,
                    event_id,
                ),
            )
            cursor.execute(
                counter_sql,
                (period_of(row["at"]), "consent.given", "all", "purpose", row["key"], 1),
            )
            raw.commit() if not sqlite else cursor.execute("COMMIT")
        return len(rows) / (time.perf_counter() - start)
    finally:
        raw.close()


def state_lookups(db: Database, count: int, rng: random.Random) -> tuple[list[float], list[float]]:
    with db.reader() as session:
        max_id = session.scalar(select(func.max(Person.id)))
        ids = [rng.randint(1, max_id) for _ in range(count)]
        public_ids = [session.get(Person, i).public_id for i in ids[: count // 2]]
        session.expunge_all()
        by_object: list[float] = []
        for person_id in ids:
            person = Person(id=person_id)
            start = time.perf_counter()
            ledger.states_for(session, person)
            by_object.append((time.perf_counter() - start) * 1000)
        by_link: list[float] = []
        for public_id in public_ids:
            start = time.perf_counter()
            person = session.exec(select(Person).where(Person.public_id == public_id)).one()
            ledger.states_for(session, person)
            by_link.append((time.perf_counter() - start) * 1000)
    return by_object, by_link


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--database-url", default=f"sqlite:///{RESULTS / 'ledger.db'}")
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--events-per-person", type=float, default=3.0)
    parser.add_argument("--writes", type=int, default=3000)
    parser.add_argument("--lookups", type=int, default=4000)
    parser.add_argument("--reuse", action="store_true", help="keep an existing population")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    url = args.database_url
    print(f"database: {make_engine(url, pool=False).url.render_as_string(hide_password=True)}")
    prepare(url, args.people, args.events_per_person, args.reuse)
    db = Database(settings_for(url))
    rng = random.Random(42)

    work = pick_writes(db, args.writes * 2, rng)
    service_work, raw_work = work[: args.writes], work[args.writes :]
    raw_rate = raw_writes(db, raw_rows(db, raw_work))
    service_rate = service_writes(db, service_work)
    print("\nledger writes, one transaction per event")
    print(f"  ledger.give (service)                       {service_rate:8.0f} events/s")
    print(f"  raw SQL, same rows (event, state, counter)  {raw_rate:8.0f} events/s")
    print(f"  ledger / raw                                {service_rate / raw_rate:8.0%}")

    by_object, by_link = state_lookups(db, args.lookups, rng)
    print("\ncurrent-state lookup for one person")
    print(
        f"  states_for(person)               median {statistics.median(by_object):.3f} ms"
        f"   p95 {statistics.quantiles(by_object, n=20)[18]:.3f} ms"
    )
    print(
        f"  by link (public_id) then states  median {statistics.median(by_link):.3f} ms"
        f"   p95 {statistics.quantiles(by_link, n=20)[18]:.3f} ms"
    )
    db.dispose()

    seconds, peak_mb, output = run_cli(url, "audit", "verify")
    print("\nconsent audit verify over every event")
    print(f"  wall time {seconds:.1f} s, peak memory {peak_mb:.0f} MB")
    for line in output.splitlines()[:6]:
        print(f"  | {line}")


if __name__ == "__main__":
    main()
