"""Log records that never carry an email address, whoever logs them.

PostgreSQL quotes the offending value in a constraint error ("Key (email)=(...) already
exists"), and a relay quotes the address it refused; both reach tracebacks in the logs,
which outlive an erasure. Every record is cleaned as it is made, before any handler sees it.
"""

from __future__ import annotations

import logging
import traceback
from typing import Any

from consent.validation import without_addresses

_installed = False


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
        record.msg, record.args = without_addresses(message), ()
        if record.exc_info and record.exc_info[1] is not None:
            text = "".join(traceback.format_exception(*record.exc_info)).rstrip("\n")
            record.exc_text = without_addresses(text)
        return record

    logging.setLogRecordFactory(clean)
    _installed = True
