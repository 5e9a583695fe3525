"""Turning a queued row into a real MIME message, with the headers mail clients expect.

Built with the ``compat32`` MIME classes rather than ``EmailMessage``: the modern policy
parses and re-folds every header and costs several times more per message, which matters
when the queue holds a newsletter's worth of mail.
"""

from __future__ import annotations

import json
from email.charset import QP, Charset
from email.header import Header
from email.mime.multipart import MIMEMultipart
from email.mime.text import MIMEText
from email.utils import formatdate

from email_validator import EmailNotValidError, validate_email

from consent.config import Settings
from consent.models import Outbox

_UTF8_QP = Charset("utf-8")
_UTF8_QP.body_encoding = QP


def _header(value: str) -> str | Header:
    return value if value.isascii() else Header(value, "utf-8")


def mail_address(address: str) -> str:
    """``address`` as mail carries it: the domain in its ASCII (IDNA) form, which every relay
    and mail client reads, while the stored address keeps the one the person gave."""
    if address.isascii():
        return address
    local, _, _ = address.rpartition("@")
    try:
        domain = validate_email(address, check_deliverability=False).ascii_domain
    except EmailNotValidError as exc:
        raise ValueError(f"The address cannot be written in the form mail needs: {exc}") from exc
    return f"{local}@{domain}"


def _part(text: str, subtype: str) -> MIMEText:
    """UTF-8, quoted-printable: readable in raw form, and no line longer than SMTP allows."""
    return MIMEText(text, subtype, _UTF8_QP)


def build(row: Outbox, settings: Settings) -> MIMEMultipart:
    """multipart/alternative with text then HTML; Date is the moment of sending."""
    if not row.to_address or row.body_text is None or row.body_html is None:
        raise ValueError(f"Message {row.id} has no address or body left to send.")
    message = MIMEMultipart("alternative")
    message["From"] = _header(settings.mail_from)
    message["To"] = mail_address(row.to_address)
    message["Subject"] = _header(row.subject)
    message["Date"] = formatdate(usegmt=True)
    message["Message-ID"] = row.message_id
    if settings.mail_reply_to:
        message["Reply-To"] = _header(settings.mail_reply_to)
    for name, value in json.loads(row.headers or "{}").items():
        message[name] = value
    message.attach(_part(row.body_text, "plain"))
    message.attach(_part(row.body_html, "html"))
    return message
