"""Generate a large, valid population straight into a migrated database.

People, consent events with correct hash chains, and the matching states are written with
bulk inserts (going through the ledger one event at a time would take an hour), so that
``consent audit verify`` passes over the result exactly as it would over real data.
"""

from __future__ import annotations

import random
import secrets
import time
from collections.abc import Iterator
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from typing import Any

from sqlalchemy import insert, select, text
from sqlalchemy.engine import Engine

from consent.models import ConsentEvent, ConsentState, Notice, Person, Purpose
from consent.models.people import name_key
from consent.services.ledger import ACTION_STATUS, GENESIS, event_hash

BATCH = 20_000


@dataclass
class Population:
    people: int
    events: int
    seconds: float


def _purposes(engine: Engine) -> list[tuple[int, str, int, str, str, int | None]]:
    with engine.connect() as conn:
        rows = conn.execute(
            select(
                Purpose.id,
                Purpose.key,
                Notice.id,
                Notice.text_hash,
                Notice.statement,
                Purpose.max_age_days,
            )
            .join(Notice, Notice.purpose_id == Purpose.id)
            .where(Notice.version == 1)
            .order_by(Purpose.id)
        ).all()
    return [tuple(r) for r in rows]


def _histories(rng: random.Random, purposes: list, per_person: float) -> Iterator[list]:
    """A plausible history for one person: some consents given, some later withdrawn."""
    while True:
        count = max(1, round(rng.gauss(per_person, 1)))
        history = []
        given: set[int] = set()
        for _ in range(count):
            purpose = rng.choice(purposes)
            if purpose[0] in given and rng.random() < 0.6:
                history.append((purpose, "withdrawn"))
                given.discard(purpose[0])
            elif purpose[0] in given:
                history.append((purpose, "renewed"))
            else:
                history.append((purpose, "given"))
                given.add(purpose[0])
        yield history


def generate(engine: Engine, people: int, events_per_person: float, seed: int = 1) -> Population:
    """Append ``people`` people with about ``events_per_person`` events each."""
    rng = random.Random(seed)
    purposes = _purposes(engine)
    start = time.perf_counter()
    base_time = datetime(2024, 1, 1, tzinfo=UTC)
    with engine.connect() as conn:
        first_id = (conn.execute(select(Person.id).order_by(Person.id.desc())).first() or (0,))[0]
        first_event = (
            conn.execute(select(ConsentEvent.id).order_by(ConsentEvent.id.desc())).first() or (0,)
        )[0]
        conn.rollback()
    histories = _histories(rng, purposes, events_per_person)
    person_id, event_id, total_events = first_id, first_event, 0
    remaining = people
    while remaining:
        size = min(BATCH, remaining)
        person_rows: list[dict[str, Any]] = []
        event_rows: list[dict[str, Any]] = []
        state_rows: list[dict[str, Any]] = []
        for _ in range(size):
            person_id += 1
            at = base_time + timedelta(seconds=rng.randint(0, 60 * 60 * 24 * 600))
            person_rows.append(
                {
                    "id": person_id,
                    "public_id": secrets.token_urlsafe(16),
                    "email": f"person{person_id}@example.com",
                    "name": f"Person {person_id}",
                    "name_key": name_key(f"Person {person_id}"),
                    "token_version": 1,
                    "created_at": at,
                    "updated_at": at,
                }
            )
            prev = GENESIS
            last: dict[int, dict[str, Any]] = {}
            for seq, (purpose, action) in enumerate(next(histories), start=1):
                event_id += 1
                at = at + timedelta(minutes=rng.randint(1, 60 * 24 * 30))
                pid, key, notice_id, notice_hash, statement, max_age = purpose
                wording = statement if action != "withdrawn" else f"Withdrawn: {statement}"
                digest = event_hash(
                    person_id=person_id,
                    seq=seq,
                    purpose_key=key,
                    notice_hash=notice_hash,
                    action=action,
                    channel="web_form",
                    actor="self",
                    occurred_at=at,
                    wording=wording,
                    note_digest=None,
                    prev_hash=prev,
                )
                event_rows.append(
                    {
                        "id": event_id,
                        "person_id": person_id,
                        "seq": seq,
                        "purpose_id": pid,
                        "notice_id": notice_id,
                        "action": action,
                        "channel": "web_form",
                        "actor": "self",
                        "occurred_at": at,
                        "wording": wording,
                        "note": None,
                        "note_digest": None,
                        "prev_hash": prev,
                        "hash": digest,
                    }
                )
                prev = digest
                status = ACTION_STATUS[action]
                previous = last.get(pid)
                last[pid] = {
                    "person_id": person_id,
                    "purpose_id": pid,
                    "status": status,
                    "notice_id": notice_id,
                    "channel": "web_form",
                    "given_at": at if status == "given" else (previous or {}).get("given_at"),
                    "changed_at": at,
                    "expires_at": at + timedelta(days=max_age)
                    if status == "given" and max_age
                    else None,
                    "last_event_id": event_id,
                }
            state_rows.extend(last.values())
        total_events += len(event_rows)
        with engine.begin() as conn:
            conn.execute(insert(Person), person_rows)
            conn.execute(insert(ConsentEvent), event_rows)
            conn.execute(insert(ConsentState), state_rows)
        remaining -= size
    if engine.dialect.name == "postgresql":
        with engine.begin() as conn:
            for table in ("person", "consent_event"):
                conn.execute(
                    text(
                        f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                        f"(SELECT MAX(id) FROM {table}))"
                    )
                )
    return Population(people, total_events, time.perf_counter() - start)
