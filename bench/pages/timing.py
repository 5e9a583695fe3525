"""Milliseconds per request for the preferences page and the bare route, with no server.

Run by bench/pages.py in a process given the benchmark's ``CONSENT_*`` settings. Each app's
WSGI callable is called directly, so the figures are the application's own work: what the
page costs beyond the bare route, apart from gunicorn, the network and the load generator.

    python -m bench.pages.timing /manage/<token>
"""

from __future__ import annotations

import io
import sys
import timeit
from collections.abc import Callable, Iterable
from typing import Any

CALLS = 2000
REPEATS = 5


def environ(path: str) -> dict[str, Any]:
    """A GET as gunicorn would pass it on: a client with no cookie, as from an email."""
    return {
        "REQUEST_METHOD": "GET",
        "PATH_INFO": path,
        "SCRIPT_NAME": "",
        "QUERY_STRING": "",
        "SERVER_NAME": "127.0.0.1",
        "SERVER_PORT": "8000",
        "SERVER_PROTOCOL": "HTTP/1.1",
        "HTTP_HOST": "127.0.0.1:8000",
        "REMOTE_ADDR": "127.0.0.1",
        "wsgi.url_scheme": "http",
        "wsgi.input": io.BytesIO(b""),
        "wsgi.errors": sys.stderr,
        "wsgi.multithread": True,
        "wsgi.multiprocess": True,
        "wsgi.run_once": False,
    }


def per_request(app: Callable[..., Iterable[bytes]], path: str) -> float:
    """Milliseconds for one request, the best of several runs after a warm-up."""
    statuses: list[str] = []

    def start_response(status: str, _headers: Any, _exc_info: Any = None) -> None:
        statuses.append(status)

    def call() -> None:
        b"".join(app(environ(path), start_response))

    call()
    if not statuses[0].startswith("200"):
        raise SystemExit(f"{path} answered {statuses[0]}")
    timeit.timeit(call, number=CALLS // 4)
    return min(timeit.repeat(call, number=CALLS, repeat=REPEATS)) / CALLS * 1000


def main() -> None:
    from bench.pages.bare_app import app as bare
    from consent import create_app

    page = per_request(create_app(), sys.argv[1])
    baseline = per_request(bare, "/bare")
    print(f"TIMING {page:.4f} {baseline:.4f}")


if __name__ == "__main__":
    main()
