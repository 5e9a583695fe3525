"""The production server as it is started: gunicorn with the repository's gunicorn.conf.py."""

from __future__ import annotations

import http.client
import subprocess
import sys
import time
from pathlib import Path

from consent.config import REPO_ROOT, Settings
from tests.helpers import child_environment, send_raw
from tests.smtp_sink import free_port

TOKEN = "eyJwIjoiYWJjIn0.secret-looking-token-abc123"


def _get(port: int, path: str) -> int:
    connection = http.client.HTTPConnection("127.0.0.1", port, timeout=5)
    try:
        connection.request("GET", path)
        return connection.getresponse().status
    finally:
        connection.close()


def test_gunicorn_writes_the_application_s_access_log_without_tokens(
    settings: Settings, tmp_path: Path
) -> None:
    port = free_port()
    env = child_environment(
        settings,
        CONSENT_RUN_SCHEDULER="off",
        CONSENT_MAIL_WAKE="off",
        CONSENT_BIND=f"127.0.0.1:{port}",
        CONSENT_WORKERS="1",
    )
    log = tmp_path / "gunicorn.log"
    server = subprocess.Popen(
        [sys.executable, "-m", "gunicorn", "consent.wsgi:app"],
        cwd=REPO_ROOT,
        env=env,
        stdout=log.open("wb"),
        stderr=subprocess.STDOUT,
    )
    try:
        deadline = time.monotonic() + 30
        while True:
            try:
                if _get(port, "/healthz") == 200:
                    break
            except OSError:
                pass
            assert time.monotonic() < deadline, log.read_text()
            time.sleep(0.2)
        assert _get(port, f"/manage/{TOKEN}") == 400
        refused = send_raw(port, f"GET /manage/{TOKEN}\x01 HTTP/1.1\r\n\r\n".encode())
        assert refused.startswith(b"HTTP/1.1 400")
    finally:
        server.terminate()
        server.wait(timeout=30)
    written = log.read_text()
    assert "consent.access GET /healthz 200" in written
    assert "consent.access GET /manage/[redacted] 400" in written
    assert "Invalid HTTP request line: 'GET /manage/[redacted] HTTP/1.1'" in written
    assert "secret-looking-token" not in written
