"""Helpers for driving the web app the way a browser would: GET, find the token, POST."""

from __future__ import annotations

import re
from html import unescape
from html.parser import HTMLParser

from flask.testing import FlaskClient
from sqlmodel import select
from werkzeug.test import TestResponse

from consent.db import Database
from consent.models import Outbox


class _Inputs(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.hidden: dict[str, str] = {}
        self.choices: dict[str, list[str]] = {}
        self._select: str | None = None

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        name, value = values.get("name") or "", values.get("value") or ""
        if tag == "input" and values.get("type") == "hidden" and name:
            self.hidden.setdefault(name, value)
        elif tag == "input" and values.get("type") in ("radio", "checkbox") and name:
            self.choices.setdefault(name, []).append(value)
        elif tag in ("input", "textarea") and name and values.get("type") != "submit":
            self.choices.setdefault(name, [])
        elif tag == "select":
            self._select = name
        elif tag == "option" and self._select:
            self.choices.setdefault(self._select, []).append(value)

    def handle_endtag(self, tag: str) -> None:
        if tag == "select":
            self._select = None


class _Buttons(HTMLParser):
    """Each button's visible text and its accessible name (aria-label, else all its text)."""

    def __init__(self) -> None:
        super().__init__()
        self.found: list[tuple[str, str]] = []
        self._label: str | None = None
        self._visible: list[str] | None = None
        self._all: list[str] = []
        self._hidden_depth = 0

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        values = dict(attrs)
        if tag == "button":
            self._label, self._visible, self._all = values.get("aria-label"), [], []
        elif tag == "input" and values.get("type") == "submit":
            value = values.get("value") or ""
            self.found.append((value, values.get("aria-label") or value))
        elif (
            self._visible is not None
            and tag == "span"
            and (self._hidden_depth or "govuk-visually-hidden" in (values.get("class") or ""))
        ):
            self._hidden_depth += 1

    def handle_endtag(self, tag: str) -> None:
        if tag == "button" and self._visible is not None:
            visible, full = (" ".join("".join(part).split()) for part in (self._visible, self._all))
            self.found.append((visible, self._label or full))
            self._visible = None
        elif tag == "span" and self._hidden_depth:
            self._hidden_depth -= 1

    def handle_data(self, data: str) -> None:
        if self._visible is not None:
            self._all.append(data)
            if not self._hidden_depth:
                self._visible.append(data)


def buttons(html: str) -> list[tuple[str, str]]:
    """(visible text, accessible name) of every button, for WCAG 2.5.3 "label in name"."""
    parser = _Buttons()
    parser.feed(html)
    parser.close()
    return parser.found


def hidden_fields(html: str) -> dict[str, str]:
    parser = _Inputs()
    parser.feed(html)
    return parser.hidden


def choices(html: str) -> dict[str, list[str]]:
    """Every field on the page by name, with the values its radios, checkboxes or select
    offer (none for a field that takes free text)."""
    parser = _Inputs()
    parser.feed(html)
    return parser.choices


def error_messages(html: str) -> list[str]:
    """The messages in a page's error summary, as a person reads them."""
    found = re.findall(r'govuk-error-summary__list">(.*?)</ul>', html, re.S)
    items = [item for listed in found for item in re.findall(r"<li>(.*?)</li>", listed, re.S)]
    return [unescape(re.sub(r"<[^>]+>", "", item)).strip() for item in items]


def written_as_sentences(html: str) -> None:
    """Every error message on the page is our own and ends with a full stop, as the rest do:
    WTForms' defaults ("Field cannot be longer than...") are not plain English."""
    for message in error_messages(html):
        assert message.endswith((".", "?")), message
        assert not message.startswith(("Field ", "This field", "Not a valid", "Invalid")), message


def csrf(html: str) -> str:
    token = hidden_fields(html).get("csrf_token")
    assert token, "no CSRF token on the page"
    return token


def submit(
    client: FlaskClient, path: str, data: dict[str, object], *, form_page: str | None = None
) -> TestResponse:
    """GET the page holding the form, then POST it with its CSRF token and hidden fields."""
    page = client.get(form_page or path)
    body: dict[str, object] = dict(hidden_fields(page.get_data(as_text=True)))
    assert "csrf_token" in body, "no CSRF token on the page"
    body.update(data)
    return client.post(path, data=body)


def mails(db: Database, to: str | None = None, template: str | None = None) -> list[Outbox]:
    with db.reader() as session:
        query = select(Outbox).order_by(Outbox.id)
        if to:
            query = query.where(Outbox.to_address == to)
        if template:
            query = query.where(Outbox.template == template)
        return list(session.exec(query))


def link_in(message: Outbox, kind: str) -> str:
    """The path of the first link of a kind (confirm, manage, ...) in a queued email."""
    assert message.body_text is not None
    match = re.search(rf"https://consent\.test(/{kind}/[\w.\-]+)", message.body_text)
    assert match, f"no {kind} link in {message.template}"
    return match.group(1)


def text(response: TestResponse) -> str:
    return response.get_data(as_text=True)


def one_click(client: FlaskClient, path: str) -> TestResponse:
    """POST an unsubscribe link as a mail app does for RFC 8058 one-click: no token, no form."""
    return client.post(
        path, data="List-Unsubscribe=One-Click", content_type="application/x-www-form-urlencoded"
    )
