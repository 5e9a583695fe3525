"""Small named bookmarks that jobs keep between runs, such as how far they have looked."""

from __future__ import annotations

from sqlmodel import Session

from consent.models import JobState
from consent.timeutil import utcnow


def get(session: Session, key: str) -> str | None:
    state = session.get(JobState, key)
    return state.value if state else None


def put(session: Session, key: str, value: str) -> None:
    state = session.get(JobState, key)
    if state is None:
        session.add(JobState(key=key, value=value, updated_at=utcnow()))
    else:
        state.value, state.updated_at = value, utcnow()
    session.flush()
