"""A real server on loopback and Debian's Chromium driven by Playwright.

Without /usr/bin/chromium these tests are skipped, unless CONSENT_REQUIRE_BROWSER is set
(CI sets it, so a missing browser fails the run instead of passing quietly).
"""

from __future__ import annotations

import email
import os
import re
import shutil
import threading
import time
from collections.abc import Iterator
from dataclasses import replace
from email.message import Message
from email.policy import default
from pathlib import Path

import pytest
from flask import Flask
from werkzeug.serving import make_server

from consent import create_app
from consent.config import Settings
from consent.db import Database
from consent.web.serving import RedactingRequestHandler
from tests.smtp_sink import free_port

CHROMIUM = os.environ.get("CONSENT_CHROMIUM", "/usr/bin/chromium")
LAUNCH_ARGS = [
    "--no-sandbox",
    "--disable-gpu",
    "--disable-quic",
    "--no-first-run",
    "--disable-background-networking",
    "--disable-component-update",
    "--disable-sync",
]


def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    here = Path(__file__).parent
    for item in items:
        if here in Path(str(item.fspath)).parents:
            item.add_marker(pytest.mark.browser)
    if shutil.which(CHROMIUM) or os.path.exists(CHROMIUM):
        return
    if os.environ.get("CONSENT_REQUIRE_BROWSER"):
        raise pytest.UsageError(f"Chromium is required but not found at {CHROMIUM}.")
    skip = pytest.mark.skip(reason=f"no Chromium at {CHROMIUM}: apt-get install chromium")
    for item in items:
        if "browser" in item.keywords:
            item.add_marker(skip)


class LiveServer:
    def __init__(self, app: Flask, port: int) -> None:
        self.app = app
        self.url = f"http://127.0.0.1:{port}"
        self.server = make_server(
            "127.0.0.1", port, app, threaded=True, request_handler=RedactingRequestHandler
        )
        self.thread = threading.Thread(target=self.server.serve_forever, daemon=True)

    @property
    def db(self) -> Database:
        return self.app.extensions["consent.db"]

    @property
    def mail_dir(self) -> Path:
        return self.app.config["SETTINGS"].mail_dir

    def mails(self) -> list[Message]:
        found = []
        for path in sorted(self.mail_dir.glob("*.eml")):
            found.append(email.message_from_bytes(path.read_bytes(), policy=default))
        return found

    def wait_for_mail(self, to: str, subject: str, timeout: float = 10) -> Message:
        """The newest email to ``to`` with this subject, as written to instance/mail."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for message in reversed(self.mails()):
                if message["To"] == to and message["Subject"] == subject:
                    return message
            time.sleep(0.1)
        raise AssertionError(f"no email to {to} with subject {subject!r}")

    def link(self, message: Message, kind: str) -> str:
        body = message.get_body(("plain",)).get_content()
        match = re.search(rf"{re.escape(self.url)}/{kind}/[\w.\-]+", body)
        assert match, f"no {kind} link in {message['Subject']}"
        return match.group(0)


@pytest.fixture
def live(settings: Settings, tmp_path: Path) -> Iterator[LiveServer]:
    port = free_port()
    app = create_app(
        replace(
            settings,
            base_url=f"http://127.0.0.1:{port}",
            mail_wake=True,
            mail_dir=tmp_path / "mail",
        )
    )
    server = LiveServer(app, port)
    server.thread.start()
    yield server
    server.server.shutdown()
    app.extensions["consent.mailer"].stop()
    app.extensions["consent.db"].dispose()


@pytest.fixture(scope="session")
def browser() -> Iterator[object]:
    from playwright.sync_api import sync_playwright

    with sync_playwright() as playwright:
        chromium = playwright.chromium.launch(executable_path=CHROMIUM, args=LAUNCH_ARGS)
        yield chromium
        chromium.close()


@pytest.fixture
def page(browser: object) -> Iterator[object]:
    context = browser.new_context(viewport={"width": 1280, "height": 900}, accept_downloads=True)  # type: ignore[attr-defined]
    page = context.new_page()
    errors: list[str] = []
    page.on(
        "console",
        lambda msg: (
            errors.append(msg.text)
            if msg.type == "error" and not msg.text.startswith("Failed to load resource")
            else None
        ),
    )
    page.on("pageerror", lambda exc: errors.append(str(exc)))
    page.console_errors = errors  # type: ignore[attr-defined]
    yield page
    context.close()
