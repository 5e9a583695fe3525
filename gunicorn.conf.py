"""gunicorn settings for production: ``gunicorn consent.wsgi:app`` picks this file up.

Per-request logging is the application's own access log, which redacts signed tokens and
email addresses; gunicorn's access log would print full request lines, so it stays off.
"""

import os

bind = os.environ.get("CONSENT_BIND", "0.0.0.0:8000")
workers = int(os.environ.get("CONSENT_WORKERS", "2"))
worker_class = "gthread"
threads = int(os.environ.get("CONSENT_THREADS", "4"))
accesslog = None
errorlog = "-"
loglevel = os.environ.get("CONSENT_LOG_LEVEL", "info").lower()
timeout = 30
graceful_timeout = 20
keepalive = 5
forwarded_allow_ips = os.environ.get("CONSENT_FORWARDED_ALLOW_IPS", "127.0.0.1")
