"""Markup that comes out the same every time, rendered once and kept.

The layout's skip link and service navigation, a page's fixed buttons, and a published
notice's wording come out the same every time, yet running their macros costs more than
the rest of the layout. Keeping each rendering, keyed by what it depends on, keeps the
macros as the single source of the markup without paying for them on every request.
"""

from __future__ import annotations

import json
import re
from collections.abc import Callable, Hashable
from typing import Any, TypeVar

from flask import Flask, current_app, request, url_for
from markupsafe import Markup

from consent.models import Notice, Purpose

T = TypeVar("T")

#: Arguments that vary per request would fill memory; past this many, render each time.
KEPT_AT_MOST = 256

_SOURCE = (
    '{{% from "govuk_frontend_jinja/components/{name}/macro.html" import {macro} %}}'
    "{{{{ {macro}(params) }}}}"
)


def _kept(store: str, key: Hashable, make: Callable[[], T]) -> T:
    """``make()``'s answer for ``key``, kept in the app's ``store`` while there is room."""
    cache: dict[Hashable, T] = current_app.extensions[store]
    if key in cache:
        return cache[key]
    value = make()
    if len(cache) < KEPT_AT_MOST:
        cache[key] = value
    return value


def fixed_component(name: str, params: dict[str, Any]) -> Markup:
    """The GOV.UK component ``name`` (as in its folder, e.g. ``service-navigation``)."""

    def render() -> Markup:
        macro = "govuk" + "".join(part.capitalize() for part in name.split("-"))
        template = current_app.jinja_env.from_string(_SOURCE.format(name=name, macro=macro))
        return Markup(template.render(params=params))  # noqa: S704 (autoescaped)

    return _kept("consent.components", (name, json.dumps(params, sort_keys=True)), render)


def notice_html(notice: Notice, purpose: Purpose) -> Markup:
    """A notice's wording, lawful basis and retention, as paragraphs.

    A published notice is never edited, so its rendering is kept by what it shows of the
    notice; the purpose's lawful basis and retention are in the key as a sync may change them.
    """

    def render() -> Markup:
        module = current_app.jinja_env.get_template("public/_notice.html").module
        return Markup(module.notice_text(notice, purpose))  # noqa: S704 (autoescaped)

    key = (
        notice.id,
        notice.version,
        notice.published_at,
        notice.text_hash,
        purpose.lawful_basis,
        purpose.retention,
    )
    return _kept("consent.notices", key, render)


def fixed_url(endpoint: str, **values: str) -> str:
    """``url_for`` for a link that is the same on every page, such as the stylesheet."""
    key = (request.script_root, endpoint, tuple(sorted(values.items())))
    return _kept("consent.urls", key, lambda: url_for(endpoint, **values))


#: What a signed link's token is made of (URL-safe base64 and dots): nothing to quote in a path.
_TOKEN = re.compile(r"[A-Za-z0-9_.-]+")
#: Stands in for the token while a URL is built; ``~`` is never in a token.
_SLOT = "~token~"


def token_url(endpoint: str, token: str, **values: str | int) -> str:
    """``url_for(endpoint, token=token, **values)``, for the links on a page reached by a link.

    Each URL is built through the URL map once, with a stand-in for the token, which is put
    in its place after: the preferences page has seven such links, and ``url_for`` cost it
    about 13 µs each, more than one of its queries. They are kept apart from the fixed URLs,
    so values that vary (a booking's id) cannot crowd those out.
    """
    if not _TOKEN.fullmatch(token):
        return url_for(endpoint, token=token, **values)
    key = (request.script_root, endpoint, tuple(sorted(values.items())))
    built = _kept("consent.token_urls", key, lambda: url_for(endpoint, token=_SLOT, **values))
    return built.replace(_SLOT, token, 1)


def init_app(app: Flask) -> None:
    app.extensions["consent.components"] = {}
    app.extensions["consent.notices"] = {}
    app.extensions["consent.urls"] = {}
    app.extensions["consent.token_urls"] = {}
    app.jinja_env.globals.update(
        fixed_component=fixed_component,
        notice_html=notice_html,
        fixed_url=fixed_url,
        token_url=token_url,
    )
