"""Admin benchmark with a million people: people search, a 5,000-member panel listed page by
page, and a 100,000-row CSV import.

    .venv/bin/python bench/admin.py              # builds bench/results/admin.db once (~3 min)
    .venv/bin/python bench/admin.py --reuse
"""

from __future__ import annotations

import argparse
import random
import secrets
import statistics
import sys
import time
from datetime import UTC, datetime, timedelta
from pathlib import Path

from sqlalchemy import func, insert, select

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from bench.common import RESULTS, percentile, run_cli, settings_for
from consent import create_app
from consent.db import Database, make_engine
from consent.models import Panel, PanelMembership, PanelProfile, Person
from consent.models.people import name_key
from consent.schema import upgrade
from consent.services import casework
from tests.admin_client import make_staff, sign_in

FIRST = [
    "amira",
    "ben",
    "chloe",
    "dev",
    "efua",
    "finn",
    "grace",
    "hamza",
    "isla",
    "jay",
    "kiran",
    "leah",
    "mo",
    "nia",
    "oscar",
    "priya",
    "rhys",
    "sana",
    "tom",
    "zara",
]
LAST = [
    "ahmed",
    "brown",
    "clarke",
    "davies",
    "evans",
    "khan",
    "lewis",
    "nowak",
    "okafor",
    "patel",
    "roberts",
    "singh",
    "taylor",
    "walsh",
    "wright",
]


def generate(url: str, count: int, members: int) -> int:
    """A million people (names and addresses only) and one panel of ``members``."""
    upgrade(settings_for(url))
    engine = make_engine(url, pool=False)
    rng = random.Random(11)
    now = datetime.now(UTC)
    done = 0
    while done < count:
        rows = []
        for _ in range(min(20_000, count - done)):
            done += 1
            first, last = rng.choice(FIRST), rng.choice(LAST)
            rows.append(
                {
                    "id": done,
                    "public_id": secrets.token_urlsafe(16),
                    "email": f"{first}.{last}{done}@example.com",
                    "name": f"{first.title()} {last.title()}",
                    "name_key": name_key(f"{first.title()} {last.title()}"),
                    "token_version": 1,
                    "created_at": now,
                    "updated_at": now,
                }
            )
        with engine.begin() as conn:
            conn.execute(insert(Person), rows)
    with engine.begin() as conn:
        panel_id = conn.execute(
            insert(Panel)
            .values(
                name="Big panel", family_hub="Hub", description="d", status="open", created_at=now
            )
            .returning(Panel.id)
        ).scalar_one()
        conn.execute(
            insert(PanelMembership),
            [
                {
                    "id": i,
                    "panel_id": panel_id,
                    "person_id": i,
                    "joined_at": now,
                    "expires_at": now + timedelta(days=700),
                }
                for i in range(1, members + 1)
            ],
        )
        conn.execute(
            insert(PanelProfile),
            [
                {
                    "membership_id": i,
                    "age_band": rng.choice(["25 to 34", "35 to 44"]),
                    "created_at": now,
                    "updated_at": now,
                }
                for i in range(1, members + 1)
            ],
        )
    if engine.dialect.name == "sqlite":
        raw = engine.raw_connection()
        raw.execute("ANALYZE")
        raw.execute("PRAGMA wal_checkpoint(TRUNCATE)")
        raw.close()
    engine.dispose()
    return panel_id


def search_timings(db: Database, tries: int) -> tuple[list[float], list[float]]:
    rng = random.Random(5)
    by_email, by_name = [], []
    with db.reader() as session:
        for _ in range(tries):
            first, last = rng.choice(FIRST), rng.choice(LAST)
            number = rng.randint(1, 999_999)
            for query, bucket in (
                (f"{first}.{last}{number}", by_email),
                (f"{first} {last[:3]}", by_name),
            ):
                start = time.perf_counter()
                casework.search(session, query)
                bucket.append((time.perf_counter() - start) * 1000)
    return by_email, by_name


def panel_pages(url: str, panel_id: int, pages: int) -> list[float]:
    app = create_app(settings_for(url))
    client = app.test_client()
    email, secret = make_staff(
        app.extensions["consent.db"], "coordinator", f"bench{secrets.token_hex(4)}@example.gov.uk"
    )
    sign_in(client, email, secret)
    timings = []
    for page in range(1, pages + 1):
        start = time.perf_counter()
        response = client.get(f"/admin/panels/{panel_id}?page={page}")
        timings.append((time.perf_counter() - start) * 1000)
        assert response.status_code == 200
    app.extensions["consent.db"].dispose()
    return timings


def import_run(url: str, rows: int) -> tuple[float, float, str]:
    path = RESULTS / "import.csv"
    with path.open("w") as handle:
        handle.write("email,name,consented_at,evidence\n")
        for index in range(rows):
            handle.write(
                f"imported{index}@example.org,Imported {index},2026-05-01,"
                "Paper form at Northfield Family Hub\n"
            )
    return run_cli(url, "import", str(path), "--purpose", "newsletter")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--people", type=int, default=1_000_000)
    parser.add_argument("--members", type=int, default=5_000)
    parser.add_argument("--import-rows", type=int, default=100_000)
    parser.add_argument("--reuse", action="store_true")
    args = parser.parse_args()
    RESULTS.mkdir(exist_ok=True)
    path = RESULTS / "admin.db"
    url = f"sqlite:///{path}"
    if not (args.reuse and path.exists()):
        for leftover in RESULTS.glob("admin.db*"):
            leftover.unlink()
        print(f"generating {args.people:,} people and a panel of {args.members:,} ...", flush=True)
        generate(url, args.people, args.members)
    db = Database(settings_for(url))
    with db.reader() as session:
        people = session.execute(select(func.count()).select_from(Person)).scalar()
        panel_id = session.execute(select(Panel.id).where(Panel.name == "Big panel")).scalar()
    by_email, by_name = search_timings(db, 300)
    db.dispose()
    pages = panel_pages(url, panel_id, args.members // 50)
    seconds, peak, output = import_run(url, args.import_rows)
    print(f"\n{people:,} people")
    print(
        f"people search by email start  median {statistics.median(by_email):6.2f} ms   "
        f"p95 {percentile(by_email, 0.95):6.2f} ms   (aim: p95 under 100 ms)"
    )
    print(
        f"people search by name start   median {statistics.median(by_name):6.2f} ms   "
        f"p95 {percentile(by_name, 0.95):6.2f} ms"
    )
    print(f"panel of {args.members:,} members, {len(pages)} pages of 50 (signed in, whole page)")
    print(
        f"                              median {statistics.median(pages):6.2f} ms   "
        f"p95 {percentile(pages, 0.95):6.2f} ms   (aim: under 100 ms a page)"
    )
    print(f"import of {args.import_rows:,} rows (consent import, whole process)")
    print(
        f"                              {seconds:6.1f} s, peak memory {peak:.0f} MB   "
        "(aim: under 60 s and 300 MB)"
    )
    print(f"  | {output.splitlines()[-1] if output else ''}")


if __name__ == "__main__":
    main()
