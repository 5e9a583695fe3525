"""The WSGI entry point for gunicorn: ``gunicorn consent.wsgi:app``."""

from consent import create_app

app = create_app()
