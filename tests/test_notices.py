"""Purposes and notices are seeded from the repository file and versioned, never overwritten."""

from __future__ import annotations

from pathlib import Path

import pytest
from sqlmodel import Session, select

from consent.errors import InvalidInput, UnknownPurpose
from consent.models import Notice
from consent.services import ledger, notices
from tests import factories

EXPECTED = ["newsletter", "workshops", "panel_contact", "panel_recordings", "family_hub_events"]


def test_the_five_purposes_are_seeded_with_plain_english(session: Session) -> None:
    purposes = notices.all_purposes(session)
    assert [p.key for p in purposes] == EXPECTED
    for purpose in purposes:
        notice = notices.current_notice(session, purpose)
        assert notice.version == 1
        assert notice.statement.startswith("Yes,")
        assert purpose.lawful_basis and purpose.retention and purpose.description
        assert "\n" not in purpose.summary
    panel = notices.get_purpose(session, "panel_contact")
    assert panel.max_age_days == 730 and "two years" in panel.retention


def test_syncing_again_publishes_nothing(session: Session) -> None:
    assert notices.sync_from_file(session) == []


def test_changed_wording_in_the_file_publishes_a_new_version(
    session: Session, tmp_path: Path
) -> None:
    seed = notices.SEED_FILE.read_text(encoding="utf-8")
    changed = tmp_path / "purposes.toml"
    changed.write_text(
        seed.replace("does not use it for anything else", "never uses it for anything else"),
        "utf-8",
    )
    person = factories.consenting(session, "newsletter")
    published = notices.sync_from_file(session, changed)
    assert len(published) == 1 and published[0].version == 2
    versions = session.exec(select(Notice).order_by(Notice.id)).all()
    assert len(versions) == 6
    event = ledger.events_for(session, person)[0]
    assert session.get(Notice, event.notice_id).version == 1


def test_publishing_the_same_wording_again_is_refused(session: Session) -> None:
    purpose = notices.get_purpose(session, "workshops")
    current = notices.current_notice(session, purpose)
    with pytest.raises(InvalidInput):
        notices.publish(session, "workshops", current.statement, current.text)
    with pytest.raises(UnknownPurpose):
        notices.publish(session, "marketing", "Yes.", "Text.")
