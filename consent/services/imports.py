"""Importing people who consented elsewhere (a paper form, an old spreadsheet), with the
evidence of their consent.

A file is checked row by row first (a preview), then imported all or nothing in one
transaction. Addresses on the suppression list are never imported as consenting: those
people opted out, and only they can agree again. The file is read as a stream, in chunks,
so a 100,000-row file does not have to fit in memory.

Columns: ``email``, ``consented_at`` (a date or date and time), ``evidence`` (how and where
they agreed), and optionally ``name`` and ``wording`` (the statement they agreed to).
"""

from __future__ import annotations

import csv
import itertools
import re
from collections.abc import Iterator
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, time, timedelta
from pathlib import Path

from sqlalchemy import insert, select
from sqlmodel import Session

from consent import loading
from consent.db import settings_of
from consent.errors import DomainError, InvalidInput
from consent.models import (
    AddressOptOut,
    ConsentState,
    Notice,
    Panel,
    PanelMembership,
    PanelProfile,
    Person,
    Suppression,
)
from consent.models.people import name_key, new_public_id
from consent.services import audit, ledger, mailchimp, notices, panels, people, reports
from consent.timeutil import LONDON, london_date, utcnow
from consent.validation import NOTE_MAX, clean_text, normalise_email

REQUIRED = ("email", "consented_at", "evidence")
OPTIONAL = ("name", "wording")
CHUNK = 1000
MAX_ROWS = 500_000
SHOWN = 200


class ImportRefused(DomainError):
    """The file as a whole cannot be used; the message says why and what to do."""


@dataclass
class RowResult:
    line: int
    outcome: str
    message: str


@dataclass
class Preview:
    total: int = 0
    to_import: int = 0
    already: int = 0
    suppressed: int = 0
    errors: int = 0
    rows: list[RowResult] = field(default_factory=list)
    problems: list[RowResult] = field(default_factory=list)

    @property
    def ok(self) -> bool:
        return self.errors == 0 and self.to_import > 0

    def add(self, result: RowResult) -> None:
        if result.outcome == "error":
            self.errors += 1
            if len(self.problems) < SHOWN:
                self.problems.append(result)
        elif len(self.rows) < SHOWN:
            self.rows.append(result)


@dataclass
class _Row:
    line: int
    email: str
    name: str | None
    at: datetime
    evidence: str
    wording: str | None


#: Line breaks as Python reads a file opened with ``newline=""``, which the csv module needs.
_BREAK = re.compile(r"\r\n|\r|\n")
#: The key under which a row with more values than columns carries the surplus.
SURPLUS = "\x00surplus"


def _read(path: Path) -> Iterator[tuple[int, dict[str, str]]]:
    """Each row with the line of the file it starts on, which a quoted value running over
    several lines or a blank line would otherwise put out of step."""
    try:
        handle = path.open(encoding="utf-8-sig", newline="")
    except OSError as exc:
        raise ImportRefused("The file could not be read.") from exc
    with handle:
        try:
            reader = csv.DictReader(handle)
            header = [h.strip().lower() for h in (reader.fieldnames or [])]
            missing = [c for c in REQUIRED if c not in header]
            if missing:
                raise ImportRefused(
                    f"The file must have the columns {', '.join(REQUIRED)}"
                    f" (and may have {', '.join(OPTIONAL)}). It is missing {', '.join(missing)}."
                )
            reader.fieldnames = header
            for count, record in enumerate(reader, start=1):
                if count > MAX_ROWS:
                    raise ImportRefused(f"The file has more than {MAX_ROWS:,} rows. Split it up.")
                surplus = record.pop(None, None)  # type: ignore[call-overload]
                values = {k: (v or "") for k, v in record.items()}
                breaks = sum(len(_BREAK.findall(v)) for v in [*values.values(), *(surplus or [])])
                if any(v.strip() for v in surplus or []):
                    values[SURPLUS] = "yes"
                yield reader.line_num - breaks, values
        except UnicodeDecodeError as exc:
            raise ImportRefused(
                "The file is not UTF-8 text. In Excel, save it as 'CSV UTF-8', then try again."
            ) from exc
        except csv.Error as exc:
            raise ImportRefused(f"The file is not a valid CSV file: {exc}.") from exc


#: How long an uploaded list may wait for its preview to be confirmed.
UPLOAD_KEEP = timedelta(hours=24)
#: The largest list the upload page takes.
UPLOAD_MAX = 50 * 1024 * 1024


def upload_folder(instance_path: Path) -> Path:
    """Where uploaded lists wait for their preview: personal data, so only this user may
    read it (the folder 0700, each file 0600)."""
    folder = instance_path / "imports"
    folder.mkdir(mode=0o700, parents=True, exist_ok=True)
    folder.chmod(0o700)
    return folder


def remove_abandoned_uploads(instance_path: Path, now: datetime, *, dry_run: bool = False) -> int:
    """Uploaded lists are personal data: one whose preview nobody confirmed goes after a day."""
    cutoff = (now - UPLOAD_KEEP).timestamp()
    removed = 0
    for path in upload_folder(instance_path).glob("*.csv"):
        try:
            if path.stat().st_mtime >= cutoff:
                continue
            if not dry_run:
                path.unlink()
        except FileNotFoundError:
            continue
        removed += 1
    return removed


def _parse_time(text: str, max_age_days: int | None, now: datetime) -> datetime:
    """A date alone counts from the start of that day in London: today's sheet is not in the
    future, and a withdrawal made the same day is taken to be the later of the two."""
    text = text.strip()
    try:
        if len(text) == 10:
            day = date.fromisoformat(text)
            moment = datetime.combine(day, time(0), tzinfo=LONDON)
        else:
            moment = datetime.fromisoformat(text)
            if moment.tzinfo is None:
                moment = moment.replace(tzinfo=LONDON)
        moment = moment.astimezone(UTC)
    except (ValueError, OverflowError):
        raise InvalidInput("consented_at", "Enter the date they agreed, like 2026-03-05.") from None
    if moment > now + timedelta(minutes=5):
        raise InvalidInput("consented_at", "The date they agreed is in the future.")
    if max_age_days and moment < now - timedelta(days=max_age_days):
        raise InvalidInput(
            "consented_at",
            "That agreement is older than this purpose allows, "
            "so it has run out. Ask them to agree again.",
        )
    return moment


def _check(number: int, record: dict[str, str], max_age: int | None, now: datetime) -> _Row:
    if SURPLUS in record:
        raise InvalidInput(
            "row",
            "This row has more values than the file has columns. Put any value that contains a "
            "comma in double quotes.",
        )
    email = normalise_email(record.get("email"))
    at = _parse_time(record.get("consented_at", ""), max_age, now)
    evidence = clean_text(
        record.get("evidence"),
        field="evidence",
        label="the evidence",
        max_length=NOTE_MAX,
        required=True,
        multiline=True,
    )
    name = clean_text(record.get("name"), field="name", label="the name")
    wording = clean_text(
        record.get("wording"), field="wording", label="the wording", max_length=2000, multiline=True
    )
    assert evidence is not None
    return _Row(number, email, name, at, evidence, wording)


def _batched(
    items: Iterator[tuple[int, dict[str, str]]], size: int
) -> Iterator[list[tuple[int, dict[str, str]]]]:
    while batch := list(itertools.islice(items, size)):
        yield batch


def _chunks(
    path: Path, max_age: int | None, now: datetime, preview: Preview
) -> Iterator[list[_Row]]:
    """Valid rows in chunks; invalid rows and repeats go straight into the preview."""
    seen: set[str] = set()
    for batch in _batched(_read(path), CHUNK):
        rows: list[_Row] = []
        for number, record in batch:
            preview.total += 1
            try:
                row = _check(number, record, max_age, now)
            except InvalidInput as error:
                where = "" if error.field == "row" else f"{error.field}: "
                preview.add(RowResult(number, "error", where + error.message))
                continue
            if row.email in seen:
                preview.add(RowResult(number, "error", "This address appears earlier in the file."))
                continue
            seen.add(row.email)
            rows.append(row)
        yield rows


@dataclass
class _Known:
    """What the database already says about the addresses in one chunk of the file."""

    existing: dict[str, Person]
    consenting: set[str]
    stopped: dict[str, datetime]
    suppressed: set[str]
    former: set[str]
    active_here: set[str] = field(default_factory=set)
    expires: dict[str, datetime | None] = field(default_factory=dict)


#: Why nothing was imported when someone on the list was erased as it was imported.
ERASED_MEANWHILE = (
    "Someone on the list was deleted while it was being imported, so nothing was "
    "imported. Upload the list again."
)


def _hold(session: Session, person_ids: list[int]) -> None:
    """Lock these people and read them again in the one statement, so what follows (and the
    writing of their agreements) sees their latest record."""
    if person_ids and len(ledger.lock_and_load(session, person_ids)) < len(person_ids):
        raise ImportRefused(ERASED_MEANWHILE)


def _classify(
    session: Session,
    rows: list[_Row],
    purpose_id: int,
    panel: Panel | None,
    now: datetime,
    *,
    hold: bool = False,
) -> _Known:
    """Existing people, who already agrees, who withdrew or ran out (and when), who is
    suppressed, and who was on this panel before. A consent past its time limit has run
    out, even before the sweep has recorded it; asking to stop everything stopped every
    purpose, and so did the address's opting out under an earlier record.

    With ``hold`` (an import, not a preview) the people are locked before anything about
    them is read, so an opt-out or withdrawal made meanwhile is seen, not imported over.
    """
    emails = [row.email for row in rows]
    existing = {
        person.email: person
        for person in session.execute(select(Person).where(Person.email.in_(emails))).scalars()
        if person.email
    }
    if hold:
        _hold(session, [person.id for person in existing.values() if person.id is not None])
    consenting: set[str] = set()
    stopped: dict[str, datetime] = {}
    expires: dict[str, datetime | None] = {}
    if existing:
        ids = {person.id: email for email, person in existing.items()}
        for person_id, status, changed_at, expires_at in session.execute(
            select(
                ConsentState.person_id,
                ConsentState.status,
                ConsentState.changed_at,
                ConsentState.expires_at,
            ).where(ConsentState.person_id.in_(list(ids)), ConsentState.purpose_id == purpose_id)
        ):
            if ledger.in_force(status, expires_at, now):
                consenting.add(ids[person_id])
                expires[ids[person_id]] = expires_at
            elif status == "given" and expires_at is not None:
                stopped[ids[person_id]] = expires_at
            else:
                stopped[ids[person_id]] = changed_at
    for email, person in existing.items():
        if person.stopped_all_at is not None and email not in consenting:
            stopped[email] = max(stopped.get(email, person.stopped_all_at), person.stopped_all_at)
    hash_key = settings_of(session).hash_key
    digests = {people.email_hmac(hash_key, email): email for email in emails}
    suppressed = {
        digests[digest]
        for digest in session.execute(
            select(Suppression.email_hmac).where(Suppression.email_hmac.in_(list(digests)))
        ).scalars()
    }
    for digest, at in session.execute(
        select(AddressOptOut.email_hmac, AddressOptOut.opted_out_at).where(
            AddressOptOut.email_hmac.in_(list(digests))
        )
    ):
        email = digests[digest]
        if email not in consenting:
            stopped[email] = max(stopped.get(email, at), at)
    former, active_here = set(), set()
    if panel is not None and existing:
        ids = {person.id: email for email, person in existing.items()}
        for person_id, left_at in session.execute(
            select(PanelMembership.person_id, PanelMembership.left_at).where(
                PanelMembership.panel_id == panel.id,
                PanelMembership.person_id.in_(list(ids)),
            )
        ):
            (former if left_at is not None else active_here).add(ids[person_id])
    return _Known(
        existing, consenting, stopped, suppressed, former - active_here, active_here, expires
    )


#: Purposes that cannot be imported: agreeing to recordings is for members only, and the
#: ledger checks each person is one, which a bulk import does not.
NOT_IMPORTED = ("panel_recordings",)


def _panel(
    session: Session, purpose_key: str, panel_id: int | None, *, held: bool = False
) -> Panel | None:
    """The panel members are imported to. ``held`` reads it again ``FOR SHARE``, kept until
    the import commits: a coordinator concluding it meanwhile waits, so the sweep that
    follows finds the new members, as ``panels.join`` does for one. An import takes that
    only once its rows are written, so an edit to the panel never waits for a whole file."""
    if purpose_key in NOT_IMPORTED:
        raise ImportRefused(
            "Agreement to recording panel meetings cannot be imported. Members give it "
            "when they join, on their preferences page, or at a meeting."
        )
    if purpose_key != "panel_contact":
        if panel_id is not None:
            raise ImportRefused("A panel can only be chosen when importing panel members.")
        return None
    if panel_id is None:
        raise ImportRefused("Choose the panel these members belong to.")
    query = select(Panel).where(Panel.id == panel_id).execution_options(populate_existing=True)
    if held:
        query = query.with_for_update(read=True)
    panel = session.execute(query).scalar_one_or_none()
    if panel is None or panel.status == "concluded":
        raise ImportRefused("Choose a panel that has not concluded.")
    return panel


def preview(
    session: Session, path: Path, purpose_key: str, *, panel_id: int | None = None
) -> Preview:
    """What importing this file would do, row by row; writes nothing."""
    return _run(session, path, purpose_key, panel_id=panel_id, actor=None)


def commit(
    session: Session,
    path: Path,
    purpose_key: str,
    *,
    actor: str,
    actor_id: int | None,
    source: str,
    panel_id: int | None = None,
) -> Preview:
    """Import every valid row, or nothing at all if any row has a problem."""
    result = _run(
        session, path, purpose_key, panel_id=panel_id, actor=f"import:{source}"[:100], dry=False
    )
    if not result.ok:
        raise ImportRefused(
            f"Nothing was imported: {result.errors:,} row(s) have problems."
            if result.errors
            else "Nothing was imported: there is nobody new to import."
        )
    audit.record(
        session,
        "import.completed",
        actor=actor,
        actor_id=actor_id,
        detail={
            "purpose": purpose_key,
            "rows": result.to_import,
            "suppressed": result.suppressed,
            "already": result.already,
        },
    )
    return result


def _run(
    session: Session,
    path: Path,
    purpose_key: str,
    *,
    panel_id: int | None,
    actor: str | None,
    dry: bool = True,
) -> Preview:
    purpose = notices.get_purpose(session, purpose_key)
    notice = notices.current_notice(session, purpose)
    panel = _panel(session, purpose_key, panel_id)
    now = utcnow()
    result = Preview()
    for rows in _chunks(path, purpose.max_age_days, now, result):
        if not rows:
            continue
        known = _classify(session, rows, purpose.id or 0, panel, now, hold=not dry)
        fresh: list[_Row] = []
        joining: list[_Row] = []
        for row in rows:
            stopped_at = known.stopped.get(row.email)
            if row.email in known.active_here:
                result.already += 1
                result.add(RowResult(row.line, "already", "Already on this panel: nothing to do."))
            elif row.email in known.former:
                result.add(
                    RowResult(
                        row.line,
                        "error",
                        "Has been on this panel before: invite them from the panel's page "
                        "instead, so they agree again.",
                    )
                )
            elif row.email in known.suppressed:
                result.suppressed += 1
                result.add(
                    RowResult(
                        row.line,
                        "suppressed",
                        "Asked not to be contacted: will not be imported as agreeing.",
                    )
                )
            elif stopped_at is not None and row.at <= stopped_at:
                result.suppressed += 1
                result.add(
                    RowResult(
                        row.line,
                        "suppressed",
                        f"Asked us to stop on {london_date(stopped_at)}: an agreement from "
                        "before then will not be imported.",
                    )
                )
            elif row.email in known.consenting and panel is not None:
                result.to_import += 1
                result.add(
                    RowResult(
                        row.line,
                        "import",
                        "Already agreed to hear about panels: will be added to this panel.",
                    )
                )
                joining.append(row)
            elif row.email in known.consenting:
                result.already += 1
                result.add(RowResult(row.line, "already", "Already agreed: nothing to do."))
            else:
                result.to_import += 1
                result.add(RowResult(row.line, "import", "Will be imported."))
                fresh.append(row)
        if not dry and fresh and result.errors == 0:
            _write(
                session, fresh, known.existing, purpose.key, notice, panel, actor or "import", now
            )
        if not dry and joining and panel is not None and result.errors == 0:
            _add_members(
                session,
                panel,
                [
                    (
                        known.existing[row.email].id or 0,
                        now,
                        known.expires.get(row.email) or now + timedelta(days=730),
                    )
                    for row in joining
                ],
                now,
            )
    if not dry and panel is not None:
        _panel(session, purpose_key, panel_id, held=True)
    return result


#: What the ledger records as the wording of an imported agreement older than our notice,
#: when the list does not say: the notice's words were not the ones they saw.
WORDING_NOT_KNOWN = (
    "Not known: the list did not give the wording they agreed to, and they agreed "
    "before this notice was published."
)


def _wording(row: _Row, notice: Notice) -> str:
    """The words the list says they agreed to; failing that, the notice's, but only for an
    agreement made since the notice was published."""
    if row.wording:
        return row.wording
    return notice.statement if row.at >= notice.published_at else WORDING_NOT_KNOWN


def _write(
    session: Session,
    rows: list[_Row],
    existing: dict[str, Person],
    purpose_key: str,
    notice: Notice,
    panel: Panel | None,
    actor: str,
    now: datetime,
) -> None:
    """Write one chunk's agreements. The people already known were locked when the chunk was
    read (``_classify`` with ``hold``), and stay locked until the import commits."""
    table = Person.__table__
    new = [row for row in rows if row.email not in existing]
    if new:
        review = now + timedelta(days=1)
        created = session.execute(
            insert(table).returning(table.c.id, table.c.email, sort_by_parameter_order=True),
            [
                {
                    "public_id": new_public_id(),
                    "email": row.email,
                    "name": row.name,
                    "name_key": name_key(row.name),
                    "token_version": 1,
                    "created_at": now,
                    "updated_at": now,
                    "review_at": review,
                }
                for row in new
            ],
        ).all()
        ids = {email: person_id for person_id, email in created}
        reports.count(session, "people.created", by=len(new), at=now)
    else:
        ids = {}
    person_ids = {
        row.email: existing[row.email].id if row.email in existing else ids[row.email]
        for row in rows
    }
    ledger.give_many(
        session,
        [(person_ids[row.email], row.at, _wording(row, notice), row.evidence) for row in rows],
        purpose_key=purpose_key,
        notice=notice,
        channel="import",
        actor=actor,
        now=now,
    )
    if purpose_key == "newsletter" and mailchimp.enabled(session):
        for row in rows:
            person = existing.get(row.email) or loading.person_by_id.get(
                session, person_ids[row.email]
            )
            if person is not None:
                mailchimp.queue_subscribe(session, person, row.at)
    if panel is not None:
        _add_members(
            session,
            panel,
            [(person_ids[row.email], row.at, row.at + timedelta(days=730)) for row in rows],
            now,
        )


def _add_members(
    session: Session, panel: Panel, entries: list[tuple[int, datetime, datetime]], now: datetime
) -> None:
    """Memberships with empty profiles for (person, joined, expires), as the spreadsheet holds
    none of it; the member can fill it in through the panel's form, linked from their
    preferences page."""
    for person_id, joined_at, expires_at in entries:
        membership_id = session.execute(
            insert(PanelMembership.__table__).returning(PanelMembership.__table__.c.id),
            {
                "panel_id": panel.id,
                "person_id": person_id,
                "joined_at": joined_at,
                "expires_at": expires_at,
            },
        ).scalar_one()
        session.execute(
            insert(PanelProfile.__table__),
            {"membership_id": membership_id, "created_at": now, "updated_at": now},
        )
    panels.count_imported_joins(session, panel, len(entries), now)
