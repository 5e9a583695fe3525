"""The web layer: blueprints, templates, security headers and error pages. Views stay thin:
they parse the request, call a service, and render."""

from __future__ import annotations

import json
from datetime import datetime
from typing import Any

from flask import Flask, current_app
from jinja2 import ChoiceLoader, FileSystemLoader, PackageLoader, PrefixLoader
from werkzeug.routing import IntegerConverter, Map

from consent.config import REPO_ROOT, Settings
from consent.db import Database
from consent.timeutil import london_date, london_datetime, long_date
from consent.validation import ID_MAX


class IdConverter(IntegerConverter):
    """Ids in paths as the database holds them: 0-9 only and no bigger than its integers.

    Anything else is a 404 here rather than an error from the database driver.
    """

    regex = r"[0-9]{1,10}"

    def __init__(self, map: Map, *args: Any, **kwargs: Any) -> None:
        kwargs.setdefault("max", ID_MAX)
        super().__init__(map, *args, **kwargs)


def database() -> Database:
    return current_app.extensions["consent.db"]


def settings() -> Settings:
    return current_app.config["SETTINGS"]


def _templates(app: Flask) -> None:
    app.jinja_loader = ChoiceLoader(
        [
            FileSystemLoader(str(REPO_ROOT / "templates")),
            PrefixLoader(
                {
                    "govuk_frontend_jinja": PackageLoader("govuk_frontend_jinja"),
                    "govuk_frontend_wtf": PackageLoader("govuk_frontend_wtf"),
                }
            ),
        ]
    )
    app.jinja_env.filters["london_date"] = london_date
    app.jinja_env.filters["long_date"] = long_date
    app.jinja_env.filters["from_json"] = json.loads
    app.jinja_env.filters["london_datetime"] = london_datetime
    app.jinja_env.filters["iso_london"] = lambda text: london_datetime(datetime.fromisoformat(text))
    app.jinja_env.trim_blocks = True
    app.jinja_env.lstrip_blocks = True
    fixed = app.config["SETTINGS"]
    app.jinja_env.globals.update(council_name=fixed.council_name, service_name=fixed.service_name)


def init_app(app: Flask) -> None:
    from govuk_frontend_wtf.main import WTFormsHelpers

    from consent.web import admin, api, components, errors, health, security, webhooks
    from consent.web.public import bp as public_bp
    from mailers.outbox import OutboxWorker

    db = app.extensions["consent.db"]
    worker = OutboxWorker(db)
    app.extensions["consent.mailer"] = worker
    if app.config["SETTINGS"].mail_wake:
        db.wake_mailer = worker.wake

    app.url_map.converters["int"] = IdConverter
    _templates(app)
    components.init_app(app)
    WTFormsHelpers(app)
    security.init_app(app)
    errors.init_app(app)
    app.register_blueprint(health.bp)
    app.register_blueprint(webhooks.bp)
    app.register_blueprint(public_bp)
    admin.init_app(app)
    api.init_app(app)
    security.csrf.exempt(webhooks.bp)
