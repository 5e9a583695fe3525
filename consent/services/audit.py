"""The audit log: every admin action and every view of special category data, hash-chained."""

from __future__ import annotations

import hashlib
import hmac
import json
from datetime import UTC, datetime
from typing import Any

from sqlalchemy import or_, text
from sqlmodel import Session, select

from consent.db import is_postgres
from consent.models import AuditEvent
from consent.services.ledger import GENESIS, VerifyReport
from consent.timeutil import utcnow
from consent.validation import whole_number

_LOCK_KEY = 0x636F6E73  # "cons": one advisory lock serialises appends to the single chain


def _hash(
    seq: int,
    at: datetime,
    actor_id: int | None,
    actor: str,
    action: str,
    object_type: str | None,
    object_id: str | None,
    detail: str,
    prev: str,
) -> str:
    body = json.dumps(
        {
            "seq": seq,
            "at": at.astimezone(UTC).isoformat(timespec="microseconds"),
            "actor_id": actor_id,
            "actor": actor,
            "action": action,
            "object_type": object_type,
            "object_id": object_id,
            "detail": detail,
            "prev": prev,
        },
        sort_keys=True,
        separators=(",", ":"),
    )
    return hashlib.sha256(body.encode()).hexdigest()


def record(
    session: Session,
    action: str,
    *,
    actor: str,
    actor_id: int | None = None,
    object_type: str | None = None,
    object_id: str | int | None = None,
    detail: dict[str, Any] | None = None,
) -> AuditEvent:
    """Append one audit event. ``detail`` must hold ids and field names only."""
    if is_postgres(session):
        session.execute(text("SELECT pg_advisory_xact_lock(:k)"), {"k": _LOCK_KEY})
    last = session.exec(
        select(AuditEvent.seq, AuditEvent.hash).order_by(AuditEvent.seq.desc()).limit(1)
    ).first()
    seq, prev = (last[0] + 1, last[1]) if last else (1, GENESIS)
    at = utcnow()
    detail_text = json.dumps(detail or {}, sort_keys=True, separators=(",", ":"))
    oid = None if object_id is None else str(object_id)
    event = AuditEvent(
        seq=seq,
        occurred_at=at,
        actor_id=actor_id,
        actor=actor,
        action=action,
        object_type=object_type,
        object_id=oid,
        detail=detail_text,
        prev_hash=prev,
        hash=_hash(seq, at, actor_id, actor, action, object_type, oid, detail_text, prev),
    )
    session.add(event)
    session.flush()
    return event


def events(
    session: Session, *, action: str = "", actor: str = "", limit: int, offset: int = 0
) -> list[AuditEvent]:
    """Newest first, filtered by the start of the action and by who. "admin:N" also matches
    by account, so events written before every action was labelled that way are found too."""
    query = select(AuditEvent).order_by(AuditEvent.seq.desc())
    if action:
        query = query.where(AuditEvent.action.startswith(action, autoescape=True))
    if actor:
        who = AuditEvent.actor == actor
        account = whole_number(actor.removeprefix("admin:")) if actor.startswith("admin:") else None
        query = query.where(who if account is None else or_(who, AuditEvent.actor_id == account))
    return list(session.exec(query.limit(limit).offset(offset)))


def verify(session: Session, batch: int = 5000) -> VerifyReport:
    """Check the audit chain: numbering, links and content of every event."""
    report = VerifyReport()
    expected, prev, after = 1, GENESIS, 0
    while True:
        rows = session.exec(
            select(AuditEvent).where(AuditEvent.seq > after).order_by(AuditEvent.seq).limit(batch)
        ).all()
        if not rows:
            break
        for event in rows:
            report.events += 1
            where = f"audit event {event.id} (number {event.seq})"
            if event.seq != expected:
                report.add(f"{where}: expected number {expected}; an event is missing or moved")
            if event.prev_hash != prev:
                report.add(f"{where}: does not follow the previous audit event")
            recomputed = _hash(
                event.seq,
                event.occurred_at,
                event.actor_id,
                event.actor,
                event.action,
                event.object_type,
                event.object_id,
                event.detail,
                event.prev_hash,
            )
            if not hmac.compare_digest(recomputed, event.hash):
                report.add(f"{where}: its content was changed after it was recorded")
            expected, prev = event.seq + 1, event.hash
        after = rows[-1].seq
        session.expunge_all()
    return report
