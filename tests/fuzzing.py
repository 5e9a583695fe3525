"""Hypothesis strategies for posting forms as a careless or hostile person would.

A post made only of random fields stops at the form's own checks and never reaches the
rules in the services. So each post starts from the page's own form, filled in as a person
would, and then spoils a few fields with hostile text and may leave one out.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence

from hypothesis import HealthCheck
from hypothesis import strategies as st
from sqlalchemy import func, inspect, select, table

from consent.db import Database
from tests.web import choices, hidden_fields

FIXTURES_OK = [HealthCheck.function_scoped_fixture, HealthCheck.too_slow]

hostile_text = st.one_of(
    st.text(max_size=60),
    st.text(alphabet=st.characters(codec="utf-8"), max_size=400),
    st.sampled_from(
        [
            "",
            " ",
            "\x00",
            "a\x00b@example.com",
            "<script>alert(1)</script>",
            "' OR 1=1 --",
            "x" * 5000,
            "😀@example.com",
            "ab@example.com\r\nBcc: x@example.com",
            "%00",
            "../..",
            "{{7*7}}",
            "Robert'); DROP TABLE person;--",
            "\u202e",
            "\uff21\uff22\uff23@\uff45\uff58\uff41\uff4d\uff50\uff4c\uff45.com",
            "a@b",
            "@example.com",
            "name@",
            "99999999999999999999999",
        ]
    ),
)
#: For a free-text field with no value of its own in ``good``.
plausible = st.sampled_from(
    ["Pat Parent", "1", "pat.parent@example.com", "Northfield Family Hub", "Online", ""]
)


def counts(db: Database) -> dict[str, int]:
    """Rows in every table: a refused request must leave each one as it was."""
    names = inspect(db.engine).get_table_names()
    with db.engine.connect() as conn:
        return {
            name: conn.execute(select(func.count()).select_from(table(name))).scalar_one()
            for name in names
        }


def filled_in(
    data: st.DataObject,
    html: str,
    good: Mapping[str, Sequence[str]],
    stray: Sequence[str],
) -> dict[str, str]:
    """The page's form as a person might send it: every field filled with a choice the page
    offers or a value from ``good``; then up to three spoilt, perhaps one field from
    ``stray`` that the page does not have, and perhaps one left out. Hidden fields are
    added by the caller.
    """
    offered = choices(html)
    hidden = hidden_fields(html)
    own = [name for name in sorted(offered) if name not in hidden]
    body = {}
    for name in own:
        values = offered[name] or good.get(name)
        body[name] = data.draw(st.sampled_from(values) if values else plausible, label=name)
    spoilt = data.draw(st.lists(st.sampled_from(own or stray), max_size=3), label="spoilt")
    spoilt += data.draw(st.lists(st.sampled_from(stray), max_size=1), label="stray")
    for name in spoilt:
        body[name] = data.draw(st.one_of(hostile_text, plausible), label=name)
    for name in data.draw(st.lists(st.sampled_from(own or stray), max_size=1), label="left out"):
        body.pop(name, None)
    return body
