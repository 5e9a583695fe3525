"""Whether a person may be contacted for each purpose: what other council systems ask the API.

A consent whose time has run out counts as expired even before the nightly sweep records it,
so no caller contacts someone on a consent that has lapsed. Recordings end with panel
contact, so they count as expired when it has.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from sqlmodel import Session

from consent.models import ConsentState
from consent.services import ledger, notice_catalogue, people
from consent.timeutil import utcnow
from consent.validation import normalise_email


@dataclass(frozen=True)
class PurposeStatus:
    purpose: str
    status: str
    since: datetime | None
    expires_at: datetime | None
    notice_version: int | None


@dataclass(frozen=True)
class ConsentCheck:
    known: bool
    public_id: str | None
    purposes: list[PurposeStatus]


def check(session: Session, email: str, *, now: datetime | None = None) -> ConsentCheck:
    """Every purpose with the person's status in it: given, withdrawn, expired or none.

    An address nobody holds, and one whose person was erased, get "none" throughout.
    """
    address = normalise_email(email)
    moment = now or utcnow()
    person = people.find_by_email(session, address)
    states = ledger.states_for(session, person) if person is not None else {}
    catalogue = notice_catalogue.current(
        session, needs={state.notice_id for state in states.values()}
    )
    found: list[PurposeStatus] = []
    contact = states.get(ledger.PANEL_CONTACT)
    for purpose in catalogue.purposes:
        state = states.get(purpose.key)
        if state is None:
            found.append(PurposeStatus(purpose.key, "none", None, None, None))
            continue
        status, since = state.status, state.changed_at
        if status == "given" and state.expires_at is not None and state.expires_at <= moment:
            status, since = "expired", state.expires_at
        contact_ended = _ended(contact, moment)
        if purpose.key == ledger.RECORDINGS and status == "given" and contact_ended is not None:
            status, since = "expired", contact_ended
        notice = catalogue.notices.get(state.notice_id)
        found.append(
            PurposeStatus(
                purpose.key,
                status,
                since,
                state.expires_at if status == "given" else None,
                notice.version if notice is not None else None,
            )
        )
    return ConsentCheck(person is not None, person.public_id if person else None, found)


def _ended(state: ConsentState | None, moment: datetime) -> datetime | None:
    """When this consent stopped being in force, if it has (past its limit, or no longer
    given); None while it is in force, or if it was never given."""
    if state is None or ledger.in_force(state.status, state.expires_at, moment):
        return None
    return state.expires_at if state.status == "given" else state.changed_at
