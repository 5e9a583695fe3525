"""The WSGI entry point for gunicorn: ``gunicorn consent.wsgi:app``.

gunicorn sets up only its own loggers, so without a handler here the application's access
log and every other message below WARNING would go nowhere in production.
"""

import logging

from consent import create_app

logging.basicConfig(format="%(asctime)s %(levelname)s %(name)s %(message)s")
app = create_app()
