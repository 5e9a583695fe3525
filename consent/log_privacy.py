"""Log records that never carry an email address or a signed link, whoever logs them.

PostgreSQL quotes the offending value in a constraint error ("Key (email)=(...) already
exists"), and a relay quotes the address it refused; both reach tracebacks in the logs,
which outlive an erasure. Servers quote the request line of a request they refuse, token
and all. Every record is cleaned as it is made, before any handler sees it.
"""

from __future__ import annotations

import logging
import re
import traceback
from typing import Any

from consent.validation import without_addresses

#: The first path segments whose next segment is a signed token or a secret.
SECRET_SEGMENTS = (
    "manage",
    "unsubscribe",
    "confirm",
    "join",
    "renew",
    "confirm-email",
    "feedback",
    "webhooks/mailchimp",
)
_SECRET_IN_TEXT = re.compile(rf"/({'|'.join(map(re.escape, SECRET_SEGMENTS))})/[^/?#\s'\"<>]+")

_installed = False


def loggable(text: str) -> str:
    """Text safe to log: every signed token or secret in a path, and every address, hidden."""
    return without_addresses(_SECRET_IN_TEXT.sub(r"/\1/[redacted]", text))


def install() -> None:
    """Wrap the process's log record factory once; later calls change nothing."""
    global _installed
    if _installed:
        return
    make = logging.getLogRecordFactory()

    def clean(*args: Any, **kwargs: Any) -> logging.LogRecord:
        record = make(*args, **kwargs)
        try:
            message = record.getMessage()
        except Exception:
            return record
        record.msg, record.args = loggable(message), ()
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = loggable(text)
        return record

    logging.setLogRecordFactory(clean)
    _installed = True
