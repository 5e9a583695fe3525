"""Where mail goes: ``.eml`` files (the local default), the console, or an SMTP relay.

A backend opens a connection for a batch; an SMTP connection is reused for every message
in the batch. Failures are sorted into three kinds, because each is handled differently:
the relay cannot be reached (try the whole batch later, not the message's fault), the
relay refused this message for now (retry it), or refused it for good (stop).
"""

from __future__ import annotations

import contextlib
import os
import smtplib
import ssl
import sys
import tempfile
from collections.abc import Iterator
from email.message import Message
from email.policy import Compat32
from pathlib import Path
from typing import Protocol, TextIO

from consent.config import Settings
from consent.timeutil import utcnow


class _MailPolicy(Compat32):
    """compat32, but an address beyond ASCII is written as UTF-8 (RFC 6532): an encoded
    word, which compat32 would make of it, is not allowed in an address."""

    def fold_binary(self, name: str, value: str) -> bytes:
        if name.lower() == "to" and isinstance(value, str) and not value.isascii():
            return f"{name}: {value}{self.linesep}".encode()
        return super().fold_binary(name, value)


#: SMTP needs CRLF line endings (smtplib sends bytes exactly as given); identifiers such
#: as Message-ID and List-Unsubscribe stay on one line rather than folded.
SMTP_POLICY = _MailPolicy(linesep="\r\n", max_line_length=998)
#: What a relay must be told when the recipient's address is not ASCII (RFC 6531).
INTERNATIONAL = ("SMTPUTF8", "BODY=8BITMIME")


class DeliveryError(Exception):
    pass


class RelayUnavailable(DeliveryError):
    """Could not reach or stay connected to the relay."""


class TemporaryFailure(DeliveryError):
    """The relay refused this message for now (4xx)."""


class PermanentFailure(DeliveryError):
    """The relay refused this message for good (5xx)."""


class Connection(Protocol):
    def send(self, message: Message, *, reference: str) -> None: ...


class Backend(Protocol):
    def connect(self) -> contextlib.AbstractContextManager[Connection]: ...


class FileBackend:
    """Each message as a real ``.eml`` file, for local runs and browser tests."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory

    @contextlib.contextmanager
    def connect(self) -> Iterator[FileBackend]:
        self.directory.mkdir(parents=True, exist_ok=True)
        yield self

    def send(self, message: Message, *, reference: str) -> None:
        name = f"{utcnow():%Y%m%dT%H%M%S%f}-{reference}.eml"
        fd, temp = tempfile.mkstemp(dir=self.directory, prefix=".writing-")
        with os.fdopen(fd, "wb") as handle:
            handle.write(message.as_bytes(policy=SMTP_POLICY))
        os.replace(temp, self.directory / name)


class ConsoleBackend:
    """Prints each message, for a quick look without opening files."""

    def __init__(self, stream: TextIO | None = None) -> None:
        self.stream = stream

    @contextlib.contextmanager
    def connect(self) -> Iterator[ConsoleBackend]:
        yield self

    def send(self, message: Message, *, reference: str) -> None:
        stream = self.stream or sys.stdout
        stream.write(f"----- message {reference} -----\n{message.as_string()}\n")
        stream.flush()


class SmtpBackend:
    """An SMTP relay: plain, STARTTLS or implicit TLS, with login and timeouts."""

    def __init__(
        self,
        host: str,
        port: int,
        *,
        security: str = "none",
        username: str = "",
        password: str = "",
        timeout: float = 30,
        ssl_context: ssl.SSLContext | None = None,
    ) -> None:
        self.host, self.port, self.security = host, port, security
        self.username, self.password, self.timeout = username, password, timeout
        self.ssl_context = ssl_context or ssl.create_default_context()

    @contextlib.contextmanager
    def connect(self) -> Iterator[SmtpConnection]:
        try:
            if self.security == "tls":
                client: smtplib.SMTP = smtplib.SMTP_SSL(
                    self.host, self.port, timeout=self.timeout, context=self.ssl_context
                )
            else:
                client = smtplib.SMTP(self.host, self.port, timeout=self.timeout)
            if self.security == "starttls":
                client.starttls(context=self.ssl_context)
            if self.username:
                client.login(self.username, self.password)
        except smtplib.SMTPAuthenticationError as exc:
            raise RelayUnavailable(f"The relay refused the login: {exc.smtp_code}") from exc
        except (OSError, smtplib.SMTPException) as exc:
            raise RelayUnavailable(f"Could not connect to the relay: {exc}") from exc
        connection = SmtpConnection(client)
        try:
            yield connection
        finally:
            with contextlib.suppress(OSError, smtplib.SMTPException):
                client.quit()


class SmtpConnection:
    def __init__(self, client: smtplib.SMTP) -> None:
        self.client = client

    @staticmethod
    def sender(message: Message) -> str:
        from email.utils import parseaddr

        return parseaddr(str(message["From"]))[1]

    def send(self, message: Message, *, reference: str) -> None:
        to = str(message["To"])
        try:
            options = () if to.isascii() else self._international()
            refused = self.client.sendmail(
                self.sender(message), [to], message.as_bytes(policy=SMTP_POLICY), options
            )
        except smtplib.SMTPRecipientsRefused as exc:
            codes = [code for code, _ in exc.recipients.values()]
            raise _by_code(min(codes), f"Recipient refused: {codes}") from exc
        except smtplib.SMTPResponseException as exc:
            raise _by_code(exc.smtp_code, f"Refused: {exc.smtp_code} {exc.smtp_error!r}") from exc
        except (OSError, smtplib.SMTPServerDisconnected) as exc:
            raise RelayUnavailable(f"Lost the connection to the relay: {exc}") from exc
        except smtplib.SMTPException as exc:
            raise TemporaryFailure(f"Relay error: {exc}") from exc
        if refused:
            codes = [code for code, _ in refused.values()]
            raise _by_code(min(codes), f"Recipient refused: {codes}")

    def _international(self) -> tuple[str, ...]:
        """The options for an address with a non-ASCII local part, which only a relay that
        offers SMTPUTF8 can take; asked before MAIL FROM, so the session stays usable."""
        self.client.ehlo_or_helo_if_needed()
        if not self.client.has_extn("smtputf8"):
            raise PermanentFailure(
                "The mail relay does not offer SMTPUTF8, so it cannot take an address with "
                "letters outside A to Z before the @."
            )
        return INTERNATIONAL


def _by_code(code: int, text: str) -> DeliveryError:
    return PermanentFailure(text) if code >= 500 else TemporaryFailure(text)


def from_settings(settings: Settings) -> Backend:
    if settings.mail_backend == "smtp":
        return SmtpBackend(
            settings.smtp_host,
            settings.smtp_port,
            security=settings.smtp_security,
            username=settings.smtp_username,
            password=settings.smtp_password,
            timeout=settings.smtp_timeout,
        )
    if settings.mail_backend == "console":
        return ConsoleBackend()
    return FileBackend(settings.mail_dir)
