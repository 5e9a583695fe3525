"""Field encryption for special category data, with several keys so keys can rotate.

Values are encrypted with the newest key of ``CONSENT_FIELD_KEYS`` and decrypted with any
of them; :func:`rotate_all` re-encrypts every stored value under the newest key (padding
JSON values stored before padding was added), after which older keys can be retired.
"""

from __future__ import annotations

import json
from collections.abc import Sequence
from typing import Any

from cryptography.fernet import Fernet, InvalidToken, MultiFernet
from sqlalchemy import select
from sqlmodel import Session

from consent.db import settings_of

#: Every answer chosen from a list, all questions at their longest, fits in one block.
PAD_BLOCK = 512


class FieldCipher:
    """Encrypts and decrypts single column values; keys are given newest first."""

    def __init__(self, keys: Sequence[str]) -> None:
        if not keys:
            raise ValueError("At least one field key is needed.")
        self._fernet = MultiFernet([Fernet(k.encode()) for k in keys])

    def encrypt(self, plaintext: str) -> str:
        return self._fernet.encrypt(plaintext.encode("utf-8")).decode("ascii")

    def decrypt(self, token: str) -> str:
        try:
            return self._fernet.decrypt(token.encode("ascii")).decode("utf-8")
        except InvalidToken as exc:
            raise UndecryptableField(
                "A stored value cannot be decrypted with any configured field key."
            ) from exc

    def rotate(self, token: str) -> str:
        try:
            return self._fernet.rotate(token.encode("ascii")).decode("ascii")
        except InvalidToken as exc:
            raise UndecryptableField(
                "A stored value cannot be decrypted with any configured field key."
            ) from exc

    def encrypt_json(self, value: Any) -> str:
        """Padded with spaces to a whole number of blocks before encrypting: Fernet keeps the
        length, and answers picked from a list would otherwise be told apart by it."""
        text = json.dumps(value, sort_keys=True, ensure_ascii=False)
        return self.encrypt(text + " " * (-len(text.encode("utf-8")) % PAD_BLOCK))

    def decrypt_json(self, token: str) -> Any:
        return json.loads(self.decrypt(token))


class UndecryptableField(RuntimeError):
    """A key that encrypted stored data has been removed from ``CONSENT_FIELD_KEYS``."""


def cipher_for(session: Session) -> FieldCipher:
    return FieldCipher(settings_of(session).field_keys)


def encrypted_columns() -> list[tuple[Any, Any, bool]]:
    """Every (table model, column attribute, holds JSON) with ciphertext. JSON values are
    re-padded as they are re-encrypted, for values stored before padding."""
    from consent.models import AdminUser, LinkRequest, PanelProfile, PendingSignup, SessionNote

    return [
        (LinkRequest, LinkRequest.address, False),
        (PanelProfile, PanelProfile.special_category, True),
        (PendingSignup, PendingSignup.payload, True),
        (SessionNote, SessionNote.text, False),
        (AdminUser, AdminUser.totp_secret, False),
    ]


def rotate_all(session: Session, batch_size: int = 500) -> dict[str, int]:
    """Re-encrypt every encrypted value under the newest key; returns counts per table.

    A value no configured key can read stops the whole run, naming where it is, so the key
    can be put back: except a request for a new link, which nobody could answer anyway and
    the sweep drops within the hour.
    """
    from consent.models import LinkRequest

    cipher = cipher_for(session)
    counts: dict[str, int] = {}
    for model, column, padded in encrypted_columns():
        done = 0
        last_id = 0
        while True:
            rows = session.execute(
                select(model.id, column)
                .where(model.id > last_id, column.is_not(None))
                .order_by(model.id)
                .limit(batch_size)
            ).all()
            if not rows:
                break
            for row_id, token in rows:
                try:
                    value = (
                        cipher.encrypt_json(cipher.decrypt_json(token))
                        if padded
                        else cipher.rotate(token)
                    )
                except UndecryptableField:
                    if model is LinkRequest:
                        continue
                    raise UndecryptableField(
                        f"A value in {model.__tablename__} (row {row_id}) cannot be decrypted "
                        "with any key in CONSENT_FIELD_KEYS. Put back the key it was encrypted "
                        "with and run this again. Nothing was re-encrypted."
                    ) from None
                session.execute(
                    model.__table__.update()
                    .where(model.__table__.c.id == row_id)
                    .values({column.key: value})
                )
                done += 1
            last_id = rows[-1][0]
        counts[model.__tablename__] = done
    return counts
