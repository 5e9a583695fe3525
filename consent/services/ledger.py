"""The consent ledger: give, withdraw, renew and expire, each proved by a chained event.

Every change appends a :class:`ConsentEvent` whose hash covers its content and the hash of
the person's previous event, and rewrites :class:`ConsentState` in the same transaction.
:func:`verify` walks every chain and reports any event that was edited, removed or moved.
"""

from __future__ import annotations

import hashlib
import hmac
from collections.abc import Collection, Iterator
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from functools import cache, lru_cache
from typing import Any, NamedTuple

from sqlalchemy import (
    String,
    and_,
    bindparam,
    exists,
    func,
    insert,
    or_,
    tuple_,
    type_coerce,
    update,
)
from sqlalchemy.dialects import postgresql, sqlite
from sqlalchemy.orm import aliased
from sqlalchemy.orm.util import identity_key
from sqlmodel import Session, select

from consent import loading
from consent.db import among, is_postgres, settings_of, upsert_insert
from consent.errors import Erased, InvalidInput, NotConsented, Suppressed, UnknownPurpose
from consent.models import ConsentEvent, ConsentState, Notice, Person, Purpose, Suppression
from consent.models.ledger import CHANNELS
from consent.prepared import Prepared
from consent.services import notices, reports
from consent.timeutil import utcnow
from consent.validation import NOTE_MAX, clean_text

GENESIS = "0" * 64
STATE_FIELDS = (
    "status",
    "notice_id",
    "channel",
    "given_at",
    "changed_at",
    "expires_at",
    "last_event_id",
)
ACTION_STATUS = {
    "given": "given",
    "renewed": "given",
    "withdrawn": "withdrawn",
    "expired": "expired",
}
#: Channels on which the person themselves freshly agrees; these lift a suppression.
FRESH_CHANNELS = frozenset({"web_form", "email_link", "admin"})
PANEL_CONTACT = "panel_contact"
#: Agreement to record panel meetings, which means nothing once panel contact has ended.
RECORDINGS = "panel_recordings"


def _canonical_time(moment: datetime | str) -> str:
    """ISO 8601 in UTC with microseconds; stored SQLite text is rewritten, not parsed."""
    if isinstance(moment, str):
        if len(moment) == 26 and moment[10] == " ":
            return f"{moment[:10]}T{moment[11:]}+00:00"
        moment = datetime.fromisoformat(moment)
        if moment.tzinfo is None:
            moment = moment.replace(tzinfo=UTC)
    if moment.tzinfo is not UTC:
        moment = moment.astimezone(UTC)
    return moment.isoformat(timespec="microseconds")


def _sha256(text: str) -> str:
    return hashlib.sha256(text.encode("utf-8")).hexdigest()


@lru_cache(maxsize=4096)
def _wording_digest(wording: str) -> str:
    """Most events repeat one of a few statements, so their digests are worth keeping."""
    return _sha256(wording)


def note_digest(hash_key: str, note: str) -> str:
    """A keyed digest of a note: it stays in the chain after erasure blanks the note."""
    return hmac.new(hash_key.encode(), note.encode("utf-8"), hashlib.sha256).hexdigest()


#: Fields are joined with the unit separator, which no field can contain: identifiers are
#: fixed words, free text (the actor) is refused if it has control characters, and the
#: wording and note enter only as digests.
_SEPARATOR = "\x1f"


def event_hash(
    *,
    person_id: int,
    seq: int,
    purpose_key: str,
    notice_hash: str,
    action: str,
    channel: str,
    actor: str,
    occurred_at: datetime | str,
    wording: str,
    note_digest: str | None,
    prev_hash: str,
) -> str:
    """The hash that chains an event; it covers everything the event proves."""
    body = _SEPARATOR.join(
        (
            "consent-event/1",
            str(person_id),
            str(seq),
            purpose_key,
            notice_hash,
            action,
            channel,
            actor,
            _canonical_time(occurred_at),
            _wording_digest(wording),
            note_digest or "",
            prev_hash,
        )
    )
    return _sha256(body)


def _check_channel(channel: str) -> None:
    if channel not in CHANNELS:
        raise InvalidInput("channel", f"Unknown channel {channel!r}.")


def _check_actor(actor: str) -> str:
    cleaned = clean_text(
        actor, field="actor", label="who made the change", max_length=100, required=True
    )
    assert cleaned is not None
    return cleaned


def _check_note(channel: str, note: str | None) -> str | None:
    cleaned = clean_text(note, field="note", label="a note", max_length=NOTE_MAX, multiline=True)
    if channel == "admin" and not cleaned:
        raise InvalidInput("note", "Enter a note saying how the person told you, and when.")
    return cleaned


@dataclass(frozen=True)
class _Context:
    """Everything one ledger write needs to know, read in a single round trip."""

    purpose_id: int
    purpose_key: str
    purpose_title: str
    max_age_days: int | None
    notice_id: int
    notice_statement: str
    notice_hash: str
    state_status: str | None
    state_expires_at: datetime | None
    state_notice_id: int | None
    state_notice_statement: str | None
    state_notice_hash: str | None
    state_notice_version: int | None
    last_seq: int | None
    last_hash: str | None
    suppressed: bool


def _context_query(dialect: str) -> Any:
    """Purpose, newest notice, state, chain head and suppression for one write, one query."""
    purpose, notice, state = Purpose.__table__, Notice.__table__, ConsentState.__table__
    newest, state_notice = Notice.__table__.alias("newest"), Notice.__table__.alias("shown")
    event, suppression = ConsentEvent.__table__, Suppression.__table__
    person_id = bindparam("person_id")
    last = select(event.c.seq, event.c.hash).where(event.c.person_id == person_id)
    last = last.order_by(event.c.seq.desc()).limit(1).subquery()
    return (
        select(
            purpose.c.id,
            purpose.c.key,
            purpose.c.title,
            purpose.c.max_age_days,
            notice.c.id,
            notice.c.statement,
            notice.c.text_hash,
            state.c.status,
            state.c.expires_at,
            state.c.notice_id,
            state_notice.c.statement,
            state_notice.c.text_hash,
            state_notice.c.version,
            select(last.c.seq).scalar_subquery(),
            select(last.c.hash).scalar_subquery(),
            exists().where(suppression.c.email_hmac == bindparam("email_hmac")),
        )
        .select_from(
            purpose.join(notice, notice.c.purpose_id == purpose.c.id)
            .outerjoin(
                state, and_(state.c.purpose_id == purpose.c.id, state.c.person_id == person_id)
            )
            .outerjoin(state_notice, state_notice.c.id == state.c.notice_id)
        )
        .where(
            purpose.c.key == bindparam("purpose_key"),
            notice.c.version
            == select(func.max(newest.c.version))
            .where(newest.c.purpose_id == purpose.c.id)
            .scalar_subquery(),
        )
    )


def _load_context(session: Session, person: Person, purpose_key: str) -> _Context:
    """Lock the person's chain, then read purpose, notices, state, chain head and suppression.

    On PostgreSQL the person's row lock serialises concurrent writers for one person; SQLite
    writers already hold the database's single write lock (``BEGIN IMMEDIATE``).
    """
    if not isinstance(purpose_key, str):
        raise UnknownPurpose(repr(purpose_key))
    if person.id is None:
        session.flush()
    if person.erased_at is not None:
        raise Erased("This person's details have been deleted.")
    from consent.services.people import email_hmac

    digest = email_hmac(settings_of(session).hash_key, person.email) if person.email else ""
    values = {"person_id": person.id, "purpose_key": purpose_key, "email_hmac": digest}
    if is_postgres(session):
        locked, found = _CONTEXT.run_after(_LOCK, session, values)
        if locked.fetchone() != (None,):
            raise Erased("This person's details have been deleted.")
    else:
        found = _CONTEXT.run(session, values)
    row = found.fetchone()
    if row is None:
        raise UnknownPurpose(purpose_key)
    status, expires_at = row[7], _utc(row[8])
    return _Context(*row[:7], status, expires_at, *row[9:15], suppressed=bool(row[15]))


def _utc(moment: datetime | str | None) -> datetime | None:
    """A time from a prepared statement's raw row: SQLite gives it as text, in UTC."""
    if isinstance(moment, str):
        moment = datetime.fromisoformat(moment)
    if moment is not None and moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment


def _lock_query(dialect: str) -> Any:
    person = Person.__table__
    found = select(person.c.erased_at).where(person.c.id == bindparam("person_id"))
    return found.with_for_update(key_share=True)


_CONTEXT = Prepared(_context_query)
_LOCK = Prepared(_lock_query, only="postgresql")


@cache
def _write_statements(dialect: str) -> tuple[Any, Any, Any]:
    """The batch event insert, the state upsert and the state update, built once.

    The update is for a batch whose states all exist (expiry): it skips the failed insert
    an upsert tries first for every row.
    """
    event, state = ConsentEvent.__table__, ConsentState.__table__
    insert_many = insert(event)
    upsert = _on_state_conflict(upsert_insert(dialect, state))
    rewrite = (
        update(state)
        .where(
            state.c.person_id == bindparam("b_person_id"),
            state.c.purpose_id == bindparam("b_purpose_id"),
        )
        .values({name: bindparam(name) for name in _STATE_CHANGING})
    )
    return insert_many, upsert, rewrite


#: What a new event rewrites in an existing state; ``given_at`` is kept unless given again.
_STATE_CHANGING = ("status", "notice_id", "channel", "changed_at", "expires_at", "last_event_id")


def _on_state_conflict(upsert: Any) -> Any:
    """An insert of a state row that, when the row exists, rewrites it for the new event."""
    state = ConsentState.__table__
    return upsert.on_conflict_do_update(
        index_elements=["person_id", "purpose_id"],
        set_={
            **{name: upsert.excluded[name] for name in _STATE_CHANGING},
            "given_at": func.coalesce(upsert.excluded.given_at, state.c.given_at),
        },
    )


def get_state(session: Session, person: Person, purpose: Purpose) -> ConsentState | None:
    if person.id is None:
        return None
    return session.get(ConsentState, (person.id, purpose.id))


@dataclass(frozen=True)
class _Change:
    """One event to append, with what its hash and its state row need to know."""

    person_id: int
    purpose_id: int
    purpose_key: str
    max_age_days: int | None
    notice_id: int
    notice_hash: str
    action: str
    channel: str
    actor: str
    wording: str
    note: str | None
    at: datetime


def _write_changes(
    session: Session,
    heads: dict[int, tuple[int, str]],
    changes: list[_Change],
    *,
    count_as: str | None = None,
    counted_at: datetime | None = None,
    states_exist: bool = False,
) -> list[dict[str, Any]]:
    """Append events (chained per person, in order), rewrite their states, count them.

    ``heads`` holds each person's last (seq, hash); it is advanced as events are added, so
    several changes for one person in one call chain correctly.
    """
    hash_key = settings_of(session).hash_key
    events: list[dict[str, Any]] = []
    for change in changes:
        seq, prev = heads.get(change.person_id, (0, GENESIS))
        seq += 1
        digest = note_digest(hash_key, change.note) if change.note else None
        values = {
            "person_id": change.person_id,
            "seq": seq,
            "purpose_id": change.purpose_id,
            "notice_id": change.notice_id,
            "action": change.action,
            "channel": change.channel,
            "actor": change.actor,
            "occurred_at": change.at,
            "wording": change.wording,
            "note": change.note,
            "note_digest": digest,
            "prev_hash": prev,
            "hash": event_hash(
                person_id=change.person_id,
                seq=seq,
                purpose_key=change.purpose_key,
                notice_hash=change.notice_hash,
                action=change.action,
                channel=change.channel,
                actor=change.actor,
                occurred_at=change.at,
                wording=change.wording,
                note_digest=digest,
                prev_hash=prev,
            ),
        }
        heads[change.person_id] = (seq, values["hash"])
        events.append(values)
    states: list[dict[str, Any]] = []
    counts: dict[tuple[str, str, str], tuple[int, datetime]] = {}
    periods: dict[datetime, str] = {}
    for change in changes:
        status = ACTION_STATUS[change.action]
        given = status == "given"
        states.append(
            {
                "person_id": change.person_id,
                "purpose_id": change.purpose_id,
                "status": status,
                "notice_id": change.notice_id,
                "channel": change.channel,
                "changed_at": change.at,
                "expires_at": change.at + timedelta(days=change.max_age_days)
                if given and change.max_age_days
                else None,
                "given_at": change.at if given else None,
            }
        )
        if change.at not in periods:
            periods[change.at] = reports.period_of(change.at)
        bucket = (change.action, change.purpose_key, periods[change.at])
        number, _ = counts.get(bucket, (0, change.at))
        counts[bucket] = (number + 1, change.at)
        cached = session.identity_map and session.identity_map.get(
            identity_key(ConsentState, (change.person_id, change.purpose_id))
        )
        if cached:
            session.expire(cached, list(STATE_FIELDS))
    counters = [
        reports.counter_params(
            count_as or f"consent.{action}",
            dimension="purpose",
            value=key,
            at=counted_at or at,
            by=number,
        )
        for (action, key, _), (number, at) in counts.items()
    ]
    if len(events) == 1 and not states_exist:
        _write_one(session, events[0], states[0], counters[0])
    else:
        dialect = session.get_bind().dialect.name
        _write_each(session, dialect, events, states, counters, states_exist=states_exist)
    for values, state in zip(events, states, strict=True):
        values["expires_at"] = state["expires_at"]
    return events


def _write_each(
    session: Session,
    dialect: str,
    events: list[dict[str, Any]],
    states: list[dict[str, Any]],
    counters: list[dict[str, Any]],
    *,
    states_exist: bool,
) -> None:
    """Events, then states pointing at them, then counters: a statement each."""
    insert_many, upsert_state, rewrite_state = _write_statements(dialect)
    if len(events) == 1:
        ids = [_INSERT_EVENT.run(session, events[0]).fetchone()[0]]
    else:
        ids = _insert_many(session, insert_many, events)
    for values, state, event_id in zip(events, states, ids, strict=True):
        values["id"] = state["last_event_id"] = event_id
    if states_exist:
        session.connection().execute(
            rewrite_state,
            [
                {"b_person_id": row["person_id"], "b_purpose_id": row["purpose_id"], **row}
                for row in states
            ],
        )
    else:
        session.execute(upsert_state, states if len(states) > 1 else states[0])
    session.execute(reports.upsert_statement(dialect), counters)


def _write_one(
    session: Session, event: dict[str, Any], state: dict[str, Any], counter: dict[str, Any]
) -> None:
    """The everyday single change. On PostgreSQL it is one statement, since each statement
    there is a round trip; on SQLite, three."""
    if session.get_bind().dialect.name == "postgresql":
        params = {**event, **{f"s_{name}": value for name, value in state.items()}, **counter}
        event_id = _ONE_CHANGE.run(session, params).fetchone()[0]
    else:
        event_id = _INSERT_EVENT.run(session, event).fetchone()[0]
        _UPSERT_STATE.run(session, {**state, "last_event_id": event_id})
        _COUNT.run(session, counter)
    event["id"] = state["last_event_id"] = event_id


def _binds(table: Any, names: list[str], prefix: str = "") -> dict[str, Any]:
    """A typed parameter for each named column, so values go through the column's type."""
    return {name: bindparam(prefix + name, type_=table.c[name].type) for name in names}


def _event_insert(dialect: str) -> Any:
    event = ConsentEvent.__table__
    names = [column.name for column in event.columns if column.name != "id"]
    return insert(event).values(_binds(event, names)).returning(event.c.id)


def _state_upsert(dialect: str) -> Any:
    state = ConsentState.__table__
    names = [column.name for column in state.columns]
    return _on_state_conflict(sqlite.insert(state).values(_binds(state, names)))


def _one_change_postgresql(dialect: str) -> Any:
    """Insert the event, upsert the state with its id and count it, in one statement."""
    state = ConsentState.__table__
    new_event = _event_insert(dialect).cte("new_event")
    fields = [column.name for column in state.columns if column.name != "last_event_id"]
    upsert = postgresql.insert(state).from_select(
        [*fields, "last_event_id"], select(*_binds(state, fields, "s_").values(), new_event.c.id)
    )
    upsert = _on_state_conflict(upsert)
    counted = reports.upsert_statement("postgresql").cte("counted")
    return select(new_event.c.id).add_cte(upsert.cte("new_state"), counted)


_INSERT_EVENT = Prepared(_event_insert)
_UPSERT_STATE = Prepared(_state_upsert, only="sqlite")
_COUNT = Prepared(reports.upsert_statement)
_ONE_CHANGE = Prepared(_one_change_postgresql, only="postgresql")


def _insert_many(session: Session, statement: Any, events: list[dict[str, Any]]) -> list[int]:
    """Insert a batch in one executemany and read the ids back by (person, seq).

    RETURNING with guaranteed row order makes SQLite insert one row at a time; a plain
    executemany and one indexed lookup is ten times faster for a sweep's batch.
    """
    session.execute(statement, events)
    event = ConsentEvent.__table__
    wanted = {(values["person_id"], values["seq"]) for values in events}
    found = {
        (person_id, seq): event_id
        for event_id, person_id, seq in session.execute(
            select(event.c.id, event.c.person_id, event.c.seq).where(
                among(event.c.person_id, sorted({p for p, _ in wanted})),
                event.c.seq >= min(s for _, s in wanted),
            )
        ).all()
        if (person_id, seq) in wanted
    }
    return [found[(values["person_id"], values["seq"])] for values in events]


def _append(
    session: Session,
    person: Person,
    ctx: _Context,
    action: str,
    *,
    notice_id: int,
    notice_hash: str,
    channel: str,
    actor: str,
    wording: str,
    note: str | None,
    at: datetime,
) -> ConsentEvent:
    """One change for one person: the ledger's everyday path."""
    assert person.id is not None
    heads = {person.id: (ctx.last_seq, ctx.last_hash)} if ctx.last_seq and ctx.last_hash else {}
    change = _Change(
        person.id,
        ctx.purpose_id,
        ctx.purpose_key,
        ctx.max_age_days,
        notice_id,
        notice_hash,
        action,
        channel,
        actor,
        wording,
        note,
        at,
    )
    [values] = _write_changes(session, heads, [change])
    expires_at = values.pop("expires_at")
    _after_change(session, person, change, expires_at)
    return loading.built(ConsentEvent, values)


def _after_change(
    session: Session, person: Person, change: _Change, expires_at: datetime | None
) -> None:
    """What a consent change means elsewhere: panel contact governs panel membership, and
    recordings end with it; the newsletter audience in Mailchimp follows newsletter consent;
    mail still waiting that needed a consent now withdrawn is not sent. (A consent that
    runs out is no opt-out: an invitation to join a panel may still go; what was a
    member's goes with their membership.)"""
    from consent.services import mailchimp, outbox, panels

    purpose_key, action, channel, at = change.purpose_key, change.action, change.channel, change.at
    if purpose_key == "newsletter" and channel == mailchimp.CHANNEL:
        mailchimp.drop_subscribes(session, person)
    elif purpose_key == "newsletter":
        if action in ("given", "renewed"):
            mailchimp.queue_subscribe(session, person, at)
        else:
            mailchimp.queue_unsubscribe(session, person)
    if purpose_key == PANEL_CONTACT:
        if action in ("withdrawn", "expired"):
            panels.end_memberships(session, person, reason=action, at=at)
            _end_recordings(session, person, change)
        elif expires_at is not None:
            renewed_at = at if action == "renewed" else None
            panels.extend_memberships(session, person, expires_at, renewed_at=renewed_at)
    if action in ("withdrawn", "expired"):
        assert person.id is not None
        if action == "withdrawn":
            outbox.cancel_unsent(
                session, [person.id], outbox.sent_only_with(purpose_key), reason=outbox.ENDED
            )
        queue_review(session, [person.id], at)


def _end_recordings(session: Session, person: Person, change: _Change) -> None:
    """Recordings mean nothing off a panel: they end as panel contact did, in the same way."""
    if not _given_and_in_time(session, person, RECORDINGS):
        return
    if change.action == "withdrawn":
        withdraw(
            session,
            person,
            RECORDINGS,
            channel=change.channel,
            actor=change.actor,
            note=change.note,
            at=change.at,
        )
    else:
        expire(session, person, RECORDINGS, actor=change.actor, at=change.at)


def queue_review(session: Session, person_ids: Collection[int], at: datetime) -> None:
    """Ask retention to check soon whether anything is still held for these people: each
    step that ends a reason to hold someone calls this, so the sweep looks at nobody else."""
    if not person_ids:
        return
    table = Person.__table__
    session.execute(
        update(table)
        .where(among(table.c.id, sorted(person_ids)), table.c.erased_at.is_(None))
        .values(review_at=at)
    )


def lock_people(session: Session, person_ids: list[int]) -> list[int]:
    """Lock these people's rows, in id order so two batches cannot deadlock, and return
    those not erased.

    Every write to a person's chain, or decision to erase them, takes this lock first
    (PostgreSQL; SQLite has one writer at a time), so what follows sees the others' work.
    It is ``FOR NO KEY UPDATE``: rows that only point at the person (a queued email, a
    booking) are still written meanwhile, as ``FOR UPDATE`` would block them and deadlock
    with whoever writes them for several people in another order.
    """
    return [row[0] for row in locked_rows(session, person_ids)]


def lock_and_load(session: Session, person_ids: list[int]) -> list[Person]:
    """:func:`lock_people`, loading each living person as they are once the lock is held
    (what the session held of them before is read again)."""
    return list(
        session.execute(
            _locking(select(Person), Person.__table__, person_ids).execution_options(
                populate_existing=True
            )
        ).scalars()
    )


def _locking(query: Any, person: Any, person_ids: list[int]) -> Any:
    """The one way people are locked: living ones only, in id order, ``FOR NO KEY UPDATE``."""
    return (
        query.where(among(person.c.id, person_ids), person.c.erased_at.is_(None))
        .order_by(person.c.id)
        .with_for_update(key_share=True)
    )


def locked_rows(session: Session, person_ids: list[int], *columns: Any) -> list[Any]:
    """:func:`lock_people`, returning (id, ``columns``...) of each living person, as they
    are once the lock is held."""
    person = Person.__table__
    return list(session.execute(_locking(select(person.c.id, *columns), person, person_ids)).all())


def _heads(session: Session, person_ids: list[int]) -> dict[int, tuple[int, str]]:
    """Each person's last (seq, hash), for chaining a batch of new events."""
    event = ConsentEvent.__table__
    last = (
        select(event.c.person_id, func.max(event.c.seq).label("seq"))
        .where(among(event.c.person_id, person_ids))
        .group_by(event.c.person_id)
        .subquery()
    )
    rows = session.execute(
        select(event.c.person_id, event.c.seq, event.c.hash).join(
            last, and_(event.c.person_id == last.c.person_id, event.c.seq == last.c.seq)
        )
    ).all()
    return {person_id: (seq, digest) for person_id, seq, digest in rows}


def give_many(
    session: Session,
    items: list[tuple[int, datetime, str, str]],
    *,
    purpose_key: str,
    notice: Notice,
    channel: str,
    actor: str,
    now: datetime,
) -> int:
    """Record many consents at once (an import): (person id, when, wording, evidence) each.

    Callers have already left out people who consent now. Counted as imported in the
    current period, so importing old consents never rewrites a past report.
    """
    if not items:
        return 0
    purpose = notices.get_purpose(session, purpose_key)
    person_ids = sorted({item[0] for item in items})
    if len(lock_people(session, person_ids)) < len(person_ids):
        raise Erased("Someone's details were deleted before their consent could be recorded.")
    heads = _heads(session, person_ids)
    changes = [
        _Change(
            person_id,
            purpose.id or 0,
            purpose.key,
            purpose.max_age_days,
            notice.id or 0,
            notice.text_hash,
            "given",
            channel,
            actor,
            wording,
            evidence,
            at,
        )
        for person_id, at, wording, evidence in items
    ]
    _write_changes(session, heads, changes, count_as="consent.imported", counted_at=now)
    return len(changes)


def expire_many(
    session: Session,
    *,
    now: datetime,
    limit: int,
    person_ids: list[int] | None = None,
    purpose_keys: tuple[str, ...] | None = None,
    actor: str = "system:retention",
    after: int = 0,
    review: bool = True,
) -> list[tuple[int, str]]:
    """Expire, in one batch, consents whose time limit has passed (or, given people and
    purposes, those consents whatever their limit). Returns (person id, purpose) pairs.

    The work is a handful of statements for the whole batch, not a round of them per
    person: the two-year sweep must keep up with a million members. Without ``person_ids``
    the batch is the next people by id after ``after``: neighbouring people share pages,
    so a batch in id order rewrites far fewer of them than one picked by expiry time.
    ``review=False`` is for a caller that decides about erasure in the same transaction.
    """
    from consent.services import panels

    state, purpose, notice = ConsentState.__table__, Purpose.__table__, Notice.__table__
    due = [state.c.status == "given"]
    if purpose_keys is not None:
        due.append(among(purpose.c.key, purpose_keys))
    if person_ids is None:
        due.append(state.c.expires_at <= now)
        person_ids = _next_due(session, now, limit, after)
    if not person_ids:
        return []
    lock_people(session, person_ids)
    rows = session.execute(
        select(
            state.c.person_id,
            state.c.purpose_id,
            purpose.c.key,
            purpose.c.max_age_days,
            state.c.notice_id,
            notice.c.statement,
            notice.c.text_hash,
        )
        .join(purpose, purpose.c.id == state.c.purpose_id)
        .join(notice, notice.c.id == state.c.notice_id)
        .where(among(state.c.person_id, person_ids), *due)
        .order_by(state.c.person_id, state.c.purpose_id)
    ).all()
    if not rows:
        return []
    touched = sorted({row[0] for row in rows})
    heads = _heads(session, touched)
    changes = [
        _Change(
            person_id,
            purpose_id,
            key,
            max_age,
            notice_id,
            text_hash,
            "expired",
            "system",
            actor,
            f"Expired: {statement}",
            None,
            now,
        )
        for person_id, purpose_id, key, max_age, notice_id, statement, text_hash in rows
    ]
    _write_changes(session, heads, changes, states_exist=True)
    panel_people = [c.person_id for c in changes if c.purpose_key == PANEL_CONTACT]
    panels.end_memberships_of(session, panel_people, reason="expired", at=now)
    expired = [(c.person_id, c.purpose_key) for c in changes]
    if panel_people:
        expired += expire_many(
            session,
            now=now,
            limit=limit,
            person_ids=panel_people,
            purpose_keys=(RECORDINGS,),
            actor=actor,
            review=False,
        )
    if review:
        queue_review(session, touched, now)
    return expired


def _next_due(session: Session, now: datetime, limit: int, after: int) -> list[int]:
    """The next people, by id after ``after``, with a consent past its time limit.

    A few are found through the expiry index. A backlog is walked in id order instead:
    neighbouring people share pages, so a batch in id order rewrites far fewer of them
    than one picked by expiry time.
    """
    state = ConsentState.__table__
    past = and_(state.c.status == "given", state.c.expires_at <= now)
    few = (
        session.execute(
            select(state.c.person_id).where(past).order_by(state.c.expires_at).limit(limit + 1)
        )
        .scalars()
        .all()
    )
    if len(few) <= limit:
        return sorted(set(few))
    backlog = (
        select(state.c.person_id)
        .where(past, state.c.person_id > after)
        .order_by(state.c.person_id)
        .limit(limit)
    )
    return list(dict.fromkeys(session.execute(backlog).scalars()))


def _wording(wording: str | None, default: str) -> str:
    shown = clean_text(
        wording, field="wording", label="the wording shown", max_length=20000, multiline=True
    )
    return shown or default


class _Seen(NamedTuple):
    id: int | None
    text_hash: str
    statement: str
    #: Older than the wording the consent in force was given on.
    older: bool


def _seen(ctx: _Context, notice: Notice | None) -> _Seen:
    """The wording an event records: the version a page showed, when it says which, else the
    current one. A page older than the agreement in force must not move it back."""
    if notice is None:
        return _Seen(ctx.notice_id, ctx.notice_hash, ctx.notice_statement, older=False)
    if notice.purpose_id != ctx.purpose_id:
        raise InvalidInput("notice", "That notice belongs to a different purpose.")
    older = notice.version < (ctx.state_notice_version or 0)
    return _Seen(notice.id, notice.text_hash, notice.statement, older)


def give(
    session: Session,
    person: Person,
    purpose_key: str,
    *,
    channel: str,
    actor: str,
    notice: Notice | None = None,
    wording: str | None = None,
    note: str | None = None,
    at: datetime | None = None,
) -> ConsentEvent | None:
    """Record consent. Nothing new is written when it is already in force on this notice
    or a newer version of it.

    ``notice`` is the version the person was shown, when it is known (a form records the
    version it displayed); otherwise the current version. An older form or confirmation
    link used after the person agreed to newer wording must not move their agreement back
    to the old wording. Recordings can only be agreed with panel contact in force, as they
    end with it.
    """
    _check_channel(channel)
    actor = _check_actor(actor)
    note = _check_note(channel, note)
    ctx = _load_context(session, person, purpose_key)
    if purpose_key == RECORDINGS and not _contact_in_force(session, person, utcnow()):
        raise InvalidInput(
            RECORDINGS, "You can agree to recording panel meetings once you have joined a panel."
        )
    seen = _seen(ctx, notice)
    shown = _wording(wording, seen.statement)
    if ctx.suppressed:
        if channel not in FRESH_CHANNELS:
            raise Suppressed(
                "This address asked not to be contacted. Only the person can agree again."
            )
        from consent.services import people

        people.lift_suppression(session, person.email or "")
    at = at or utcnow()
    unchanged = ctx.state_notice_id == seen.id or seen.older
    if unchanged and in_force(ctx.state_status, ctx.state_expires_at, at):
        return None
    assert seen.id is not None
    return _append(
        session,
        person,
        ctx,
        "given",
        notice_id=seen.id,
        notice_hash=seen.text_hash,
        channel=channel,
        actor=actor,
        wording=shown,
        note=note,
        at=at,
    )


def _contact_in_force(session: Session, person: Person, at: datetime) -> bool:
    """Panel contact in force as committed now, read once the person's chain is locked: a
    withdrawal that ended it while this write waited must not be missed (the session may
    still hold the state as it was)."""
    state, purpose = ConsentState.__table__, Purpose.__table__
    row = session.execute(
        select(state.c.status, state.c.expires_at)
        .join(purpose, purpose.c.id == state.c.purpose_id)
        .where(state.c.person_id == person.id, purpose.c.key == PANEL_CONTACT)
    ).first()
    return row is not None and in_force(row[0], _utc(row[1]), at)


def in_force(status: str | None, expires_at: datetime | None, at: datetime) -> bool:
    """Given, and within its time limit: a consent past its limit is no longer in force,
    even before the hourly sweep has recorded its expiry."""
    return status == "given" and (expires_at is None or expires_at > at)


def withdraw(
    session: Session,
    person: Person,
    purpose_key: str,
    *,
    channel: str,
    actor: str,
    note: str | None = None,
    at: datetime | None = None,
) -> ConsentEvent | None:
    """Record a withdrawal. Withdrawing twice is harmless: the second records nothing."""
    _check_channel(channel)
    actor = _check_actor(actor)
    note = _check_note(channel, note)
    ctx = _load_context(session, person, purpose_key)
    if ctx.state_status is None:
        raise NotConsented(f"There is no consent for {ctx.purpose_title.lower()} to withdraw.")
    if ctx.state_status != "given":
        return None
    assert ctx.state_notice_id and ctx.state_notice_hash and ctx.state_notice_statement
    return _append(
        session,
        person,
        ctx,
        "withdrawn",
        notice_id=ctx.state_notice_id,
        notice_hash=ctx.state_notice_hash,
        channel=channel,
        actor=actor,
        wording=f"Withdrawn: {ctx.state_notice_statement}",
        note=note,
        at=at or utcnow(),
    )


def renew(
    session: Session,
    person: Person,
    purpose_key: str,
    *,
    channel: str,
    actor: str,
    notice: Notice | None = None,
    wording: str | None = None,
    note: str | None = None,
    at: datetime | None = None,
) -> ConsentEvent:
    """Renew consent in force; the time limit starts again.

    As with ``give``, ``notice`` is the version the person was shown when a page showed
    one; otherwise the current version. A page older than the agreement in force is
    refused, as renewing on it would move the agreement back to older wording.
    """
    _check_channel(channel)
    actor = _check_actor(actor)
    note = _check_note(channel, note)
    ctx = _load_context(session, person, purpose_key)
    at = at or utcnow()
    if not in_force(ctx.state_status, ctx.state_expires_at, at):
        raise NotConsented(
            f"There is no consent in force for {ctx.purpose_title.lower()} to renew. "
            "Ask the person to agree again."
        )
    seen = _seen(ctx, notice)
    if seen.older:
        raise InvalidInput(
            purpose_key,
            "The wording has changed since this page was opened. Reload the page, read it "
            "again and then send the form.",
        )
    return _append(
        session,
        person,
        ctx,
        "renewed",
        notice_id=seen.id,
        notice_hash=seen.text_hash,
        channel=channel,
        actor=actor,
        wording=_wording(wording, seen.statement),
        note=note,
        at=at,
    )


def expire(
    session: Session,
    person: Person,
    purpose_key: str,
    *,
    actor: str = "system:retention",
    at: datetime | None = None,
) -> ConsentEvent:
    """Record that consent ran out at its time limit."""
    ctx = _load_context(session, person, purpose_key)
    if ctx.state_status != "given":
        raise NotConsented(
            f"There is no consent in force for {ctx.purpose_title.lower()} to expire."
        )
    assert ctx.state_notice_id and ctx.state_notice_hash and ctx.state_notice_statement
    return _append(
        session,
        person,
        ctx,
        "expired",
        notice_id=ctx.state_notice_id,
        notice_hash=ctx.state_notice_hash,
        channel="system",
        actor=actor,
        wording=f"Expired: {ctx.state_notice_statement}",
        note=None,
        at=at or utcnow(),
    )


def states_for(session: Session, person: Person) -> dict[str, ConsentState]:
    """Current state per purpose key, for one person."""
    if person.id is None:
        return {}
    rows = session.exec(_states_query(), params={"person_id": person.id}).all()
    return {key: state for key, state in rows}


@cache
def _states_query() -> Any:
    return (
        select(Purpose.key, ConsentState)
        .join(ConsentState, ConsentState.purpose_id == Purpose.id)
        .where(ConsentState.person_id == bindparam("person_id"))
    )


def has_consent(session: Session, person: Person, purpose_key: str) -> bool:
    """Whether consent is in force: given, and its time limit not passed (the sweep that
    records expiry runs hourly). Recordings end with panel contact, so they need it in force
    too, even before the sweep has recorded that it ran out."""
    if purpose_key == RECORDINGS and not _given_and_in_time(session, person, PANEL_CONTACT):
        return False
    return _given_and_in_time(session, person, purpose_key)


def _given_and_in_time(session: Session, person: Person, purpose_key: str) -> bool:
    purpose = notices.get_purpose(session, purpose_key)
    state = get_state(session, person, purpose)
    return state is not None and in_force(state.status, state.expires_at, utcnow())


def events_for(session: Session, person: Person) -> list[ConsentEvent]:
    if person.id is None:
        return []
    return list(
        session.exec(
            select(ConsentEvent)
            .where(ConsentEvent.person_id == person.id)
            .order_by(ConsentEvent.seq)
        )
    )


@dataclass
class VerifyReport:
    """What :func:`verify` found; ``problems`` is empty when every chain holds."""

    events: int = 0
    people: int = 0
    problems: list[str] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return not self.problems

    def add(self, problem: str, limit: int = 1000) -> None:
        if len(self.problems) < limit:
            self.problems.append(problem)
        elif len(self.problems) == limit:
            self.problems.append("... more problems not listed")


def _stream_events(session: Session, batch: int) -> Iterator[Any]:
    """Every event in chain order, in keyset pages so memory stays flat.

    The time is read as stored (text on SQLite) rather than as a datetime: turning three
    million strings into datetimes and back would be most of the work.
    """
    event = ConsentEvent.__table__
    columns = [
        event.c.id,
        event.c.person_id,
        event.c.seq,
        event.c.purpose_id,
        event.c.notice_id,
        event.c.action,
        event.c.channel,
        event.c.actor,
        type_coerce(event.c.occurred_at, String).label("occurred_at"),
        event.c.wording,
        event.c.note,
        event.c.note_digest,
        event.c.prev_hash,
        event.c.hash,
    ]
    connection = session.connection()
    page = (
        select(*columns)
        .where(tuple_(event.c.person_id, event.c.seq) > tuple_(bindparam("p"), bindparam("s")))
        .order_by(event.c.person_id, event.c.seq)
        .limit(batch)
    )
    after = {"p": -1, "s": -1}
    while True:
        rows = connection.execute(page, after).all()
        if not rows:
            return
        yield from rows
        after = {"p": rows[-1][1], "s": rows[-1][2]}


def verify(session: Session, batch: int = 20000) -> VerifyReport:
    """Walk every person's chain and check states agree with the last event of each purpose."""
    settings = settings_of(session)
    purpose_keys = dict(session.exec(select(Purpose.id, Purpose.key)).all())
    notice_hashes = dict(session.exec(select(Notice.id, Notice.text_hash)).all())
    report = VerifyReport()
    current_person: int | None = None
    expected_seq = 1
    prev = GENESIS
    for row in _stream_events(session, batch):
        (
            event_id,
            person_id,
            seq,
            purpose_id,
            notice_id,
            action,
            channel,
            actor,
            occurred_at,
            wording,
            note,
            digest,
            prev_hash,
            stored_hash,
        ) = row
        report.events += 1
        if person_id != current_person:
            current_person, expected_seq, prev = person_id, 1, GENESIS
            report.people += 1
        where = f"person {person_id}, event {event_id} (number {seq})"
        if seq != expected_seq:
            report.add(
                f"{where}: expected event number {expected_seq}; an event is missing "
                "or out of order"
            )
        if prev_hash != prev:
            report.add(f"{where}: does not follow the previous event in the chain")
        if note is not None and (
            digest is None or not hmac.compare_digest(note_digest(settings.hash_key, note), digest)
        ):
            report.add(f"{where}: the note was changed")
        recomputed = event_hash(
            person_id=person_id,
            seq=seq,
            purpose_key=purpose_keys.get(purpose_id, "?"),
            notice_hash=notice_hashes.get(notice_id, "?"),
            action=action,
            channel=channel,
            actor=actor,
            occurred_at=occurred_at,
            wording=wording,
            note_digest=digest,
            prev_hash=prev_hash,
        )
        if not hmac.compare_digest(recomputed, stored_hash):
            report.add(f"{where}: its content was changed after it was recorded")
        expected_seq = seq + 1
        prev = stored_hash
    _verify_notices(session, report)
    _verify_states(session, report)
    return report


def _verify_notices(session: Session, report: VerifyReport) -> None:
    for notice in session.exec(select(Notice)):
        if notices.notice_hash(notice.statement, notice.text) != notice.text_hash:
            report.add(f"notice {notice.id} (version {notice.version}): its wording was changed")


def _verify_states(session: Session, report: VerifyReport) -> None:
    """The current state must be the last event per purpose, and every event must have one."""
    last = aliased(ConsentEvent)
    later = aliased(ConsentEvent)
    bad = session.exec(
        select(ConsentState.person_id, ConsentState.purpose_id)
        .outerjoin(last, last.id == ConsentState.last_event_id)
        .where(
            or_(
                last.id.is_(None),
                last.person_id != ConsentState.person_id,
                last.purpose_id != ConsentState.purpose_id,
                last.notice_id != ConsentState.notice_id,
                and_(ConsentState.status == "given", last.action.not_in(("given", "renewed"))),
                and_(ConsentState.status != "given", last.action != ConsentState.status),
                exists().where(
                    later.person_id == ConsentState.person_id,
                    later.purpose_id == ConsentState.purpose_id,
                    later.seq > last.seq,
                ),
            )
        )
    ).all()
    for person_id, purpose_id in bad:
        report.add(
            f"person {person_id}: the current state of purpose {purpose_id} does not match "
            "the last recorded event"
        )
    orphans = session.exec(
        select(ConsentEvent.person_id, ConsentEvent.purpose_id)
        .where(
            ~exists().where(
                ConsentState.person_id == ConsentEvent.person_id,
                ConsentState.purpose_id == ConsentEvent.purpose_id,
            )
        )
        .distinct()
    ).all()
    for person_id, purpose_id in orphans:
        report.add(f"person {person_id}: events for purpose {purpose_id} have no current state")
