"""Anonymous counts for reports, recorded at the moment things happen.

Because counts are written when an event occurs, erasing the people behind them later
never changes a past report. Small numbers are suppressed when shown, not when stored.
"""

from __future__ import annotations

import csv
import io
import re
from dataclasses import dataclass, replace
from datetime import datetime
from functools import cache
from typing import Any

from sqlalchemy import ColumnElement, bindparam, func, select
from sqlmodel import Session

from consent.db import upsert_insert
from consent.errors import InvalidInput
from consent.models import StatCounter
from consent.timeutil import to_london, utcnow
from consent.validation import spreadsheet_safe

SUPPRESS_BELOW = 5
_MONTH = re.compile(r"[0-9]{4}-(0[1-9]|1[0-2])")


def period_of(moment: datetime) -> str:
    """Reporting periods are calendar months in UK time, as YYYY-MM."""
    return to_london(moment).strftime("%Y-%m")


def count(session: Session, metric: str, **where: Any) -> None:
    """Add ``by`` to one counter, creating it on first use, in the caller's transaction.

    ``where`` takes the keywords of :func:`counter_params` (scope, dimension, value, at, by).
    """
    session.execute(
        upsert_statement(session.get_bind().dialect.name), counter_params(metric, **where)
    )


def counter_params(
    metric: str,
    *,
    scope: str = "all",
    dimension: str = "all",
    value: str = "all",
    at: datetime | None = None,
    by: int = 1,
) -> dict[str, Any]:
    """The parameters of :func:`upsert_statement` for one count."""
    return {
        "c_period": period_of(at or utcnow()),
        "c_metric": metric,
        "c_scope": scope,
        "c_dimension": dimension,
        "c_value": value[:100],
        "c_count": by,
    }


@cache
def upsert_statement(dialect: str) -> Any:
    """Built once per dialect: counting happens on every consent change.

    Its parameters are named ``c_*`` so the ledger can run it inside a larger statement.
    """
    table = StatCounter.__table__
    names = ("period", "metric", "scope", "dimension", "value", "count")
    statement = upsert_insert(dialect, table)
    statement = statement.values({name: bindparam(f"c_{name}") for name in names})
    return statement.on_conflict_do_update(
        index_elements=["period", "metric", "scope", "dimension", "value"],
        set_={"count": table.c.count + statement.excluded["count"]},
    )


WITHHELD = "withheld"


def suppressed(value: int) -> str:
    """Show a count, or a mark when it is too small to publish safely."""
    return "fewer than 5" if 0 < value < SUPPRESS_BELOW else str(value)


def withheld_too(counts: list[int], hidden: frozenset[int] = frozenset()) -> set[int]:
    """Positions of counts to withhold besides the small ones (and those already ``hidden``),
    for counts shown side by side.

    The total is published, so what is withheld sums to a known figure; a small count is
    between 1 and 4, a larger one at least 5. While that pins any withheld count down
    (one small count alone; or two that sum to 2, so are 1 and 1), the next smallest
    shown count is withheld as well.
    """
    withheld = {i for i, n in enumerate(counts) if 0 < n < SUPPRESS_BELOW or i in hidden}
    others = sorted(
        (i for i, n in enumerate(counts) if n >= SUPPRESS_BELOW and i not in hidden),
        key=lambda i: counts[i],
    )
    extra: set[int] = set()
    while withheld and _pinned([counts[i] for i in withheld | extra]) and others:
        extra.add(others.pop(0))
    return extra


def _pinned(withheld: list[int]) -> bool:
    """Whether someone knowing only their sum, and that each is either 1 to 4 or 5 and
    over, can tell any one of these counts exactly."""
    total = sum(withheld)
    bounds = [
        (1, SUPPRESS_BELOW - 1) if n < SUPPRESS_BELOW else (SUPPRESS_BELOW, None) for n in withheld
    ]
    for position, (low, high) in enumerate(bounds):
        rest = bounds[:position] + bounds[position + 1 :]
        most = total - sum(lo for lo, _ in rest)
        least = None if any(hi is None for _, hi in rest) else total - sum(hi for _, hi in rest)
        smallest = low if least is None else max(low, least)
        largest = most if high is None else min(high, most)
        if smallest == largest:
            return True
    return False


def shown_group(counts: list[int]) -> list[str]:
    """Counts of one breakdown as shown: small ones suppressed, and one more if needed."""
    extra = withheld_too(counts)
    return [WITHHELD if i in extra else suppressed(count) for i, count in enumerate(counts)]


def is_special_category(dimension: str) -> bool:
    """Breakdowns by special category answers are for the DPO only: a coordinator knows who
    joined when, and could match a small change in a count to a person."""
    from consent.options import options

    return any(question.key == dimension for question in options().special_category)


# ---- anonymised tables for staff and for government returns ------------------------------

REPORTS: dict[str, tuple[str, str]] = {
    # name: (title, metric prefix; a trailing dot takes every metric under it)
    "consents": ("Consent given, withdrawn, renewed and expired, by purpose", "consent."),
    "panel_joins": ("People joining panels", "panel.joined"),
    "panel_leavers": ("People leaving panels, by reason", "panel.left."),
    "bookings": ("Workshop bookings", "workshop.booked"),
    "cancellations": ("Workshop bookings cancelled by the booker", "workshop.cancelled"),
    "attendance": ("People who came to workshops", "workshop.attended"),
    "feedback": ("Workshop feedback", "workshop.evaluated"),
}


@dataclass(frozen=True)
class Cell:
    scope: str
    metric: str
    dimension: str
    value: str
    count: int
    withheld: bool = False

    @property
    def shown(self) -> str:
        return WITHHELD if self.withheld else suppressed(self.count)

    @property
    def published(self) -> int | None:
        """The count where it may be published, or None where it is withheld or too small."""
        return None if self.withheld or 0 < self.count < SUPPRESS_BELOW else self.count


def _metric_filter(report: str) -> ColumnElement[bool]:
    prefix = REPORTS[report][1]
    column = StatCounter.__table__.c.metric
    return column.like(prefix + "%") if prefix.endswith(".") else column == prefix


def table(
    session: Session,
    report: str,
    *,
    start: str,
    end: str,
    dimension: str = "all",
    special_category: bool = False,
) -> list[Cell]:
    """Counts summed over the months from ``start`` to ``end`` (YYYY-MM), one row per scope,
    metric and value. Small numbers are suppressed when shown, never when stored; special
    category breakdowns only when ``special_category`` is allowed.

    A sum over months is published only if it is published in each month's own table:
    otherwise a table for January and February, less one for February, would give
    January's small count (or the count withheld beside it, and from that the small one).
    """
    if report not in REPORTS:
        raise InvalidInput("report", "Select a report.")
    if is_special_category(dimension) and not special_category:
        raise InvalidInput("dimension", "Only the data protection officer can see this breakdown.")
    for label, month in (("start", start), ("end", end)):
        if not _MONTH.fullmatch(month or ""):
            raise InvalidInput(label, "Enter a month like 2027-03.")
    counter = StatCounter.__table__
    metric = _metric_filter(report)
    keys = (counter.c.scope, counter.c.metric, counter.c.dimension, counter.c.value)
    rows = session.execute(
        select(*keys, counter.c.period, func.sum(counter.c.count))
        .where(metric, counter.c.period.between(start, end), counter.c.dimension == dimension)
        .group_by(*keys, counter.c.period)
    ).all()
    Key = tuple[str, str, str, str]
    totals: dict[Key, int] = {}
    months: dict[tuple[str, str, str], dict[Key, int]] = {}
    for scope, name, breakdown, value, period, number in rows:
        key = (scope, name, breakdown, value)
        totals[key] = totals.get(key, 0) + int(number)
        months.setdefault((period, scope, name), {})[key] = int(number)
    hidden_in_a_month: set[Key] = set()
    for group in months.values():
        members = list(group)
        counts = [group[key] for key in members]
        extra = withheld_too(counts) if dimension != "all" else set()
        for position, key in enumerate(members):
            if 0 < counts[position] < SUPPRESS_BELOW or position in extra:
                hidden_in_a_month.add(key)
    cells = [
        Cell(*key, total, withheld=key in hidden_in_a_month and total >= SUPPRESS_BELOW)
        for key, total in sorted(totals.items(), key=lambda item: (item[0][:2], item[0][3]))
    ]
    if dimension == "all":
        return cells
    groups: dict[tuple[str, str], list[int]] = {}
    for index, cell in enumerate(cells):
        groups.setdefault((cell.scope, cell.metric), []).append(index)
    for indexes in groups.values():
        hidden = frozenset(n for n, i in enumerate(indexes) if cells[i].withheld)
        for position in withheld_too([cells[i].count for i in indexes], hidden):
            index = indexes[position]
            cells[index] = replace(cells[index], withheld=True)
    return cells


def default_dimension(report: str) -> str:
    """Consents are only ever counted by purpose; everything else has an overall count."""
    return "purpose" if report == "consents" else "all"


def dimension_for(report: str, asked: str | None, available: list[str]) -> str:
    """The breakdown asked for if this report has it (``available``, from
    :func:`dimensions`), else the report's own default: a breakdown kept from another
    report would show an empty table. A special category one is kept, so that
    :func:`table` can say who may see it."""
    if asked and (asked in available or is_special_category(asked)):
        return asked
    return default_dimension(report)


def dimensions(session: Session, report: str, *, special_category: bool = False) -> list[str]:
    counter = StatCounter.__table__
    metric = _metric_filter(report)
    found = session.execute(select(counter.c.dimension).where(metric).distinct()).scalars()
    return sorted(d for d in found if special_category or not is_special_category(d))


def scope_names(session: Session) -> dict[str, str]:
    """Readable names for scopes such as ``panel:3``."""
    from consent.models import Panel, Workshop

    names = {"all": "All"}
    for panel_id, name in session.execute(select(Panel.id, Panel.name)).all():
        names[f"panel:{panel_id}"] = name
    for workshop_id, title, starts in session.execute(
        select(Workshop.id, Workshop.title, Workshop.starts_at)
    ).all():
        names[f"workshop:{workshop_id}"] = f"{title} ({to_london(starts):%d %b %Y})"
    return names


def as_csv(cells: list[Cell], names: dict[str, str]) -> str:
    """The table as CSV for a government return: suppressed cells stay suppressed."""
    buffer = io.StringIO()
    writer = csv.writer(buffer)
    writer.writerow(["scope", "measure", "breakdown", "value", "count"])
    for cell in cells:
        row = [names.get(cell.scope, cell.scope), cell.metric, cell.dimension, cell.value]
        writer.writerow([spreadsheet_safe(text) for text in row] + [cell.shown])
    return buffer.getvalue()
