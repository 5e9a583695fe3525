"""Parent Carer Panels: membership, profiles, and destroying panel data when it must go."""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from typing import Any

from sqlalchemy import bindparam, delete, func, update
from sqlalchemy.orm import InstanceState
from sqlmodel import Session, select

from consent import loading
from consent.crypto import cipher_for
from consent.db import among, settings_of
from consent.errors import Conflict, InvalidInput, NotFound
from consent.models import (
    Attendance,
    ConsentState,
    Notice,
    Panel,
    PanelMembership,
    PanelProfile,
    PanelSession,
    PendingSignup,
    Person,
    Purpose,
    SessionNote,
)
from consent.options import PREFER_NOT_TO_SAY, options
from consent.prepared import Prepared
from consent.services import ledger, notices, reports
from consent.timeutil import london_datetime, utcnow
from consent.validation import (
    FURTHEST_BACK,
    TEXT_MAX,
    check_meeting_date,
    clean_text,
    normalise_postcode,
)


def _destroy_member_data(session: Session, membership_ids: list[int]) -> int:
    """Remove every identifying piece of panel data for these memberships."""
    if not membership_ids:
        return 0
    session.execute(delete(SessionNote).where(among(SessionNote.membership_id, membership_ids)))
    session.execute(delete(Attendance).where(among(Attendance.membership_id, membership_ids)))
    result = session.execute(
        delete(PanelProfile).where(among(PanelProfile.membership_id, membership_ids))
    )
    return int(result.rowcount or 0)


def is_member(session: Session, person: Person) -> bool:
    """Whether the person is on any panel now."""
    found = select(PanelMembership.id).where(
        PanelMembership.person_id == person.id, PanelMembership.left_at.is_(None)
    )
    return session.exec(found.limit(1)).first() is not None


def end_memberships(session: Session, person: Person, *, reason: str, at: datetime) -> int:
    """End every active membership of a person and destroy their panel data at once."""
    assert person.id is not None
    return end_memberships_of(session, [person.id], reason=reason, at=at)


def end_memberships_of(
    session: Session,
    person_ids: list[int],
    *,
    reason: str,
    at: datetime,
    panel_id: int | None = None,
) -> int:
    """End active memberships of many people (of one panel, or of all) in a few statements,
    destroying the panel data that identifies them.

    Only the rows this update ended are counted: two overlapping sweeps may both pick the
    same members, and the one that waited must find them already gone, not count them again.
    """
    if not person_ids:
        return 0
    table = PanelMembership.__table__
    where = [among(table.c.person_id, person_ids), table.c.left_at.is_(None)]
    if panel_id is not None:
        where.append(table.c.panel_id == panel_id)
    rows = session.execute(
        update(table)
        .where(*where)
        .values(left_at=at, left_reason=reason, data_destroyed_at=at)
        .returning(table.c.id, table.c.panel_id, table.c.person_id)
    ).all()
    if not rows:
        return 0
    ids = [row[0] for row in rows]
    _destroy_member_data(session, ids)
    _forget_waiting(session, sorted({row[2] for row in rows}), set(ids), panel_id, reason)
    for panel, number in Counter(row[1] for row in rows).items():
        reports.count(session, f"panel.left.{reason}", scope=f"panel:{panel}", at=at, by=number)
    ended = set(ids)
    _expire_loaded(
        session,
        lambda state: state.identity[0] in ended,
        ["left_at", "left_reason", "data_destroyed_at"],
    )
    _forget_phones(session, person_ids)
    return len(ids)


#: Mail that belongs to one membership.
_MEMBERSHIP_MAIL = ("panel_session_invitation", "reconsent_reminder")


def _forget_waiting(
    session: Session,
    person_ids: list[int],
    membership_ids: set[int],
    panel_id: int | None,
    reason: str,
) -> None:
    """What still waits for members who left (one panel, or all): their meeting invitations
    and renewal reminders; and, unless their agreement simply ran out, answers sent to
    update their profile but not yet confirmed, which may hold special category data and
    whose link would put them back on the panel. Someone whose agreement ran out may have
    sent the form again to stay on: confirming it joins them afresh."""
    from consent.services import outbox

    outbox.cancel_unsent(
        session,
        person_ids,
        _MEMBERSHIP_MAIL,
        reason="they left the panel before it was sent.",
        membership_ids=membership_ids,
    )
    if reason == "expired":
        return
    pending = PendingSignup.__table__
    where = [pending.c.kind == "panel", among(pending.c.person_id, person_ids)]
    if panel_id is not None:
        where.append(pending.c.panel_id == panel_id)
    session.execute(delete(pending).where(*where))


def _forget_phones(session: Session, person_ids: list[int]) -> None:
    """A phone number is asked for only so the Family Hub team can call about panel meetings,
    so it goes with the person's last membership."""
    member, person = PanelMembership.__table__, Person.__table__
    staying = select(member.c.person_id).where(
        among(member.c.person_id, person_ids), member.c.left_at.is_(None)
    )
    gone = set(
        session.execute(
            select(person.c.id).where(
                among(person.c.id, person_ids),
                person.c.id.not_in(staying),
                person.c.phone.is_not(None),
            )
        ).scalars()
    )
    if gone:
        session.execute(update(person).where(among(person.c.id, sorted(gone))).values(phone=None))
        _expire_loaded(session, lambda state: state.identity[0] in gone, ["phone"], Person)


def _expire_loaded(
    session: Session,
    changed: Callable[[InstanceState[Any]], bool],
    fields: list[str],
    model: type = PanelMembership,
) -> None:
    """Keep objects this session holds in step with a statement that changed their rows,
    without loading any: the changed fields are read again when next used."""
    for state in list(session.identity_map.all_states()):
        instance = state.obj()
        if instance is not None and isinstance(instance, model) and changed(state):
            session.expire(instance, fields)


def destroy_session_notes(session: Session, panel: Panel) -> int:
    """A concluded panel's notes go too, not only those about one member: a note about a
    whole session may still name the people in it."""
    sessions = select(PanelSession.id).where(PanelSession.panel_id == panel.id)
    result = session.execute(delete(SessionNote).where(SessionNote.session_id.in_(sessions)))
    return int(result.rowcount or 0)


def forget_sign_ups(session: Session, panel: Panel, at: datetime) -> int:
    """Answers sent to join a concluded panel and not yet confirmed can never be used, and
    may hold special category data: they go with the panel. Whoever they held is looked at
    again by the sweep."""
    table = PendingSignup.__table__
    rows = session.execute(
        delete(table)
        .where(table.c.kind == "panel", table.c.panel_id == panel.id)
        .returning(table.c.person_id)
    ).all()
    ledger.queue_review(session, {row[0] for row in rows}, at)
    return len(rows)


def extend_memberships(
    session: Session, person: Person, expires_at: datetime, *, renewed_at: datetime | None = None
) -> None:
    """A renewed panel-contact consent restarts every active membership's two-year clock;
    ``renewed_at``, for a renewal the member asked for, is shown in their export.

    It runs on every panel-contact consent, so it is a prepared statement.
    """
    _EXTEND.run(
        session, {"person_id": person.id, "expires_at": expires_at, "renewed_at": renewed_at}
    )
    _expire_loaded(
        session,
        lambda state: state.dict.get("person_id") == person.id,
        ["expires_at", "renewed_at"],
    )


def _extend_statement(dialect: str) -> Any:
    table = PanelMembership.__table__
    return (
        update(table)
        .where(table.c.person_id == bindparam("person_id"), table.c.left_at.is_(None))
        .values(
            expires_at=bindparam("expires_at", type_=table.c.expires_at.type),
            renewed_at=func.coalesce(
                bindparam("renewed_at", type_=table.c.renewed_at.type), table.c.renewed_at
            ),
        )
    )


_EXTEND = Prepared(_extend_statement)


def delete_all_for_people(session: Session, person_ids: list[int]) -> int:
    """For erasure: remove memberships and everything hanging off them."""
    ids = list(
        session.exec(select(PanelMembership.id).where(among(PanelMembership.person_id, person_ids)))
    )
    _destroy_member_data(session, [i for i in ids if i is not None])
    session.execute(delete(PanelMembership).where(among(PanelMembership.person_id, person_ids)))
    return len(ids)


@dataclass
class ProfileInput:
    """What a member tells us when joining; special category answers are all optional."""

    postcode: str | None = None
    age_band: str | None = None
    children_count: int | None = None
    children_ages: list[int] = field(default_factory=list)
    services_used: list[str] = field(default_factory=list)
    special_category: dict[str, str] = field(default_factory=dict)


def clean_profile(profile: ProfileInput) -> dict[str, Any]:
    """Check every answer; raises InvalidInput naming the field, before anything is written."""
    opts = options()
    if profile.age_band is not None and profile.age_band not in opts.age_bands:
        raise InvalidInput("age_band", "Select your age group from the list.")
    if profile.children_count is not None and not 0 <= profile.children_count <= 20:
        raise InvalidInput("children_count", "Number of children must be between 0 and 20.")
    if len(profile.children_ages) > 20 or any(
        not isinstance(a, int) or not 0 <= a <= 25 for a in profile.children_ages
    ):
        raise InvalidInput("children_ages", "Enter each child's age as a number from 0 to 25.")
    unknown = [s for s in profile.services_used if s not in opts.family_hub_services]
    if unknown:
        raise InvalidInput("services_used", "Select the services you have used from the list.")
    special: dict[str, str] = {}
    for key, answer in profile.special_category.items():
        try:
            question = opts.special(key)
        except KeyError:
            raise InvalidInput(key, "That question is not one we ask.") from None
        if question.free_text:
            cleaned = clean_text(
                answer, field=key, label="your answer", max_length=500, multiline=True
            )
            if cleaned:
                special[key] = cleaned
        elif answer:
            if answer not in (*question.options, PREFER_NOT_TO_SAY):
                raise InvalidInput(key, "Select an answer from the list, or prefer not to say.")
            special[key] = answer
    return {
        "postcode": normalise_postcode(profile.postcode),
        "age_band": profile.age_band,
        "children_count": profile.children_count,
        "children_ages": ", ".join(str(a) for a in sorted(profile.children_ages)) or None,
        "services_used": json.dumps(sorted(set(profile.services_used)))
        if profile.services_used
        else None,
        "special_category": special,
    }


def create_panel(session: Session, *, name: str, family_hub: str, description: str) -> Panel:
    panel = Panel(
        name=clean_text(name, field="name", label="a panel name", required=True),
        family_hub=clean_text(
            family_hub, field="family_hub", label="the Family Hub", required=True
        ),
        description=clean_text(
            description,
            field="description",
            label="a description",
            max_length=TEXT_MAX,
            required=True,
            multiline=True,
        ),
    )
    session.add(panel)
    session.flush()
    return panel


def get_panel(session: Session, panel_id: int) -> Panel:
    if not isinstance(panel_id, int) or not 0 < panel_id <= 2**31 - 1:
        raise NotFound("We could not find that panel.")
    panel = session.get(Panel, panel_id)
    if panel is None:
        raise NotFound("We could not find that panel.")
    return panel


def join(
    session: Session,
    panel: Panel,
    person: Person,
    profile: ProfileInput,
    *,
    channel: str,
    actor: str,
    recordings: bool = False,
    shown: dict[str, Notice | None] | None = None,
    note: str | None = None,
    at: datetime | None = None,
) -> PanelMembership:
    """Join (or rejoin) a panel: records panel-contact consent and the member's profile.

    A member sending the form again updates their answers but is not counted as joining
    again: the counts go into the council's returns. ``shown`` holds the notice versions
    the person was shown, when known.
    """
    if _status_held(session, panel) != "open":
        raise Conflict("This panel is not taking new members.")
    cleaned = clean_profile(profile)
    at = at or utcnow()
    shown = shown or {}
    ledger.give(
        session,
        person,
        "panel_contact",
        channel=channel,
        actor=actor,
        notice=shown.get("panel_contact"),
        note=note,
        at=at,
    )
    if recordings:
        ledger.give(
            session,
            person,
            "panel_recordings",
            channel=channel,
            actor=actor,
            notice=shown.get("panel_recordings"),
            note=note,
            at=at,
        )
    state = ledger.get_state(session, person, notices.get_purpose(session, "panel_contact"))
    assert state is not None and state.expires_at is not None
    membership = session.exec(
        select(PanelMembership).where(
            PanelMembership.panel_id == panel.id, PanelMembership.person_id == person.id
        )
    ).first()
    joining = membership is None or membership.left_at is not None
    from consent.services import people

    people.forget_declined_invitations(session, person)
    if membership is None:
        membership = PanelMembership(
            panel_id=panel.id, person_id=person.id, joined_at=at, expires_at=state.expires_at
        )
        session.add(membership)
    elif membership.left_at is not None:
        membership.joined_at, membership.left_at, membership.left_reason = at, None, None
        membership.renewed_at, membership.data_destroyed_at = None, None
    membership.expires_at = state.expires_at
    session.flush()
    _save_profile(session, membership, cleaned)
    if joining:
        _count_join(session, panel, cleaned, at)
    return membership


def _status_held(session: Session, panel: Panel) -> str:
    """The panel's status as it is now, held until commit (``FOR SHARE``): a coordinator
    concluding the panel meanwhile waits, so the sweep that follows finds the new member,
    or the member finds the panel concluded."""
    table = Panel.__table__
    return session.execute(
        select(table.c.status).where(table.c.id == panel.id).with_for_update(read=True)
    ).scalar_one()


def _save_profile(session: Session, membership: PanelMembership, cleaned: dict[str, Any]) -> None:
    cipher = cipher_for(session)
    profile = session.exec(
        select(PanelProfile).where(PanelProfile.membership_id == membership.id)
    ).first()
    if profile is None:
        assert membership.id is not None
        profile = PanelProfile(membership_id=membership.id)
        session.add(profile)
    profile.postcode = cleaned["postcode"]
    profile.age_band = cleaned["age_band"]
    profile.children_count = cleaned["children_count"]
    profile.children_ages = cleaned["children_ages"]
    profile.services_used = cleaned["services_used"]
    profile.special_category = (
        cipher.encrypt_json(cleaned["special_category"]) if cleaned["special_category"] else None
    )
    profile.updated_at = utcnow()
    session.flush()


def _count_join(
    session: Session, panel: Panel, cleaned: dict[str, Any], at: datetime, by: int = 1
) -> None:
    """Anonymous counts for the diversity report, recorded now so erasure cannot change them."""
    scope = f"panel:{panel.id}"
    reports.count(session, "panel.joined", scope=scope, at=at, by=by)
    reports.count(
        session,
        "panel.joined",
        scope=scope,
        dimension="age_band",
        value=cleaned["age_band"] or "Not answered",
        at=at,
        by=by,
    )
    for question in options().special_category:
        if question.free_text:
            continue
        value = cleaned["special_category"].get(question.key, "Not answered")
        reports.count(
            session,
            "panel.joined",
            scope=scope,
            dimension=question.key,
            value=value,
            at=at,
            by=by,
        )


def count_imported_joins(session: Session, panel: Panel, number: int, at: datetime) -> None:
    """Members added from a spreadsheet answered nothing, so each breakdown of the report
    counts them as not answered and still adds up to the number who joined."""
    if number:
        _count_join(session, panel, {"age_band": None, "special_category": {}}, at, by=number)


def _refuse_if_concluded(panel: Panel, what: str) -> None:
    """A concluded panel's records are destroyed by the sweep, which never returns to it:
    anything written about it afterwards would be kept for ever."""
    if panel.status == "concluded":
        raise Conflict(f"This panel has concluded, so {what}.")


def create_session(
    session: Session,
    panel: Panel,
    *,
    title: str,
    starts_at: datetime,
    format: str,
    location: str | None = None,
    recorded: bool = False,
) -> PanelSession:
    _refuse_if_concluded(panel, "sessions cannot be added")
    if format not in ("online", "in_person", "hybrid"):
        raise InvalidInput("format", "Select whether the session is online, in person or both.")
    if starts_at.tzinfo is None:
        raise InvalidInput("starts_at", "Enter the date and time of the session.")
    check_meeting_date(starts_at, back=FURTHEST_BACK)
    item = PanelSession(
        panel_id=panel.id,
        title=clean_text(title, field="title", label="a title", required=True),
        starts_at=starts_at,
        format=format,
        location=clean_text(location, field="location", label="a location", max_length=300),
        recorded=recorded,
    )
    session.add(item)
    session.flush()
    return item


def conclude(session: Session, panel: Panel) -> Panel:
    """Close a panel for good. Members' data is destroyed by the next retention sweep."""
    if panel.status == "concluded":
        raise Conflict("This panel has already concluded.")
    panel.status = "concluded"
    panel.concluded_at = utcnow()
    session.flush()
    return panel


# ---- running a panel (coordinators) -------------------------------------------------------

PAGE_SIZE = 50


def update_panel(
    session: Session, panel: Panel, *, name: str, family_hub: str, description: str, status: str
) -> Panel:
    if panel.status == "concluded":
        raise Conflict("A concluded panel cannot be changed.")
    if status not in ("open", "closed"):
        raise InvalidInput("status", "Select whether the panel is taking new members.")
    panel.name = clean_text(name, field="name", label="a panel name", required=True) or panel.name
    panel.family_hub = (
        clean_text(family_hub, field="family_hub", label="the Family Hub", required=True)
        or panel.family_hub
    )
    panel.description = (
        clean_text(
            description,
            field="description",
            label="a description",
            max_length=TEXT_MAX,
            required=True,
            multiline=True,
        )
        or panel.description
    )
    panel.status = status
    session.flush()
    return panel


def all_panels(session: Session) -> list[Panel]:
    return list(session.exec(select(Panel).order_by(Panel.status, Panel.name)))


@dataclass(frozen=True)
class MemberRow:
    membership: PanelMembership
    person: Person
    profile: PanelProfile | None


def members(
    session: Session,
    panel: Panel,
    *,
    page: int = 1,
    age_band: str | None = None,
    service: str | None = None,
    current: bool = True,
) -> tuple[list[MemberRow], int]:
    """One page of a panel's members, with the total, filtered by age band or service used."""
    query = (
        select(PanelMembership, Person, PanelProfile)
        .join(Person, Person.id == PanelMembership.person_id)
        .outerjoin(PanelProfile, PanelProfile.membership_id == PanelMembership.id)
        .where(PanelMembership.panel_id == panel.id)
    )
    if current:
        query = query.where(PanelMembership.left_at.is_(None))
    if age_band:
        query = query.where(PanelProfile.age_band == age_band)
    if service:
        query = query.where(PanelProfile.services_used.contains(json.dumps(service)))
    total = session.execute(select(func.count()).select_from(query.subquery())).scalar_one()
    page = max(1, min(page, 10_000))
    rows = session.execute(
        query.order_by(PanelMembership.id).limit(PAGE_SIZE).offset((page - 1) * PAGE_SIZE)
    ).all()
    return [MemberRow(m, p, pr) for m, p, pr in rows], total


def diversity(
    session: Session, panel: Panel, *, special_category: bool
) -> dict[str, list[tuple[str, str]]]:
    """Current members' answers as counts per question, with counts under five suppressed.

    Individual answers are decrypted only in memory, to be counted. Live counts change
    by one as a named member joins or leaves, so comparing two views gives that member's
    answer away: special category answers are counted only for the data protection
    officer (``special_category``), as in the reports.
    """
    cipher = cipher_for(session)
    tallies: dict[str, Counter[str]] = {
        q.key: Counter() for q in options().special_category if not q.free_text
    }
    if not special_category:
        tallies = {}
    tallies["age_band"] = Counter()
    for profile in session.execute(
        select(PanelProfile)
        .join(PanelMembership, PanelMembership.id == PanelProfile.membership_id)
        .where(PanelMembership.panel_id == panel.id, PanelMembership.left_at.is_(None))
    ).scalars():
        tallies["age_band"][profile.age_band or "Not answered"] += 1
        if not special_category:
            continue
        answers = cipher.decrypt_json(profile.special_category) if profile.special_category else {}
        for key in tallies:
            if key != "age_band":
                tallies[key][answers.get(key, "Not answered")] += 1
    shown = {}
    for key, counter in tallies.items():
        answers = sorted(counter)
        counts = reports.shown_group([counter[answer] for answer in answers])
        shown[key] = list(zip(answers, counts, strict=True))
    return shown


def invite(session: Session, panel: Panel, *, email: str, name: str | None) -> Person:
    """Email someone a signed link to join; joining from it needs no second confirmation,
    because the link itself proves the address is theirs. They are kept while it works."""
    if panel.status != "open":
        raise Conflict("This panel is not taking new members.")
    from consent import links
    from consent.services import outbox, people

    person = people.find_or_create(session, email, name=name)
    # Read again now the person is locked: they may have declined while we waited.
    session.refresh(person, ["invitations_declined_at"])
    if people.declined_invitations(session, person):
        raise Conflict("This person asked not to be invited to panels, so they cannot be invited.")
    if _withdrew_panel_contact(session, person):
        raise Conflict(
            "This person asked us to stop contacting them about panels, so they cannot be "
            "invited. They can join again themselves from the panels page."
        )
    until = utcnow() + timedelta(seconds=settings_of(session).link_max_age["join"], hours=1)
    person.invited_until = max(person.invited_until or until, until)
    if person.review_at is not None and person.review_at < until:
        person.review_at = until
    join_url = links.url_for_session(session, person, "join", ref=panel.id)
    queued = outbox.queue(
        session,
        "panel_invitation",
        person=person,
        dedupe_key=f"invite:{panel.id}:{person.id}:{utcnow():%Y%m%d}",
        context={
            "name": person.name,
            "panel_name": panel.name,
            "family_hub": panel.family_hub,
            "join_url": join_url,
        },
    )
    if queued is None and people.is_suppressed(session, person.email or ""):
        raise Conflict("This person asked not to be contacted, so they cannot be invited.")
    return person


def _withdrew_panel_contact(session: Session, person: Person) -> bool:
    """A member who withdrew panel contact opted out of being contacted about panels at all;
    only their own fresh agreement (joining again) lifts that."""
    if person.id is None:
        return False
    state = ledger.get_state(session, person, notices.get_purpose(session, ledger.PANEL_CONTACT))
    return state is not None and state.status == "withdrawn"


#: How the invitation says where a session is when no place was given.
FORMAT_WORDS = {"online": "Online", "in_person": "In person", "hybrid": "In person and online"}


def invite_to_session(session: Session, panel_session: PanelSession) -> int:
    """Email every current member (panel contact ends a membership when it ends) about a
    session still to come; returns how many were newly queued. Each member is invited once
    per session, so pressing again only reaches members who joined since.

    The memberships are held until the invitations are committed, as the reminder jobs hold
    theirs, but a member leaving at that moment is waited for, not passed over: the
    coordinator expects everyone still on the panel to be invited. A membership past its
    two-year limit is no longer one, though the hourly sweep may not have ended it yet."""
    from consent.services import outbox

    panel = session.get(Panel, panel_session.panel_id)
    assert panel is not None
    _refuse_if_concluded(panel, "its members cannot be invited")
    if panel_session.starts_at <= utcnow():
        raise Conflict("This session has already started, so invitations cannot be sent.")
    where = panel_session.location or FORMAT_WORDS.get(panel_session.format, "")
    rows = session.execute(
        select(PanelMembership.id, Person)
        .join(Person, Person.id == PanelMembership.person_id)
        .where(
            PanelMembership.panel_id == panel.id,
            PanelMembership.left_at.is_(None),
            PanelMembership.expires_at > utcnow(),
            Person.erased_at.is_(None),
        )
        .order_by(PanelMembership.id)
        .with_for_update(read=True, of=PanelMembership)
    ).all()
    recorded_ok = set(
        session.execute(
            select(ConsentState.person_id)
            .join(Purpose, Purpose.id == ConsentState.purpose_id)
            .where(
                Purpose.key == ledger.RECORDINGS,
                ConsentState.status == "given",
                among(ConsentState.person_id, [person.id for _, person in rows]),
            )
        ).scalars()
    )
    queued = 0
    for membership_id, person in rows:
        queued += (
            outbox.queue(
                session,
                "panel_session_invitation",
                person=person,
                dedupe_key=f"session-invitation:{panel_session.id}:{membership_id}",
                membership_id=membership_id,
                context={
                    "name": person.name,
                    "panel_name": panel.name,
                    "family_hub": panel.family_hub,
                    "session_title": panel_session.title,
                    "session_when": london_datetime(panel_session.starts_at),
                    "session_where": where,
                    "session_recorded": panel_session.recorded,
                    "recording_consent": person.id in recorded_ok,
                },
            )
            is not None
        )
    return queued


def sessions_of(session: Session, panel: Panel) -> list[PanelSession]:
    return list(
        session.exec(
            select(PanelSession)
            .where(PanelSession.panel_id == panel.id)
            .order_by(PanelSession.starts_at.desc())
        )
    )


def get_session(session: Session, session_id: int) -> PanelSession:
    if not isinstance(session_id, int) or not 0 < session_id <= 2**31 - 1:
        raise NotFound("We could not find that session.")
    found = session.get(PanelSession, session_id)
    if found is None:
        raise NotFound("We could not find that session.")
    return found


def attendance(
    session: Session, panel_session: PanelSession
) -> list[tuple[MemberRow, Attendance | None]]:
    rows = session.execute(
        select(PanelMembership, Person, Attendance)
        .join(Person, Person.id == PanelMembership.person_id)
        .outerjoin(
            Attendance,
            (Attendance.membership_id == PanelMembership.id)
            & (Attendance.session_id == panel_session.id),
        )
        .where(
            PanelMembership.panel_id == panel_session.panel_id, PanelMembership.left_at.is_(None)
        )
        .order_by(Person.name)
    ).all()
    return [(MemberRow(m, p, None), a) for m, p, a in rows]


def record_attendance(
    session: Session,
    panel_session: PanelSession,
    membership_id: int,
    *,
    attended: bool,
    recording_consent: bool,
) -> Attendance:
    """Whether a member came, and whether they agreed to this session being recorded (which
    needs their standing agreement to recordings). Both wait until the session has started,
    as a workshop's register does: an agreement ticked weeks ahead could outlast a change
    of mind."""
    membership = (
        session.get(PanelMembership, membership_id) if isinstance(membership_id, int) else None
    )
    if membership is None or membership.panel_id != panel_session.panel_id or membership.left_at:
        raise NotFound("That person is not a member of this panel.")
    panel = session.get(Panel, panel_session.panel_id)
    assert panel is not None
    _refuse_if_concluded(panel, "attendance is no longer kept")
    if panel_session.starts_at > utcnow():
        raise Conflict("You can record who came once the session has started.")
    if recording_consent:
        person = loading.person_by_id.get(session, membership.person_id)
        assert person is not None
        if not ledger.has_consent(session, person, "panel_recordings"):
            raise InvalidInput(
                "recording_consent",
                "They have not agreed to recordings. Record "
                "their agreement on their page first, with a note.",
            )
    row = session.execute(
        select(Attendance).where(
            Attendance.session_id == panel_session.id, Attendance.membership_id == membership.id
        )
    ).scalar()
    if row is None:
        row = Attendance(session_id=panel_session.id, membership_id=membership.id)
        session.add(row)
    row.attended = attended
    if recording_consent and not row.recording_consent:
        row.recording_consent_at = utcnow()
    row.recording_consent = recording_consent
    session.flush()
    return row


def add_note(
    session: Session,
    panel_session: PanelSession,
    text: str,
    *,
    author_id: int,
    membership_id: int | None = None,
) -> SessionNote:
    """A coordinator's note, stored encrypted; about one member if ``membership_id`` is given."""
    cleaned = clean_text(
        text, field="note", label="a note", max_length=TEXT_MAX, required=True, multiline=True
    )
    assert cleaned is not None
    panel = session.get(Panel, panel_session.panel_id)
    assert panel is not None
    _refuse_if_concluded(panel, "notes are no longer kept")
    if membership_id is not None:
        membership = session.get(PanelMembership, membership_id)
        if membership is None or membership.panel_id != panel_session.panel_id:
            raise NotFound("That person is not a member of this panel.")
        if membership.left_at is not None:
            raise NotFound("That person has left this panel, so notes about them are not kept.")
    note = SessionNote(
        session_id=panel_session.id,
        membership_id=membership_id,
        author_id=author_id,
        text=cipher_for(session).encrypt(cleaned),
    )
    session.add(note)
    session.flush()
    return note


def notes_of(session: Session, panel_session: PanelSession) -> list[tuple[SessionNote, str]]:
    cipher = cipher_for(session)
    return [
        (note, cipher.decrypt(note.text))
        for note in session.exec(
            select(SessionNote)
            .where(SessionNote.session_id == panel_session.id)
            .order_by(SessionNote.created_at)
        )
    ]
