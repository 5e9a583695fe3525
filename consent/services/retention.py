"""The retention sweep: the council's promises about keeping data, kept without anyone
remembering.

- panel consent older than two years and not renewed: ``expired`` in the ledger, then the
  member's profile, special category answers, attendance and notes are destroyed;
- panel contact withdrawn: the same (done at once on withdrawal; the sweep catches any
  membership that was missed);
- a panel concluded: every member's panel data destroyed;
- workshop attendee details removed a set time after the workshop (30 days, as the notice
  promises), whether or not a coordinator has closed its evaluation;
- people left with no consent, membership, booking, pending sign-up or open rights
  request: erased, and those who opted out join the suppression list;
- mail bodies past their keep time, unconfirmed sign-ups past their link, uploaded
  import files nobody confirmed within a day, and requests for a new link the mailer has
  not answered within an hour, removed.

Work goes in batches of bounded size, each in its own transaction, so killing the process
at any moment leaves nothing half done and the next run finishes the job. Counts for
reports were recorded when things happened, so nothing here changes a report. Each run
writes a ``RetentionRun`` row; a dry run changes nothing and lists what would go.
"""

from __future__ import annotations

import json
import time
from collections import Counter
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from typing import Any

from sqlalchemy import Select, and_, case, delete, func, or_, select, update
from sqlmodel import Session

from consent.db import Database, among, is_postgres
from consent.models import (
    Booking,
    ConsentState,
    JobRun,
    Panel,
    PanelMembership,
    PanelSession,
    PendingSignup,
    Person,
    Purpose,
    RetentionRun,
    RightsRequest,
    SessionNote,
    Workshop,
)
from consent.services import (
    imports,
    ledger,
    link_requests,
    outbox,
    panels,
    people,
    signups,
    workshops,
)
from consent.timeutil import to_london, utcnow
from consent.validation import without_addresses

#: How far back to look for withdrawals whose memberships might have been missed.
MISSED_LOOKBACK = timedelta(days=2)

#: The consents that exist only for panels, which end when a member's last panel does.
PANEL_KEYS = (ledger.PANEL_CONTACT, ledger.RECORDINGS)

#: How long the record of each background job run is kept: long enough to look into a
#: problem, short enough that a job every minute does not grow the table without end.
JOB_RUN_KEEP = timedelta(days=90)


@dataclass
class SweepReport:
    started_at: datetime
    dry_run: bool
    removed: Counter[str] = field(default_factory=Counter)
    would: list[str] = field(default_factory=list)
    error: str | None = None
    seconds: float = 0.0
    run_id: int | None = None

    def as_dict(self) -> dict[str, int]:
        return dict(sorted(self.removed.items()))


Step = Callable[[Database, SweepReport, datetime, int], None]


def sweep(
    database: Database,
    *,
    dry_run: bool = False,
    now: datetime | None = None,
    batch_size: int | None = None,
    trigger: str = "schedule",
) -> SweepReport:
    """Run every retention step; returns what was removed (or, dry, what would be)."""
    now = now or utcnow()
    batch = batch_size or database.settings.retention_batch_size
    report = SweepReport(started_at=now, dry_run=dry_run)
    started = time.perf_counter()
    if not dry_run:
        with database.transaction() as session:
            run = RetentionRun(started_at=now, dry_run=False, trigger=trigger)
            session.add(run)
            session.flush()
            report.run_id = run.id
    steps: list[Step] = [
        _forget_unconfirmed_addresses,
        _expire_consents,
        _end_expired_memberships,
        _end_memberships_without_consent,
        _destroy_concluded_panels,
        _purge_workshop_details,
        _purge_pending_signups,
        _erase_people,
        _purge_mail_bodies,
        _remove_abandoned_uploads,
        _trim_job_runs,
        _drop_stale_link_requests,
    ]
    try:
        for step in steps:
            step(database, report, now, batch)
    except Exception as exc:
        report.error = without_addresses(f"{type(exc).__name__}: {exc}")[:2000]
        raise
    finally:
        report.seconds = time.perf_counter() - started
        if report.run_id is not None:
            with database.transaction() as session:
                run = session.get(RetentionRun, report.run_id)
                assert run is not None
                run.finished_at = utcnow()
                run.duration_ms = int(report.seconds * 1000)
                run.removed = json.dumps(report.as_dict(), sort_keys=True)
                run.error = report.error
    return report


def _batches(database: Database, work: Callable[[Session], int]) -> int:
    """Repeat ``work`` in fresh transactions until a batch finds nothing to do."""
    total = 0
    while True:
        with database.transaction() as session:
            done = work(session)
        total += done
        if not done:
            return total


# ---- panel consents and memberships ------------------------------------------------------


def _expire_consents(database: Database, report: SweepReport, now: datetime, batch: int) -> None:
    state = ConsentState.__table__
    due = and_(state.c.status == "given", state.c.expires_at <= now)
    if report.dry_run:
        with database.reader() as session:
            rows = session.execute(
                select(Purpose.key, func.count())
                .join(state, state.c.purpose_id == Purpose.id)
                .where(due)
                .group_by(Purpose.key)
            ).all()
            recordings = _dependent_recordings(session, now)
        for key, number in rows:
            report.removed[f"consents_expired.{key}"] += number
            report.would.append(f"{number} {key} consent(s) past their time limit would expire")
        if recordings:
            report.removed[f"consents_expired.{ledger.RECORDINGS}"] += recordings
            report.would.append(
                f"{recordings} {ledger.RECORDINGS} consent(s) would expire with panel contact"
            )
        return

    after = 0

    def work(session: Session) -> int:
        nonlocal after
        expired = ledger.expire_many(session, now=now, limit=batch, after=after, review=False)
        for _, key in expired:
            report.removed[f"consents_expired.{key}"] += 1
        touched = sorted({person_id for person_id, _ in expired})
        _erase_unheld(session, report, touched, now)
        after = touched[-1] if touched else after
        return len(expired)

    _batches(database, work)


def _contact_running_out(now: datetime) -> Select:
    """People whose panel-contact consent the first step expires, which ends their
    memberships and their recordings consent with it."""
    state = ConsentState.__table__
    return (
        select(state.c.person_id)
        .join(Purpose, Purpose.id == state.c.purpose_id)
        .where(
            Purpose.key == ledger.PANEL_CONTACT,
            state.c.status == "given",
            state.c.expires_at <= now,
        )
    )


def _dependent_recordings(session: Session, now: datetime) -> int:
    """Recordings consents still within their own limit that go with a panel contact
    running out: a dry run counts them, as the first step expires them."""
    state = ConsentState.__table__
    return session.execute(
        select(func.count())
        .select_from(state)
        .join(Purpose, Purpose.id == state.c.purpose_id)
        .where(
            Purpose.key == ledger.RECORDINGS,
            state.c.status == "given",
            or_(state.c.expires_at.is_(None), state.c.expires_at > now),
            state.c.person_id.in_(_contact_running_out(now)),
        )
    ).scalar_one()


def _people_of(select_ids: Select) -> Select:
    return select(select_ids.subquery().c.person_id)


def _end_memberships(
    database: Database,
    report: SweepReport,
    now: datetime,
    batch: int,
    select_ids: Select,
    reason: str,
    label: str,
    ended_before: Sequence[Select] = (),
) -> None:
    """End the memberships a query finds, a batch at a time, destroying their panel data.

    Every active membership of the people found ends, as ``panels.end_memberships_of``
    does; a dry run leaves out people whose memberships the earlier steps end.
    """
    if report.dry_run:
        member = PanelMembership.__table__
        with database.reader() as session:
            number = session.execute(
                select(func.count()).where(
                    member.c.left_at.is_(None),
                    member.c.person_id.in_(_people_of(select_ids)),
                    *(member.c.person_id.not_in(people) for people in ended_before),
                )
            ).scalar_one()
        if number:
            report.removed[label] += number
            report.would.append(f"{number} panel membership(s) would end: {reason}")
        return

    def work(session: Session) -> int:
        rows = session.execute(select_ids.limit(batch)).all()
        if not rows:
            return 0
        by_person = sorted({row[1] for row in rows})
        report.removed[label] += panels.end_memberships_of(
            session, by_person, reason=reason, at=now
        )
        return len(rows)

    _batches(database, work)


def _expired_memberships(now: datetime) -> Select:
    member = PanelMembership.__table__
    return select(member.c.id, member.c.person_id).where(
        member.c.left_at.is_(None), member.c.expires_at <= now
    )


def _end_expired_memberships(
    database: Database, report: SweepReport, now: datetime, batch: int
) -> None:
    _end_memberships(
        database,
        report,
        now,
        batch,
        _expired_memberships(now),
        "expired",
        "memberships_expired",
        ended_before=[_contact_running_out(now)],
    )


def _memberships_without_consent(session: Session, now: datetime) -> Select:
    """Memberships that outlived a panel-contact consent ended (withdrawn, or expired)
    since shortly before the last finished run."""
    member, state = PanelMembership.__table__, ConsentState.__table__
    contact = session.execute(
        select(Purpose.id).where(Purpose.key == ledger.PANEL_CONTACT)
    ).scalar()
    last = session.execute(
        select(func.max(RetentionRun.started_at)).where(
            RetentionRun.finished_at.is_not(None), RetentionRun.error.is_(None)
        )
    ).scalar()
    since = (last - MISSED_LOOKBACK) if last else datetime(1970, 1, 1, tzinfo=now.tzinfo)
    return (
        select(member.c.id, member.c.person_id)
        .join(
            state,
            and_(state.c.person_id == member.c.person_id, state.c.purpose_id == contact),
        )
        .where(
            state.c.status.in_(("withdrawn", "expired")),
            state.c.changed_at >= since,
            member.c.left_at.is_(None),
        )
    )


def _end_memberships_without_consent(
    database: Database, report: SweepReport, now: datetime, batch: int
) -> None:
    """A membership outlived its panel-contact consent: end it now (a safety net), for the
    reason the consent ended, since a consent that ran out is no opt-out and keeps answers
    sent to stay on."""
    with database.reader() as session:
        ended = _memberships_without_consent(session, now)
    ended_before = [_contact_running_out(now), _people_of(_expired_memberships(now))]
    for status in ("withdrawn", "expired"):
        _end_memberships(
            database,
            report,
            now,
            batch,
            ended.where(ConsentState.__table__.c.status == status),
            status,
            "memberships_without_consent",
            ended_before=ended_before,
        )


def _concluding_panels(session: Session) -> list[int]:
    """Panels concluded by a coordinator whose data the sweep has still to destroy."""
    return list(
        session.execute(
            select(Panel.id).where(Panel.status == "concluded", Panel.data_destroyed_at.is_(None))
        ).scalars()
    )


def _destroy_concluded_panels(
    database: Database, report: SweepReport, now: datetime, batch: int
) -> None:
    """A concluded panel: end every membership, destroy its data (and answers sent to join
    it, never to be confirmed), and end the panel-contact consent of members who are on no
    other panel, since there is nothing left to contact them about."""
    with database.reader() as session:
        concluded = _concluding_panels(session)
    if report.dry_run:
        _foretell_concluded_panels(database, report, now, concluded)
        return
    member = PanelMembership.__table__
    for panel_id in concluded:

        def work(session: Session, panel_id: int = panel_id) -> int:
            people_ids = list(
                session.execute(
                    select(member.c.person_id)
                    .where(member.c.panel_id == panel_id, member.c.left_at.is_(None))
                    .limit(batch)
                ).scalars()
            )
            if not people_ids:
                return 0
            ended = panels.end_memberships_of(
                session, people_ids, reason="panel_concluded", at=now, panel_id=panel_id
            )
            still_members = set(
                session.execute(
                    select(member.c.person_id).where(
                        among(member.c.person_id, people_ids), member.c.left_at.is_(None)
                    )
                ).scalars()
            )
            free = [p for p in people_ids if p not in still_members]
            for _, key in ledger.expire_many(
                session,
                now=now,
                limit=batch,
                person_ids=free,
                purpose_keys=PANEL_KEYS,
                actor="system:panel-concluded",
            ):
                report.removed[f"consents_expired.{key}"] += 1
            report.removed["memberships_panel_concluded"] += ended
            return len(people_ids)

        _batches(database, work)
        with database.transaction() as session:
            if not _claim(session, Panel, panel_id, "data_destroyed_at", now):
                continue
            panel = session.get(Panel, panel_id)
            assert panel is not None
            report.removed["session_notes_destroyed"] += panels.destroy_session_notes(
                session, panel
            )
            report.removed["pending_signups_purged"] += panels.forget_sign_ups(session, panel, now)
        report.removed["panels_concluded"] += 1


def _foretell_concluded_panels(
    database: Database, report: SweepReport, now: datetime, concluded: list[int]
) -> None:
    """What ``_destroy_concluded_panels`` will do, after the steps before it: the members
    still there leave, notes not about one of them go, answers sent to join go, and those
    on no other panel lose their panel consents."""
    member, state = PanelMembership.__table__, ConsentState.__table__
    note, meeting = SessionNote.__table__, PanelSession.__table__
    with database.reader() as session:
        ended_before = [
            _contact_running_out(now),
            _people_of(_expired_memberships(now)),
            _people_of(_memberships_without_consent(session, now)),
        ]
        staying = and_(
            member.c.left_at.is_(None),
            *(member.c.person_id.not_in(people) for people in ended_before),
        )
        for panel_id in concluded:
            number = session.execute(
                select(func.count()).where(staying, member.c.panel_id == panel_id)
            ).scalar_one()
            notes = session.execute(
                select(func.count())
                .select_from(note)
                .join(meeting, meeting.c.id == note.c.session_id)
                .where(
                    meeting.c.panel_id == panel_id,
                    or_(
                        note.c.membership_id.is_(None),
                        note.c.membership_id.not_in(select(member.c.id).where(staying)),
                    ),
                )
            ).scalar_one()
            waiting = session.execute(
                select(func.count()).where(
                    PendingSignup.kind == "panel", PendingSignup.panel_id == panel_id
                )
            ).scalar_one()
            report.removed["memberships_panel_concluded"] += number
            report.removed["session_notes_destroyed"] += notes
            report.removed["pending_signups_purged"] += waiting
            report.removed["panels_concluded"] += 1
            report.would.append(f"panel {panel_id} concluded: {number} membership(s) would end")
        if not concluded:
            return
        leaving = select(member.c.person_id).where(staying, member.c.panel_id.in_(concluded))
        elsewhere = select(member.c.person_id).where(staying, member.c.panel_id.not_in(concluded))
        rows = session.execute(
            select(Purpose.key, func.count())
            .join(state, state.c.purpose_id == Purpose.id)
            .where(
                Purpose.key.in_(PANEL_KEYS),
                state.c.status == "given",
                state.c.person_id.in_(leaving),
                state.c.person_id.not_in(elsewhere),
            )
            .group_by(Purpose.key)
        ).all()
    for key, number in rows:
        report.removed[f"consents_expired.{key}"] += number
        report.would.append(f"{number} {key} consent(s) would end with their panel")


def _claim(session: Session, model: type, row_id: int, done: str, now: datetime) -> bool:
    """Mark one panel or workshop done, unless an overlapping sweep got there first."""
    table = model.__table__  # type: ignore[attr-defined]
    column = table.c[done]
    claimed = session.execute(
        update(table)
        .where(table.c.id == row_id, column.is_(None))
        .values({done: now})
        .returning(table.c.id)
    ).first()
    return claimed is not None


# ---- workshops, sign-ups, mail ------------------------------------------------------------


def _workshops_to_purge(session: Session, database: Database, now: datetime) -> list[int]:
    """Workshops whose bookers' details are still held but no longer needed: those past
    their keep time, and cancelled ones once everyone booked has been told."""
    kept_since = now - timedelta(days=database.settings.workshop_keep_days)
    rows = session.execute(
        select(Workshop.id, Workshop.ends_at).where(
            Workshop.details_purged_at.is_(None),
            or_(Workshop.ends_at <= kept_since, Workshop.status == "cancelled"),
        )
    ).all()
    if all(ends_at <= kept_since for _, ends_at in rows):
        return [workshop_id for workshop_id, _ in rows]
    telling = workshops.cancellations_waiting(session)
    return [
        workshop_id
        for workshop_id, ends_at in rows
        if ends_at <= kept_since or workshop_id not in telling
    ]


def _purge_workshop_details(
    database: Database, report: SweepReport, now: datetime, batch: int
) -> None:
    with database.reader() as session:
        due = _workshops_to_purge(session, database, now)
    booking = Booking.__table__
    for workshop_id in due:
        if report.dry_run:
            with database.reader() as session:
                number = session.execute(
                    select(func.count()).where(
                        booking.c.workshop_id == workshop_id, booking.c.purged_at.is_(None)
                    )
                ).scalar_one()
            report.removed["bookings_purged"] += number
            report.would.append(f"workshop {workshop_id}: {number} booking(s) would be purged")
            continue

        def work(session: Session, workshop_id: int = workshop_id) -> int:
            rows = session.execute(
                select(booking.c.id, booking.c.person_id)
                .where(booking.c.workshop_id == workshop_id, booking.c.purged_at.is_(None))
                .limit(batch)
            ).all()
            if not rows:
                return 0
            purged = set(
                session.execute(
                    update(booking)
                    .where(among(booking.c.id, [r[0] for r in rows]), booking.c.purged_at.is_(None))
                    .values(
                        name=None,
                        email=None,
                        setting=None,
                        district=None,
                        job_role=None,
                        evaluation=None,
                        person_id=None,
                        purged_at=now,
                    )
                    .returning(booking.c.id)
                ).scalars()
            )
            ledger.queue_review(
                session, {r[1] for r in rows if r[1] is not None and r[0] in purged}, now
            )
            report.removed["bookings_purged"] += len(purged)
            return len(rows)

        _batches(database, work)
        with database.transaction() as session:
            _claim(session, Workshop, workshop_id, "details_purged_at", now)


def _purge_pending_signups(
    database: Database, report: SweepReport, now: datetime, batch: int
) -> None:
    if report.dry_run:
        with database.reader() as session:
            lapsed = select(func.count()).where(PendingSignup.expires_at < now)
            concluded = _concluding_panels(session)
            if concluded:
                # Those go with their concluded panel, a step earlier, and are counted there.
                lapsed = lapsed.where(
                    or_(
                        PendingSignup.panel_id.is_(None),
                        PendingSignup.panel_id.not_in(concluded),
                    )
                )
            number = session.execute(lapsed).scalar_one()
        if number:
            report.removed["pending_signups_purged"] += number
            report.would.append(f"{number} unconfirmed or used sign-up(s) would be removed")
        return
    report.removed["pending_signups_purged"] += _batches(
        database, lambda session: signups.purge_expired(session, now=now, limit=batch)
    )


def _purge_mail_bodies(database: Database, report: SweepReport, now: datetime, batch: int) -> None:
    keep = timedelta(days=database.settings.mail_body_keep_days)
    if report.dry_run:
        with database.reader() as session:
            number = outbox.bodies_to_purge(session, keep=keep, now=now)
        if number:
            report.removed["mail_bodies_purged"] += number
            report.would.append(f"{number} sent email(s) would have their body and address removed")
        return
    report.removed["mail_bodies_purged"] += _batches(
        database, lambda session: outbox.purge_bodies(session, keep=keep, now=now, limit=batch)
    )


def _trim_job_runs(database: Database, report: SweepReport, now: datetime, batch: int) -> None:
    old = JobRun.__table__.c.started_at < now - JOB_RUN_KEEP
    if report.dry_run:
        with database.reader() as session:
            number = session.execute(select(func.count()).where(old)).scalar_one()
        if number:
            report.removed["job_runs_removed"] += number
            report.would.append(f"{number} record(s) of background job runs would be removed")
        return

    def trim(session: Session) -> int:
        table = JobRun.__table__
        ids = select(table.c.id).where(old).order_by(table.c.id).limit(batch)
        return session.execute(delete(table).where(table.c.id.in_(ids))).rowcount or 0

    report.removed["job_runs_removed"] += _batches(database, trim)


def _drop_stale_link_requests(
    database: Database, report: SweepReport, now: datetime, batch: int
) -> None:
    _at_once(
        database,
        report,
        "link_requests_dropped",
        "{} unanswered request(s) for a new link would go",
        due=lambda session: link_requests.stale(now),
        remove=lambda session: link_requests.purge_stale(session, now),
    )


def _forget_unconfirmed_addresses(
    database: Database, report: SweepReport, now: datetime, batch: int
) -> None:
    _at_once(
        database,
        report,
        "new_addresses_forgotten",
        "{} new email address(es) never confirmed would go",
        due=lambda session: people.unconfirmed_addresses(session, now),
        remove=lambda session: people.forget_unconfirmed_addresses(session, now),
    )


def _at_once(
    database: Database,
    report: SweepReport,
    key: str,
    would: str,
    *,
    due: Callable[[Session], Any],
    remove: Callable[[Session], int],
) -> None:
    """A step that removes in one statement the few rows ``due`` finds; a dry run counts
    them with the same condition, so the two cannot disagree."""
    if report.dry_run:
        with database.reader() as session:
            number = session.execute(select(func.count()).where(due(session))).scalar_one()
        if number:
            report.removed[key] += number
            report.would.append(would.format(number))
        return
    with database.transaction() as session:
        report.removed[key] += remove(session)


def _remove_abandoned_uploads(
    database: Database, report: SweepReport, now: datetime, batch: int
) -> None:
    instance = database.settings.instance_path
    number = imports.remove_abandoned_uploads(instance, now, dry_run=report.dry_run)
    report.removed["import_files_removed"] += number
    if report.dry_run and number:
        report.would.append(f"{number} abandoned import file(s) would be removed")


# ---- people -------------------------------------------------------------------------------


@dataclass(frozen=True)
class Ending:
    """What a dry run knows the sweep's earlier steps will end before it looks at people."""

    panels: Sequence[int] = ()
    workshops: Sequence[int] = ()
    #: The first step expires panel contact past its limit, and recordings consent with it.
    contact_running_out: bool = False


def holders(
    session: Session, person_ids: list[int], now: datetime, ending: Ending = Ending()
) -> set[int]:
    """Which of these people we still have a reason to hold: consent, panel, booking, sign-up,
    a panel invitation whose link still works, or an open rights request (an access request
    must not be answered with 'nothing held').

    A consent or membership past its time limit is no reason: the sweep ends them first,
    and a dry run, which ends nothing, must see the same. For the same reason a dry run
    says what is ``ending``: concluded panels, whose memberships the sweep ends first along
    with the panel consents of members on no other panel and the answers sent to join them,
    and workshops whose bookings it purges first, and whether the first step is still to
    expire panel contact past its limit, which takes a recordings consent within its own
    limit with it.
    """
    state, member = ConsentState.__table__, PanelMembership.__table__
    booking, pending = Booking.__table__, PendingSignup.__table__
    request = RightsRequest.__table__
    live_membership = and_(member.c.left_at.is_(None), member.c.expires_at > now)
    consents = select(state.c.person_id).where(
        among(state.c.person_id, person_ids),
        state.c.status == "given",
        or_(state.c.expires_at.is_(None), state.c.expires_at > now),
    )
    memberships = select(member.c.person_id).where(
        among(member.c.person_id, person_ids), live_membership
    )
    bookings = select(booking.c.person_id).where(
        among(booking.c.person_id, person_ids), booking.c.purged_at.is_(None)
    )
    if ending.workshops:
        bookings = bookings.where(booking.c.workshop_id.not_in(ending.workshops))
    if ending.contact_running_out:
        recordings = select(Purpose.id).where(Purpose.key == ledger.RECORDINGS)
        consents = consents.where(
            or_(
                state.c.purpose_id.not_in(recordings),
                state.c.person_id.not_in(_contact_running_out(now)),
            )
        )
    if ending.panels:
        panel_keys = select(Purpose.id).where(Purpose.key.in_(PANEL_KEYS))
        leaving = select(member.c.person_id).where(
            member.c.left_at.is_(None), member.c.panel_id.in_(ending.panels)
        )
        staying = select(member.c.person_id).where(
            live_membership, member.c.panel_id.not_in(ending.panels)
        )
        consents = consents.where(
            or_(
                state.c.purpose_id.not_in(panel_keys),
                state.c.person_id.not_in(leaving),
                state.c.person_id.in_(staying),
            )
        )
        memberships = memberships.where(member.c.panel_id.not_in(ending.panels))
    waiting = select(pending.c.person_id).where(
        among(pending.c.person_id, person_ids),
        pending.c.expires_at > now,
        pending.c.confirmed_at.is_(None),
    )
    if ending.panels:
        waiting = waiting.where(
            or_(pending.c.panel_id.is_(None), pending.c.panel_id.not_in(ending.panels))
        )
    person = Person.__table__
    held: set[int] = set()
    for query in (
        select(person.c.id).where(among(person.c.id, person_ids), person.c.invited_until > now),
        consents,
        memberships,
        bookings,
        waiting,
        select(request.c.person_id).where(
            among(request.c.person_id, person_ids), request.c.status == "open"
        ),
    ):
        held.update(session.execute(query).scalars())
    return held


def _erase_people(database: Database, report: SweepReport, now: datetime, batch: int) -> None:
    person = Person.__table__
    due = and_(person.c.review_at <= now, person.c.erased_at.is_(None))

    def candidates(session: Session) -> list[int]:
        return list(
            session.execute(
                select(person.c.id).where(due).order_by(person.c.review_at).limit(batch)
            ).scalars()
        )

    if report.dry_run:
        state, member = ConsentState.__table__, PanelMembership.__table__
        booking = Booking.__table__
        running_out = select(state.c.person_id).where(
            state.c.status == "given", state.c.expires_at <= now
        )
        with database.reader() as session:
            ending = Ending(
                _concluding_panels(session),
                _workshops_to_purge(session, database, now),
                contact_running_out=True,
            )
            leaving = select(member.c.person_id).where(
                member.c.panel_id.in_(ending.panels), member.c.left_at.is_(None)
            )
            booked = select(booking.c.person_id).where(
                booking.c.workshop_id.in_(ending.workshops), booking.c.purged_at.is_(None)
            )
            asked = select(PendingSignup.person_id).where(PendingSignup.panel_id.in_(ending.panels))
            due_or_running_out = and_(
                person.c.erased_at.is_(None),
                or_(
                    person.c.review_at <= now,
                    person.c.id.in_(running_out),
                    person.c.id.in_(leaving),
                    person.c.id.in_(booked),
                    person.c.id.in_(asked),
                ),
            )
            after = 0
            while True:
                ids = list(
                    session.execute(
                        select(person.c.id)
                        .where(due_or_running_out, person.c.id > after)
                        .order_by(person.c.id)
                        .limit(batch)
                    ).scalars()
                )
                if not ids:
                    break
                held = holders(session, ids, now, ending)
                for person_id in ids:
                    if person_id not in held:
                        report.would.append(f"person {person_id} would be erased: nothing held")
                        report.removed["people_erased"] += 1
                after = ids[-1]
        return

    def work(session: Session) -> int:
        ids = candidates(session)
        _erase_unheld(session, report, ids, now)
        return len(ids)

    _batches(database, work)


def _erase_unheld(session: Session, report: SweepReport, ids: list[int], now: datetime) -> None:
    """Erase those of these people we no longer hold for anything; stop reviewing the rest.

    The expiry step calls this in its own transaction, so a member whose consent ran out is
    erased in the same write as the expiry: one commit, and each row rewritten once. The
    people are locked before anything is decided, so a consent, sign-up or booking being
    written for one of them at that moment is seen, not erased with them.
    """
    living = ledger.lock_people(session, ids) if ids else []
    if not living:
        return
    person, state = Person.__table__, ConsentState.__table__
    held = holders(session, living, now)
    if held:
        session.execute(
            update(person)
            .where(among(person.c.id, held))
            .values(
                review_at=case((person.c.invited_until > now, person.c.invited_until), else_=None)
            )
        )
    gone = [i for i in living if i not in held]
    if gone:
        opted_out = set(
            session.execute(
                select(state.c.person_id).where(
                    among(state.c.person_id, gone), state.c.status == "withdrawn"
                )
            ).scalars()
        )
        counts = people.scrub(session, gone, reason="nothing_held", suppress_ids=opted_out)
        report.removed["people_erased"] += counts["people"]


def upcoming(session: Session, now: datetime, within: timedelta) -> list[tuple[date, int]]:
    """Panel memberships reaching their two-year limit soon, per London day (as members see
    the date on their own pages): what the sweep will remove unless members renew.

    Counted per UTC hour in the database, since London is a whole number of hours ahead
    of UTC, and each hour put on its London day here.
    """
    member = PanelMembership.__table__
    if is_postgres(session):
        hour = func.date_trunc("hour", func.timezone("UTC", member.c.expires_at))
    else:
        hour = func.strftime("%Y-%m-%d %H:00:00", member.c.expires_at)
    rows = session.execute(
        select(hour, func.count())
        .where(member.c.left_at.is_(None), member.c.expires_at <= now + within)
        .group_by(hour)
    ).all()
    days: Counter[date] = Counter()
    for started, number in rows:
        moment = started if isinstance(started, datetime) else datetime.fromisoformat(started)
        days[to_london(moment.replace(tzinfo=UTC)).date()] += number
    return sorted(days.items())
