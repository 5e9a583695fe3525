"""The ``consent`` command, run as a real subprocess against the test database."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest
from cryptography.fernet import Fernet
from sqlmodel import select

from consent import crypto
from consent.config import Settings
from consent.db import Database
from consent.models import AdminUser, LinkRequest, Panel, PanelProfile, Person, RetentionRun
from consent.services import ledger
from tests import factories
from tests.fuzzing import counts
from tests.helpers import child_environment, send_raw, tamper


def run(
    settings: Settings, *args: str, extra: dict[str, str] | None = None, input: str | None = None
) -> subprocess.CompletedProcess[str]:
    env = child_environment(settings, **(extra or {}))
    return subprocess.run(
        [sys.executable, "-m", "consent.cli", *args],
        env=env,
        capture_output=True,
        text=True,
        timeout=120,
        input=input,
    )


def test_db_upgrade_builds_a_fresh_database(tmp_path: Path, settings: Settings) -> None:
    fresh = Settings(**{**settings.__dict__, "database_url": f"sqlite:///{tmp_path / 'new.db'}"})
    result = run(fresh, "db", "upgrade")
    assert result.returncode == 0, result.stderr
    assert "panel_contact: published notice version 1" in result.stdout
    again = run(fresh, "db", "upgrade")
    assert again.returncode == 0 and "published" not in again.stdout


def test_create_admin_prints_a_password_and_enrolment(db: Database, settings: Settings) -> None:
    result = run(settings, "create-admin", "Coordinator@Example.gov.uk", "--role", "coordinator")
    assert result.returncode == 0, result.stderr
    assert "Password: " in result.stdout and "otpauth://totp/" in result.stdout
    with db.reader() as session:
        user = session.exec(select(AdminUser)).one()
    assert user.email == "coordinator@example.gov.uk" and user.role == "coordinator"
    assert user.password_hash.startswith("$argon2id$")
    duplicate = run(settings, "create-admin", "coordinator@example.gov.uk", "--role", "dpo")
    assert duplicate.returncode == 1 and "already a staff account" in duplicate.stderr
    bad_role = run(settings, "create-admin", "x@example.gov.uk", "--role", "emperor")
    assert bad_role.returncode == 2


def test_create_admin_can_ask_for_the_password(db: Database, settings: Settings) -> None:
    result = run(
        settings,
        "create-admin",
        "dpo@example.gov.uk",
        "--role",
        "dpo",
        "--ask",
        input="a long enough passphrase\na long enough passphrase\n",
    )
    assert result.returncode == 0, result.stderr
    assert "Password: " not in result.stdout
    short = run(
        settings,
        "create-admin",
        "dpo2@example.gov.uk",
        "--role",
        "dpo",
        "--ask",
        input="short\nshort\n",
    )
    assert short.returncode == 1 and "12 characters" in short.stderr


def test_export_prints_everything_as_json(db: Database, settings: Settings) -> None:
    with db.transaction() as session:
        person = factories.consenting(
            session, "newsletter", "workshops", email="export.me@example.com"
        )
        ledger.withdraw(session, person, "workshops", channel="email_link", actor="self")
        factories.member(
            session, factories.panel(session), person, special={"religion": "Buddhist"}
        )
    result = run(settings, "export", "Export.Me@example.com")
    assert result.returncode == 0, result.stderr
    data = json.loads(result.stdout)
    assert data["person"]["email"] == "export.me@example.com"
    actions = [(e["purpose"], e["action"]) for e in data["consent_events"]]
    assert actions == [
        ("newsletter", "given"),
        ("workshops", "given"),
        ("workshops", "withdrawn"),
        ("panel_contact", "given"),
    ]
    profile = data["panel_memberships"][0]["profile"]
    assert profile["special_category"] == {"religion": "Buddhist"}
    missing = run(settings, "export", "nobody@example.com")
    assert missing.returncode == 1 and "No one with that email" in missing.stderr
    invalid = run(settings, "export", "not an email")
    assert invalid.returncode == 1 and "correct format" in invalid.stderr


def test_audit_verify_passes_then_fails_after_tampering(db: Database, settings: Settings) -> None:
    with db.transaction() as session:
        factories.consenting(session, "newsletter", "family_hub_events")
    ok = run(settings, "audit", "verify")
    assert ok.returncode == 0, ok.stderr
    assert "2 events for 1 people" in ok.stdout and "OK" in ok.stdout
    tamper(db.engine, "UPDATE consent_event SET channel = 'import' WHERE seq = 1")
    bad = run(settings, "audit", "verify")
    assert bad.returncode == 1
    assert "changed after it was recorded" in bad.stderr


def test_demo_loads_once(db: Database, settings: Settings) -> None:
    first = run(settings, "demo")
    assert first.returncode == 0, first.stderr
    assert "Loaded 40 people" in first.stdout
    with db.reader() as session:
        assert len(session.exec(select(Panel)).all()) == 2
        assert len(session.exec(select(Person)).all()) == 40
    assert "already loaded" in run(settings, "demo").stdout
    assert run(settings, "audit", "verify").returncode == 0


def test_demo_refuses_a_production_database_and_writes_nothing(
    db: Database, settings: Settings
) -> None:
    before = counts(db)
    production = {
        "CONSENT_ENV": "production",
        "CONSENT_BASE_URL": "https://consent.example.gov.uk",
        "CONSENT_MAIL_BACKEND": "smtp",
    }
    result = run(settings, "demo", extra=production)
    assert result.returncode == 1, result.stdout
    assert result.stderr.strip().splitlines() == [
        "Error: Demo data cannot be loaded into a production database "
        "(CONSENT_ENV=production). Nothing was changed."
    ]
    assert counts(db) == before


def test_keys_rotate_fields(db: Database, settings: Settings) -> None:
    with db.transaction() as session:
        someone = factories.person(session, "rotate@example.com")
        factories.member(session, factories.panel(session), someone, special={"gender": "Woman"})
    new_key = Fernet.generate_key().decode()
    keys = ",".join((new_key, *settings.field_keys))
    result = run(settings, "keys", "rotate-fields", extra={"CONSENT_FIELD_KEYS": keys})
    assert result.returncode == 0, result.stderr
    assert "panel_profile: 1 value(s) re-encrypted" in result.stdout
    only_new = run(settings, "export", "rotate@example.com", extra={"CONSENT_FIELD_KEYS": new_key})
    assert only_new.returncode == 0, only_new.stderr
    profile = json.loads(only_new.stdout)["panel_memberships"][0]["profile"]
    assert profile["special_category"] == {"gender": "Woman"}


def test_rotation_stops_at_a_value_no_key_can_read_and_changes_nothing(
    db: Database, settings: Settings
) -> None:
    """A key was taken out before rotating: the run names where, so it can be put back. A
    request for a new link under that key is passed over: nobody could answer it anyway."""
    lost = crypto.FieldCipher([Fernet.generate_key().decode()])
    with db.transaction() as session:
        someone = factories.person(session, "rotate@example.com")
        member = factories.member(session, factories.panel(session), someone)
        session.add(LinkRequest(address=lost.encrypt("stranger@example.com")))
        member_id = member.id
    new_key = Fernet.generate_key().decode()
    keys = ",".join((new_key, *settings.field_keys))
    passed_over = run(settings, "keys", "rotate-fields", extra={"CONSENT_FIELD_KEYS": keys})
    assert passed_over.returncode == 0, passed_over.stderr
    assert "panel_profile: 1 value(s) re-encrypted" in passed_over.stdout
    with db.transaction() as session:
        profile = session.exec(
            select(PanelProfile).where(PanelProfile.membership_id == member_id)
        ).one()
        profile.special_category = lost.encrypt_json({"gender": "Woman"})
        profile_id, unreadable = profile.id, profile.special_category
        before = session.exec(select(LinkRequest.address)).one()
    refused = run(settings, "keys", "rotate-fields", extra={"CONSENT_FIELD_KEYS": keys})
    assert refused.returncode == 1
    assert f"A value in panel_profile (row {profile_id}) cannot be decrypted" in refused.stderr
    assert "Traceback" not in refused.stderr
    with db.reader() as session:
        assert session.exec(select(LinkRequest.address)).one() == before
        assert session.get(PanelProfile, profile_id).special_category == unreadable


@pytest.mark.parametrize("args", [["keys", "generate"]])
def test_keys_generate_prints_usable_settings(settings: Settings, args: list[str]) -> None:
    result = run(settings, *args)
    assert result.returncode == 0
    lines = dict(line.split("=", 1) for line in result.stdout.strip().splitlines())
    Fernet(lines["CONSENT_FIELD_KEYS"].encode())
    assert len(lines["CONSENT_SECRET_KEYS"]) >= 32 and len(lines["CONSENT_HASH_KEY"]) >= 32


def test_mail_send_delivers_the_queue(db: Database, settings: Settings, smtp) -> None:  # type: ignore[no-untyped-def]
    from consent.services import outbox

    with db.transaction() as session:
        person = factories.person(session, "cli-mail@example.com")
        outbox.queue(session, "welcome", person=person, context={})
    smtp_env = {
        "CONSENT_MAIL_BACKEND": "smtp",
        "CONSENT_SMTP_HOST": "127.0.0.1",
        "CONSENT_SMTP_PORT": str(smtp.port),
    }
    status = run(settings, "mail", "status", extra=smtp_env)
    assert "queued 1 (due now 1)" in status.stdout
    result = run(settings, "mail", "send", extra=smtp_env)
    assert result.returncode == 0, result.stderr
    assert "sent 1" in result.stdout
    assert [m["To"] for m in smtp.sink.messages] == ["cli-mail@example.com"]


def test_import_from_the_command_line(db: Database, settings: Settings, tmp_path: Path) -> None:
    good = tmp_path / "list.csv"
    good.write_text("email,consented_at,evidence\nfrom.paper@example.com,2026-06-01,Paper form\n")
    dry = run(settings, "import", str(good), "--purpose", "newsletter", "--dry-run")
    assert dry.returncode == 0 and "1 to import" in dry.stdout and "Dry run" in dry.stdout
    with db.reader() as session:
        assert session.exec(select(Person)).all() == []
    done = run(settings, "import", str(good), "--purpose", "newsletter")
    assert done.returncode == 0 and "Imported 1 row(s)" in done.stdout, done.stderr
    again = run(settings, "import", str(good), "--purpose", "newsletter", "--dry-run")
    assert again.returncode == 1 and "nobody new to import" in again.stderr
    bad = tmp_path / "bad.csv"
    bad.write_text("email,consented_at,evidence\nnope,2026-06-01,Paper form\n")
    refused = run(settings, "import", str(bad), "--purpose", "newsletter")
    assert (
        refused.returncode == 1
        and "line 2" in refused.stderr
        and "Nothing was imported" in refused.stderr
    )
    unknown = run(settings, "import", str(good), "--purpose", "marketing")
    assert unknown.returncode == 1 and "no purpose called" in unknown.stderr


def test_a_refused_import_reports_what_the_whole_file_holds(
    db: Database, settings: Settings, tmp_path: Path
) -> None:
    """The rows of the first chunks were written before the bad row was found; the report
    must describe the file, not what that rolled-back work made the database look like."""
    rows = [f"good{i}@example.com,2026-06-01,Paper form" for i in range(1500)]
    bad = tmp_path / "long.csv"
    bad.write_text("email,consented_at,evidence\n" + "\n".join([*rows, "nope,2026-06-01,x"]) + "\n")
    refused = run(settings, "import", str(bad), "--purpose", "newsletter")
    assert refused.returncode == 1 and "Nothing was imported" in refused.stderr
    assert "1501 row(s): 1500 to import, 0 already agreed" in refused.stdout, refused.stdout
    dry = run(settings, "import", str(bad), "--purpose", "newsletter", "--dry-run")
    assert "1501 row(s): 1500 to import, 0 already agreed" in dry.stdout, dry.stdout
    assert dry.returncode == 1 and "the import would be refused" in dry.stderr
    with db.reader() as session:
        assert session.exec(select(Person)).all() == []


@pytest.mark.parametrize(
    "args",
    [
        ["retention", "run", "--batch-size", "0"],
        ["retention", "run", "--batch-size", "-5"],
        ["import", "list.csv", "--purpose", "panel_contact", "--panel", "0"],
        ["run", "--port", "70000"],
    ],
)
def test_a_number_out_of_range_is_refused_before_anything_runs(
    db: Database, settings: Settings, tmp_path: Path, args: list[str]
) -> None:
    """A batch size of 0 used to mean the default and a negative one misbehaved."""
    (tmp_path / "list.csv").write_text("email,consented_at,evidence\n")
    args = [str(tmp_path / a) if a == "list.csv" else a for a in args]
    refused = run(settings, *args)
    assert refused.returncode == 2, refused.stdout + refused.stderr
    assert "is not in the range" in refused.stderr
    with db.reader() as session:
        assert session.exec(select(RetentionRun)).all() == []


def test_consent_run_serves_the_app_and_its_jobs(db: Database, settings: Settings) -> None:
    """What `make run` starts: the web app, plus the jobs when the scheduler is on."""
    import time
    import urllib.request

    from tests.smtp_sink import free_port

    port = free_port()
    env = child_environment(
        settings,
        CONSENT_ENV="development",
        CONSENT_SCHEDULER_TICK="1",
        CONSENT_SCHEDULER_POLL="1",
    )
    server = subprocess.Popen(
        [sys.executable, "-m", "consent.cli", "run", "--port", str(port)],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        body = ""
        deadline = time.monotonic() + 30
        while time.monotonic() < deadline:
            try:
                with urllib.request.urlopen(f"http://127.0.0.1:{port}/healthz", timeout=2) as reply:
                    body = reply.read().decode()
                break
            except OSError:
                time.sleep(0.2)
        assert '"database":"ok"' in body.replace(" ", "")
        token = "eyJwIjoiYWJjIn0.secret-looking-token-abc123"
        refused = send_raw(port, f"GET /manage/{token} extra HTTP/1.1\r\n\r\n".encode())
        assert b" 400 " in refused.split(b"\r\n")[0]

        from consent.models import JobRun

        def ran() -> bool:
            with db.reader() as session:
                return bool(session.exec(select(JobRun)).all())

        deadline = time.monotonic() + 30
        while time.monotonic() < deadline and not ran():
            time.sleep(0.3)
        assert ran(), "the in-process scheduler ran no job"
    finally:
        server.terminate()
        output = server.communicate(timeout=20)[0]
    assert f"Consent service running at http://127.0.0.1:{port}/" in output
    assert "emails are written as .eml files to" in output
    assert "Bad request" in output and "/manage/[redacted]" in output
    assert "secret-looking-token" not in output
