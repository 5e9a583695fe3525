"""Markup that comes out the same every time, rendered once and kept.

The layout's skip link and service navigation, a page's fixed buttons, and a published
notice's wording come out the same every time, yet running their macros costs more than
the rest of the layout. Keeping each rendering, keyed by what it depends on, keeps the
macros as the single source of the markup without paying for them on every request.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, current_app, request, url_for
from markupsafe import Markup

from consent.models import Notice, Purpose

#: Arguments that vary per request would fill memory; past this many, render each time.
KEPT_AT_MOST = 256

_SOURCE = (
    '{{% from "govuk_frontend_jinja/components/{name}/macro.html" import {macro} %}}'
    "{{{{ {macro}(params) }}}}"
)


def fixed_component(name: str, params: dict[str, Any]) -> Markup:
    """The GOV.UK component ``name`` (as in its folder, e.g. ``service-navigation``)."""
    cache: dict[tuple[str, str], Markup] = current_app.extensions["consent.components"]
    key = (name, json.dumps(params, sort_keys=True))
    if key in cache:
        return cache[key]
    macro = "govuk" + "".join(part.capitalize() for part in name.split("-"))
    template = current_app.jinja_env.from_string(_SOURCE.format(name=name, macro=macro))
    markup = Markup(template.render(params=params))  # noqa: S704 (autoescaped)
    if len(cache) < KEPT_AT_MOST:
        cache[key] = markup
    return markup


def notice_html(notice: Notice, purpose: Purpose) -> Markup:
    """A notice's wording, lawful basis and retention, as paragraphs.

    A published notice is never edited, so its rendering is kept by id and wording hash;
    the purpose's lawful basis and retention are part of the key as a sync may change them.
    """
    cache: dict[tuple[object, ...], Markup] = current_app.extensions["consent.notices"]
    key = (notice.id, notice.text_hash, purpose.lawful_basis, purpose.retention)
    markup = cache.get(key)
    if markup is None:
        module = current_app.jinja_env.get_template("public/_notice.html").module
        markup = Markup(module.notice_text(notice, purpose))  # noqa: S704 (autoescaped)
        if notice.id is not None and len(cache) < KEPT_AT_MOST:
            cache[key] = markup
    return markup


def fixed_url(endpoint: str, **values: str) -> str:
    """``url_for`` for a link that is the same on every page, such as the stylesheet."""
    cache: dict[tuple[object, ...], str] = current_app.extensions["consent.urls"]
    key = (request.script_root, endpoint, tuple(sorted(values.items())))
    url = cache.get(key)
    if url is None:
        url = url_for(endpoint, **values)
        if len(cache) < KEPT_AT_MOST:
            cache[key] = url
    return url


def init_app(app: Flask) -> None:
    app.extensions["consent.components"] = {}
    app.extensions["consent.notices"] = {}
    app.extensions["consent.urls"] = {}
    app.jinja_env.globals.update(
        fixed_component=fixed_component, notice_html=notice_html, fixed_url=fixed_url
    )
