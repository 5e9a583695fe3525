"""Purposes and the published versions of their privacy notices."""

from __future__ import annotations

import hashlib
import textwrap
import tomllib
from dataclasses import dataclass
from pathlib import Path

from sqlalchemy import func
from sqlmodel import Session, select

from consent.errors import InvalidInput, UnknownPurpose
from consent.models import Notice, Purpose
from consent.services import notice_catalogue
from consent.timeutil import utcnow
from consent.validation import clean_text

SEED_FILE = Path(__file__).resolve().parent.parent / "data" / "purposes.toml"


@dataclass(frozen=True)
class PurposeSpec:
    key: str
    title: str
    summary: str
    description: str
    lawful_basis: str
    retention: str
    statement: str
    notice: str
    max_age_days: int | None
    sort_order: int


def _tidy(text: str) -> str:
    """Join the wrapped lines of a TOML paragraph back into one line per paragraph."""
    paragraphs = textwrap.dedent(text).strip().split("\n\n")
    return "\n\n".join(" ".join(p.split()) for p in paragraphs)


def load_specs(path: Path = SEED_FILE) -> list[PurposeSpec]:
    data = tomllib.loads(path.read_text(encoding="utf-8"))
    specs = []
    for raw in data.get("purpose", []):
        specs.append(
            PurposeSpec(
                key=raw["key"],
                title=raw["title"],
                summary=_tidy(raw["summary"]),
                description=_tidy(raw["description"]),
                lawful_basis=_tidy(raw["lawful_basis"]),
                retention=_tidy(raw["retention"]),
                statement=_tidy(raw["statement"]),
                notice=_tidy(raw["notice"]),
                max_age_days=raw.get("max_age_days"),
                sort_order=int(raw.get("sort_order", 0)),
            )
        )
    return specs


def notice_hash(statement: str, text: str) -> str:
    return hashlib.sha256(f"{statement}\n\n{text}".encode()).hexdigest()


def sync_from_file(session: Session, path: Path = SEED_FILE) -> list[Notice]:
    """Add new purposes and publish a new notice version wherever the wording changed."""
    published: list[Notice] = []
    for spec in load_specs(path):
        purpose = session.exec(select(Purpose).where(Purpose.key == spec.key)).first()
        if purpose is None:
            purpose = Purpose(
                key=spec.key,
                title=spec.title,
                summary=spec.summary,
                description=spec.description,
                lawful_basis=spec.lawful_basis,
                retention=spec.retention,
                max_age_days=spec.max_age_days,
                sort_order=spec.sort_order,
            )
            session.add(purpose)
            session.flush()
        else:
            purpose.title = spec.title
            purpose.summary = spec.summary
            purpose.description = spec.description
            purpose.lawful_basis = spec.lawful_basis
            purpose.retention = spec.retention
            purpose.max_age_days = spec.max_age_days
            purpose.sort_order = spec.sort_order
        notice_catalogue.changed(session)
        current = current_notice_or_none(session, purpose)
        if current is None or current.text_hash != notice_hash(spec.statement, spec.notice):
            published.append(_publish(session, purpose, spec.statement, spec.notice))
    return published


def publish(session: Session, purpose_key: str, statement: str, text: str) -> Notice:
    """Publish a new version of a purpose's wording; earlier versions stay as they were."""
    purpose = get_purpose(session, purpose_key)
    statement = clean_text(
        statement, field="statement", label="the consent statement", max_length=500, required=True
    )
    text = clean_text(
        text, field="text", label="the notice text", max_length=20000, required=True, multiline=True
    )
    assert statement is not None and text is not None
    current = current_notice_or_none(session, purpose)
    if current is not None and current.text_hash == notice_hash(statement, text):
        raise InvalidInput("text", "This wording is already the current version.")
    return _publish(session, purpose, statement, text)


def _publish(session: Session, purpose: Purpose, statement: str, text: str) -> Notice:
    latest = session.exec(
        select(func.max(Notice.version)).where(Notice.purpose_id == purpose.id)
    ).one()
    notice = Notice(
        purpose_id=purpose.id,
        version=(latest or 0) + 1,
        statement=statement,
        text=text,
        text_hash=notice_hash(statement, text),
        published_at=utcnow(),
    )
    session.add(notice)
    session.flush()
    notice_catalogue.changed(session)
    return notice


def get_purpose(session: Session, key: str) -> Purpose:
    if not isinstance(key, str):
        raise UnknownPurpose(repr(key))
    purpose = session.exec(select(Purpose).where(Purpose.key == key)).first()
    if purpose is None:
        raise UnknownPurpose(key)
    return purpose


def all_purposes(session: Session) -> list[Purpose]:
    return list(session.exec(select(Purpose).order_by(Purpose.sort_order, Purpose.id)))


def notices_by_id(session: Session) -> dict[int | None, Notice]:
    """Every published notice by its id, so a consent event can show the version it was given on."""
    return {n.id: n for n in session.exec(select(Notice))}


def current_notice_or_none(session: Session, purpose: Purpose) -> Notice | None:
    return session.exec(
        select(Notice).where(Notice.purpose_id == purpose.id).order_by(Notice.version.desc())
    ).first()


def current_notice(session: Session, purpose: Purpose) -> Notice:
    notice = current_notice_or_none(session, purpose)
    if notice is None:
        raise UnknownPurpose(purpose.key)
    return notice
