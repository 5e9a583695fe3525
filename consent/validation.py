"""Cleaning and checking what people type, with messages in GOV.UK style.

Every service runs its input through these before writing anything, so bad input is
refused up front and never half-written.
"""

from __future__ import annotations

import re
import unicodedata
from datetime import datetime, timedelta

import phonenumbers
from email_validator import EmailNotValidError, validate_email

from consent.errors import InvalidInput
from consent.timeutil import utcnow

EMAIL_MAX = 254
NAME_MAX = 200
TEXT_MAX = 2000
NOTE_MAX = 5000
#: The largest id any table holds (a PostgreSQL ``integer``).
ID_MAX = 2**31 - 1

_POSTCODE = re.compile(r"^([A-Z]{1,2}[0-9][A-Z0-9]?)\s*([0-9][A-Z]{2})$")


def _has_control(value: str, allow_newlines: bool) -> bool:
    for char in value:
        if allow_newlines and char in "\n\r\t":
            continue
        category = unicodedata.category(char)
        if category in {"Cc", "Cf", "Cs", "Co", "Cn"} and char not in "\u200d":
            return True
    return False


#: A local part may hold ' = / + & ? (mary.o'brien@, a=b@): take them all, even if that also
#: takes a little of the text before; a domain stops where a web address's path would start.
_ADDRESS = re.compile(r"[^\s<>\"(),;:\[\]]+@[^\s/?&=<>\"'(),;:\[\]]+")


def without_addresses(text: str) -> str:
    """Text for logs and error columns with every email address replaced by ``[email]``.

    Relays and APIs quote the address they refused; those messages outlive the person.
    """
    return _ADDRESS.sub("[email]", text)


#: How far ahead a workshop or panel session may be set: a mistyped year must not put it,
#: and the keep time of those who booked, decades away.
FURTHEST_AHEAD = timedelta(days=5 * 366)
#: How far back a panel session may be added, for one recorded after it happened.
FURTHEST_BACK = timedelta(days=366)


def check_meeting_date(starts_at: datetime, *, back: timedelta | None = None) -> None:
    """Refuse a date no coordinator can have meant: beyond five years ahead, or, when
    ``back`` is given, further back than that."""
    now = utcnow()
    if starts_at > now + FURTHEST_AHEAD:
        raise InvalidInput("starts_at", "The date must be within the next five years.")
    if back is not None and starts_at < now - back:
        raise InvalidInput("starts_at", "The date must be within the last year.")


def whole_number(value: str | None, *, most: int = ID_MAX) -> int | None:
    """A number written with 0-9 only and no bigger than ``most``; anything else is None.

    ``str.isdigit`` also passes "²", which ``int`` refuses, and a number bigger than the
    database holds would fail there rather than here.
    """
    text = (value or "").strip()
    if not text or len(text) > 12 or not (text.isascii() and text.isdigit()):
        return None
    number = int(text)
    return number if number <= most else None


def clean_text(
    value: str | None,
    *,
    field: str,
    label: str,
    max_length: int = NAME_MAX,
    required: bool = False,
    multiline: bool = False,
) -> str | None:
    """Trim, normalise Unicode (NFC) and refuse control characters and over-long text."""
    if value is None:
        value = ""
    if not isinstance(value, str):
        raise InvalidInput(field, f"Enter {label}.")
    value = unicodedata.normalize("NFC", value).strip()
    if multiline:
        value = value.replace("\r\n", "\n").replace("\r", "\n")
    if not value:
        if required:
            raise InvalidInput(field, f"Enter {label}.")
        return None
    if _has_control(value, allow_newlines=multiline):
        raise InvalidInput(field, f"{label.capitalize()} must not contain hidden characters.")
    if len(value) > max_length:
        raise InvalidInput(field, f"{label.capitalize()} must be {max_length} characters or fewer.")
    return value


def normalise_email(value: str | None, *, field: str = "email") -> str:
    """One spelling per mailbox: trimmed, Unicode NFC, lower case, checked for shape."""
    if value is None or not isinstance(value, str) or not value.strip():
        raise InvalidInput(field, "Enter your email address.")
    candidate = unicodedata.normalize("NFC", value).strip()
    if len(candidate) > EMAIL_MAX:
        raise InvalidInput(field, f"Email address must be {EMAIL_MAX} characters or fewer.")
    if _has_control(candidate, allow_newlines=False) or any(c.isspace() for c in candidate):
        raise InvalidInput(
            field, "Enter an email address in the correct format, like name@example.com."
        )
    try:
        result = validate_email(candidate, check_deliverability=False)
    except EmailNotValidError as exc:
        raise InvalidInput(
            field, "Enter an email address in the correct format, like name@example.com."
        ) from exc
    normalised = unicodedata.normalize("NFC", result.normalized).lower()
    if len(normalised) > EMAIL_MAX:
        raise InvalidInput(field, f"Email address must be {EMAIL_MAX} characters or fewer.")
    return normalised


#: Ofcom's numbers for drama and examples (01632 960xxx, 07700 900xxx): not in service, so
#: libphonenumber calls them invalid, but our own hints show them and tests use them.
_EXAMPLE_RANGES = ("441632960", "447700900")
_PHONE_HINT = "Enter a full telephone number, like 01632 960 001 or 07700 900 982."


def normalise_phone(value: str | None, *, field: str = "phone") -> str | None:
    """A UK or international phone number in E.164 form, or None when left blank.

    Only a number that can be dialled as given: a digit short, a local number without its
    area code or a run of zeros would leave the Family Hub team with no way to call. An
    extension is refused, not dropped, as E.164 has no room for one.
    """
    text = clean_text(value, field=field, label="a phone number", max_length=40)
    if text is None:
        return None
    try:
        number = phonenumbers.parse(text, "GB")
    except phonenumbers.NumberParseException as exc:
        raise InvalidInput(field, _PHONE_HINT) from exc
    if number.extension:
        raise InvalidInput(field, "Enter a number we can call directly, without an extension.")
    digits = f"{number.country_code}{number.national_number}"
    example = len(digits) == 12 and digits.startswith(_EXAMPLE_RANGES)
    if not (phonenumbers.is_valid_number(number) or example):
        raise InvalidInput(field, _PHONE_HINT)
    return phonenumbers.format_number(number, phonenumbers.PhoneNumberFormat.E164)


def normalise_postcode(value: str | None, *, field: str = "postcode") -> str | None:
    """A UK postcode in capitals with one space, or None when left blank."""
    text = clean_text(value, field=field, label="a postcode", max_length=10)
    if text is None:
        return None
    match = _POSTCODE.match(text.upper().replace(" ", ""))
    if not match:
        raise InvalidInput(field, "Enter a real postcode, like SW1A 1AA.")
    return f"{match.group(1)} {match.group(2)}"


def spreadsheet_safe(value: str) -> str:
    """Stop a spreadsheet treating a cell someone typed as a formula (CSV injection)."""
    return "'" + value if value[:1] in ("=", "+", "-", "@", "\t", "\r") else value
