"""UTC in the database, Europe/London on screen: the two conversions everything else uses."""

from __future__ import annotations

from datetime import UTC, date, datetime
from zoneinfo import ZoneInfo

LONDON = ZoneInfo("Europe/London")


def utcnow() -> datetime:
    """The current time as an aware UTC datetime (time-machine moves this in tests)."""
    return datetime.now(UTC)


def to_london(moment: datetime) -> datetime:
    if moment.tzinfo is None:
        moment = moment.replace(tzinfo=UTC)
    return moment.astimezone(LONDON)


def long_date(day: date) -> str:
    """A date as people in England write it: 5 March 2027."""
    return f"{day.day} {day:%B %Y}"


def london_date(moment: datetime) -> str:
    """The London day of a moment, written out: 5 March 2027."""
    return long_date(to_london(moment).date())


def london_datetime(moment: datetime) -> str:
    """A date and time as GOV.UK writes it: 5 March 2027 at 2:30pm."""
    local = to_london(moment)
    hour = local.hour % 12 or 12
    suffix = "am" if local.hour < 12 else "pm"
    clock = f"{hour}{suffix}" if local.minute == 0 else f"{hour}:{local.minute:02d}{suffix}"
    return f"{local.day} {local:%B %Y} at {clock}"


def add_months(day: date, months: int) -> date:
    """Calendar months, clamped to the month's end: 31 January plus one month is 28 February."""
    month_index = day.month - 1 + months
    year, month = day.year + month_index // 12, month_index % 12 + 1
    for candidate in (31, 30, 29, 28):
        try:
            return date(year, month, min(day.day, candidate))
        except ValueError:
            continue
    raise ValueError(day)


def add_months_dt(moment: datetime, months: int) -> datetime:
    target = add_months(moment.date(), months)
    return moment.replace(year=target.year, month=target.month, day=target.day)


def parse_london(text: str | None, *, field: str, label: str) -> datetime:
    """A date and time typed in UK time, like 2027-03-05 18:30, as an aware UTC datetime.

    A time the clocks skip when they go forward is refused: stored as it is, it would show
    an hour later than what was typed. So is a time that happens twice when they go back:
    which of the two was meant cannot be told, and saving a form that shows the second one
    would quietly move it an hour earlier.
    """
    from consent.errors import InvalidInput

    cleaned = (text or "").strip().replace("T", " ")
    try:
        moment = datetime.strptime(cleaned, "%Y-%m-%d %H:%M")
    except ValueError:
        raise InvalidInput(field, f"Enter {label} like 2027-03-05 18:30.") from None
    stored = moment.replace(tzinfo=LONDON).astimezone(UTC)
    if stored.astimezone(LONDON).replace(tzinfo=None) != moment:
        raise InvalidInput(
            field,
            f"{moment:%H:%M} on {moment.day} {moment:%B %Y} does not exist in the UK, because the "
            "clocks go forward that night. Enter a time before 1am or from 2am.",
        )
    later = moment.replace(tzinfo=LONDON, fold=1).astimezone(UTC)
    if later != stored:
        raise InvalidInput(
            field,
            f"{moment:%H:%M} on {moment.day} {moment:%B %Y} happens twice in the UK, because "
            "the clocks go back that night. Enter a time before 1am or from 2am.",
        )
    return stored


def london_input(moment: datetime) -> str:
    return to_london(moment).strftime("%Y-%m-%d %H:%M")
