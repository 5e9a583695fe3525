"""Special category data is encrypted at rest, and keys rotate without losing anything."""

from __future__ import annotations

from dataclasses import replace

import pytest
from cryptography.fernet import Fernet
from sqlalchemy import text
from sqlmodel import select

from consent import crypto
from consent.db import Database
from consent.models import PanelProfile
from consent.options import options
from tests import factories
from tests.helpers import find_anywhere

SECRET = "Uses a hearing loop; coeliac"


def test_special_category_answers_are_ciphertext_in_the_database(db: Database) -> None:
    with db.transaction() as session:
        factories.member(session, factories.panel(session), special={"needs": SECRET})
    assert find_anywhere(db.engine, ["hearing loop", "coeliac"]) == []
    with db.engine.connect() as conn:
        stored = conn.execute(text("SELECT special_category FROM panel_profile")).scalar_one()
    assert stored.startswith("gAAAA")
    cipher = crypto.FieldCipher(db.settings.field_keys)
    assert cipher.decrypt_json(stored)["needs"] == SECRET


def test_rotation_re_encrypts_under_the_newest_key(db: Database) -> None:
    with db.transaction() as session:
        factories.member(session, factories.panel(session), special={"needs": SECRET})
    new_key = Fernet.generate_key().decode()
    rotated = Database(replace(db.settings, field_keys=(new_key, *db.settings.field_keys)))
    try:
        with rotated.transaction() as session:
            counts = crypto.rotate_all(session)
        assert counts["panel_profile"] == 1
    finally:
        rotated.dispose()
    only_new = crypto.FieldCipher([new_key])
    with db.reader() as session:
        profile = session.exec(select(PanelProfile)).one()
    assert only_new.decrypt_json(profile.special_category)["needs"] == SECRET
    with pytest.raises(crypto.UndecryptableField):
        crypto.FieldCipher(db.settings.field_keys).decrypt(profile.special_category)


def test_a_missing_key_is_a_clear_error_not_garbage() -> None:
    token = crypto.FieldCipher([Fernet.generate_key().decode()]).encrypt("x")
    with pytest.raises(crypto.UndecryptableField):
        crypto.FieldCipher([Fernet.generate_key().decode()]).decrypt(token)


def test_answers_from_a_list_cannot_be_told_apart_by_the_ciphertext_s_length(
    db: Database,
) -> None:
    """Fernet keeps the length of what it encrypts; every answer chosen from the lists,
    alone or all at their longest, must come out the same length."""
    questions = [q for q in options().special_category if not q.free_text]
    profiles: list[dict[str, str]] = [{}]
    profiles += [{q.key: answer} for q in questions for answer in q.options]
    profiles.append({q.key: max(q.options, key=len) for q in questions})
    cipher = crypto.FieldCipher(db.settings.field_keys)
    lengths = {len(cipher.encrypt_json(profile)) for profile in profiles}
    assert len(lengths) == 1, lengths
    assert all(cipher.decrypt_json(cipher.encrypt_json(p)) == p for p in profiles)
    with db.transaction() as session:
        panel = factories.panel(session)
        for answer in ("White", "Black, Black British, Caribbean or African"):
            factories.member(session, panel, special={"ethnicity": answer})
    with db.engine.connect() as conn:
        stored = conn.execute(text("SELECT special_category FROM panel_profile")).scalars().all()
    assert len({len(token) for token in stored}) == 1


def test_rotation_pads_answers_stored_before_padding(db: Database) -> None:
    cipher = crypto.FieldCipher(db.settings.field_keys)
    with db.transaction() as session:
        factories.member(session, factories.panel(session), special={"ethnicity": "White"})
    unpadded = cipher.encrypt('{"ethnicity": "White"}')
    with db.engine.begin() as conn:
        conn.execute(text("UPDATE panel_profile SET special_category = :t"), {"t": unpadded})
    with db.transaction() as session:
        crypto.rotate_all(session)
    with db.reader() as session:
        stored = session.exec(select(PanelProfile)).one().special_category
    assert len(stored) == len(cipher.encrypt_json({"ethnicity": "White"})) > len(unpadded)
    assert cipher.decrypt_json(stored) == {"ethnicity": "White"}
