"""GOV.UK components whose arguments are the same on every request, rendered once each.

The layout's skip link and service navigation, and a page's fixed buttons, come out the
same every time, yet running their macros costs more than the rest of the layout.
Keeping each rendering, keyed by its arguments, keeps the GOV.UK macros as the single
source of the markup without paying for them on every request.
"""

from __future__ import annotations

import json
from typing import Any

from flask import Flask, current_app
from markupsafe import Markup

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


def init_app(app: Flask) -> None:
    app.extensions["consent.components"] = {}
    app.jinja_env.globals["fixed_component"] = fixed_component
