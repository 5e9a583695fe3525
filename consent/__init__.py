"""Consent and panel-membership manager: the Flask application factory."""

from __future__ import annotations

import logging
from collections.abc import Mapping
from typing import Any

from flask import Flask
from werkzeug.middleware.proxy_fix import ProxyFix

from consent import log_privacy
from consent.config import REPO_ROOT, Settings, load_settings
from consent.db import Database


def create_app(config: Settings | Mapping[str, Any] | None = None) -> Flask:
    """Build the application from settings (or overrides of the environment's settings)."""
    settings = config if isinstance(config, Settings) else load_settings(overrides=config)
    app = Flask(
        __name__,
        template_folder=str(REPO_ROOT / "templates"),
        static_folder=str(REPO_ROOT / "consent" / "static"),
        instance_path=str(settings.instance_path),
    )
    app.config.update(
        SECRET_KEY=settings.secret_keys[0],
        SECRET_KEY_FALLBACKS=list(settings.secret_keys[1:]),
        SETTINGS=settings,
        TESTING=settings.env == "test",
    )
    if settings.trusted_proxies:
        # Behind a reverse proxy every request comes from the proxy: take the client's
        # address from the proxy's X-Forwarded-For, or every rate limit is shared by all.
        hops = settings.trusted_proxies
        app.wsgi_app = ProxyFix(app.wsgi_app, x_for=hops, x_proto=hops)  # type: ignore[method-assign]
    app.extensions["consent.db"] = Database(settings)
    log_privacy.install()
    logging.getLogger("consent").setLevel(settings.log_level)

    from consent.web import init_app

    init_app(app)
    return app
