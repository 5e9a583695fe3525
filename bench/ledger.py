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
from consent import loading
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
        upgrade(settings)
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
    """People from the population and a purpose each does not currently consent to and may
    give: agreeing to recordings needs panel contact in force, within its time limit."""
    with db.reader() as session:
        max_id = session.scalar(select(func.max(Person.id)))
        keys = dict(session.exec(select(Purpose.id, Purpose.key)).all())
        chosen: list[tuple[int, str]] = []
        seen: set[int] = set()
        now = utcnow()
        while len(chosen) < count:
            if len(seen) >= max_id:
                sys.exit(
                    f"Only {len(chosen):,} people in this population can still give a consent; "
                    f"{count:,} are needed. Run without --reuse to build a fresh population."
                )
            person_id = rng.randint(1, max_id)
            if person_id in seen:
                continue
            seen.add(person_id)
            states = session.exec(
                select(ConsentState.purpose_id, ConsentState.status, ConsentState.expires_at).where(
                    ConsentState.person_id == person_id
                )
            ).all()
            given = {pid for pid, status, _ in states if status == "given"}
            members = any(
                keys[pid] == "panel_contact" and ledger.in_force(status, expires_at, now)
                for pid, status, expires_at in states
            )
            free = [
                k
                for pid, k in keys.items()
                if pid not in given and (k != "panel_recordings" or members)
            ]
            if free:
                chosen.append((person_id, rng.choice(free)))
    return chosen


def service_write(db: Database, person_id: int, key: str, *, orm_load: bool = False) -> float:
    """Seconds for the ledger to record one change in its own transaction, as a caller does:
    open a transaction, load the person, give, commit. ``orm_load`` loads the person with
    an ORM query instead, as callers did before ``consent.loading``."""
    start = time.perf_counter()
    with db.transaction() as session:
        if orm_load:
            person = session.get(Person, person_id)
        else:
            person = loading.person_by_id.get(session, person_id)
        assert person is not None
        ledger.give(session, person, key, channel="web_form", actor="self")
    return time.perf_counter() - start


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


class RawWriter:
    """Plain SQL through the driver, one commit per event: the floor the ledger is measured
    against."""

    def __init__(self, db: Database) -> None:
        self.sqlite = db.dialect == "sqlite"
        mark = "?" if self.sqlite else "%s"

        def marks(count: int) -> str:
            return ", ".join([mark] * count)

        self.event_sql = (
            "INSERT INTO consent_event (person_id, seq, purpose_id, notice_id, action, "
            f"channel, actor, occurred_at, wording, prev_hash, hash) VALUES ({marks(11)}) "
            "RETURNING id"
        )
        self.state_sql = (
            "INSERT INTO consent_state (person_id, purpose_id, status, notice_id, channel, "
            f"given_at, changed_at, last_event_id) VALUES ({marks(8)}) "
            "ON CONFLICT (person_id, purpose_id) DO UPDATE SET status = excluded.status, "
            "notice_id = excluded.notice_id, channel = excluded.channel, given_at = "
            "excluded.given_at, changed_at = excluded.changed_at, last_event_id = "
            "excluded.last_event_id"
        )
        self.counter_sql = (
            "INSERT INTO stat_counter (period, metric, scope, dimension, value, count) VALUES "
            f"({marks(6)}) ON CONFLICT (period, metric, scope, dimension, value) "
            "DO UPDATE SET count = stat_counter.count + 1"
        )
        self.connection = db.engine.raw_connection()
        self.cursor = self.connection.cursor()

    def write(self, row: dict) -> float:
        """Seconds to write one event's rows and commit."""
        cursor = self.cursor
        at = row["at"].replace(tzinfo=None) if self.sqlite else row["at"]
        start = time.perf_counter()
        if self.sqlite:
            cursor.execute("BEGIN IMMEDIATE")
        cursor.execute(
            self.event_sql,
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
            self.state_sql,
            [
                *(row["person_id"], row["purpose_id"], "given", row["notice_id"], "web_form"),
                *(at, at, event_id),
            ],
        )
        cursor.execute(
            self.counter_sql,
            (period_of(row["at"]), "consent.given", "all", "purpose", row["key"], 1),
        )
        if self.sqlite:
            cursor.execute("COMMIT")
        else:
            self.connection.commit()
        return time.perf_counter() - start

    def close(self) -> None:
        self.connection.close()


def compare_writes(
    db: Database, writes: int, rng: random.Random
) -> tuple[float, float, list[float], tuple[float, float]]:
    """Ledger and raw rates over the same number of events, one of each in turn (in
    alternating order), so that a slow spell of the shared disk falls on both alike.

    Also the share in each tenth of the run, to show how much it moves, and the median time
    of one event each way, which a few slow commits cannot sway.
    """
    work = pick_writes(db, writes * 2, rng)
    rows = raw_rows(db, work[writes:])
    raw = RawWriter(db)
    service_times: list[float] = []
    raw_times: list[float] = []
    try:
        for index, ((person_id, key), row) in enumerate(zip(work[:writes], rows, strict=True)):
            if index % 2:
                service_times.append(service_write(db, person_id, key))
                raw_times.append(raw.write(row))
            else:
                raw_times.append(raw.write(row))
                service_times.append(service_write(db, person_id, key))
    finally:
        raw.close()
    tenth = max(1, writes // 10)
    shares = [
        sum(raw_times[i : i + tenth]) / sum(service_times[i : i + tenth])
        for i in range(0, writes, tenth)
    ]
    medians = (statistics.median(service_times), statistics.median(raw_times))
    return writes / sum(service_times), writes / sum(raw_times), shares, medians


def compare_loading(db: Database, writes: int, rng: random.Random) -> None:
    """Ledger writes loading the person by ORM query and by ``consent.loading``, each beside
    raw writes, all three taken in turn (rotating which goes first)."""
    work = pick_writes(db, writes * 3, rng)
    rows = raw_rows(db, work[2 * writes :])
    raw = RawWriter(db)
    times: dict[str, list[float]] = {"orm": [], "loader": [], "raw": []}

    def write(name: str, index: int) -> float:
        if name == "raw":
            return raw.write(rows[index])
        if name == "orm":
            return service_write(db, *work[index], orm_load=True)
        return service_write(db, *work[writes + index])

    order = ["orm", "loader", "raw"]
    try:
        for index in range(writes):
            for name in order[index % 3 :] + order[: index % 3]:
                times[name].append(write(name, index))
    finally:
        raw.close()
    raw_median = statistics.median(times["raw"])
    print("\nloading the person, ORM query against consent.loading, taken in turn")
    for name, label in (("orm", "ORM query (session.get)"), ("loader", "consent.loading")):
        median = statistics.median(times[name])
        print(
            f"  {label:24s} {sum(times['raw']) / sum(times[name]):4.0%} of raw; median "
            f"{median * 1000:.2f} ms against {raw_median * 1000:.2f} ms: {raw_median / median:.0%}"
        )


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
            person = loading.person_by_public_id.get(session, public_id)
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
    parser.add_argument(
        "--compare-loading",
        action="store_true",
        help="only compare loading the person by ORM query and by consent.loading",
    )
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    url = args.database_url
    print(f"database: {make_engine(url, pool=False).url.render_as_string(hide_password=True)}")
    prepare(url, args.people, args.events_per_person, args.reuse)
    db = Database(settings_for(url))
    rng = random.Random(42)
    if args.compare_loading:
        compare_loading(db, args.writes, rng)
        db.dispose()
        return

    service_rate, raw_rate, shares, (service_median, raw_median) = compare_writes(
        db, args.writes, rng
    )
    print("\nledger writes, one transaction per event, taken in turn")
    print(f"  ledger.give (service)                       {service_rate:8.0f} events/s")
    print(f"  raw SQL, same rows (event, state, counter)  {raw_rate:8.0f} events/s")
    print(f"  ledger / raw                                {service_rate / raw_rate:8.0%}")
    print(
        f"  ledger / raw in each tenth of the run        min {min(shares):.0%}, "
        f"median {statistics.median(shares):.0%}, max {max(shares):.0%}"
    )
    print(
        f"  median time for one event                   ledger {service_median * 1000:.2f} ms, "
        f"raw {raw_median * 1000:.2f} ms: {raw_median / service_median:.0%}"
    )

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
