"""Domain errors: each carries a plain-English message fit to show the person who caused it."""

from __future__ import annotations


class DomainError(Exception):
    """A rule said no. Nothing was written; ``message`` says what to do next."""

    def __init__(self, message: str) -> None:
        super().__init__(message)
        self.message = message


class InvalidInput(DomainError):
    """A value cannot be accepted. ``field`` names the form field it came from."""

    def __init__(self, field: str, message: str) -> None:
        super().__init__(message)
        self.field = field


class NotFound(DomainError):
    pass


class UnknownWording(InvalidInput):
    """A form did not say which notice version it showed, so no consent can point at it."""

    def __init__(self, field: str) -> None:
        super().__init__(
            field,
            "We could not tell which wording you were shown. Reload the page, read it again "
            "and then send the form.",
        )


class UnknownPurpose(InvalidInput):
    def __init__(self, key: str) -> None:
        super().__init__("purpose", f"There is no purpose called {key!r}.")
        self.key = key


class NotConsented(DomainError):
    """A withdrawal, renewal or expiry for a consent that is not in force."""


class Suppressed(DomainError):
    """The address opted out and was erased; only a fresh consent from the person lifts that."""


class Erased(DomainError):
    """The person's data has been deleted; nothing more can be done with the record."""


class Conflict(DomainError):
    pass
