"""The ``consent`` command: a Flask CLI group for operators and the DPO."""

from __future__ import annotations

import json
import secrets
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click
from flask import Flask, current_app
from flask.cli import FlaskGroup, routes_command, shell_command, with_appcontext

from consent import create_app
from consent.config import ConfigError, Settings, new_local_keys
from consent.db import Database
from consent.errors import DomainError

F = TypeVar("F", bound=Callable[..., Any])


def _make_app() -> Flask:
    try:
        return create_app()
    except ConfigError as exc:
        raise click.ClickException(str(exc)) from exc


def _db() -> Database:
    return current_app.extensions["consent.db"]


def _settings() -> Settings:
    return current_app.config["SETTINGS"]


def domain_errors(func: F) -> F:
    """Show a domain error as one clear line and a non-zero exit, not a traceback."""
    import functools

    @functools.wraps(func)
    def wrapper(*args: Any, **kwargs: Any) -> Any:
        try:
            return func(*args, **kwargs)
        except DomainError as exc:
            raise click.ClickException(exc.message) from exc

    return wrapper  # type: ignore[return-value]


cli = FlaskGroup(
    name="consent",
    create_app=_make_app,
    add_default_commands=False,
    add_version_option=False,
    load_dotenv=False,
    help="Consent and panel-membership manager.",
)
cli.params = [p for p in cli.params if p.name not in {"env_file", "app", "debug"}]
cli.add_command(shell_command)
cli.add_command(routes_command)


def main() -> None:
    cli.main(prog_name="consent")


@cli.command("run")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=5000, show_default=True, type=click.IntRange(1, 65535))
@with_appcontext
def run_command(host: str, port: int) -> None:
    """Serve the web application."""
    app = current_app._get_current_object()  # type: ignore[attr-defined]
    settings = _settings()
    click.echo(f"Consent service running at http://{host}:{port}/")
    click.echo(f"  admin pages:  http://{host}:{port}/admin")
    if settings.mail_backend == "file":
        click.echo(f"  emails are written as .eml files to {settings.mail_dir}")
    else:
        click.echo(f"  emails go to the {settings.mail_backend} backend")
    click.echo(f"  database: {_redact(settings.database_url)}")
    leader = None
    if settings.run_scheduler:
        from consent import scheduling

        leader = scheduling.start_in_process(app)
        click.echo("  background jobs run in this process (CONSENT_RUN_SCHEDULER is on)")
    click.echo("Press Ctrl+C to stop.")
    from werkzeug.serving import run_simple

    from consent.web.serving import RedactingRequestHandler

    try:
        run_simple(
            host,
            port,
            app,
            threaded=True,
            use_reloader=False,
            request_handler=RedactingRequestHandler,
        )
    finally:
        if leader is not None:
            leader.stop()


def _redact(url: str) -> str:
    from sqlalchemy.engine import make_url

    return make_url(url).render_as_string(hide_password=True)


@cli.group("db")
def db_group() -> None:
    """Database schema."""


@db_group.command("upgrade")
@with_appcontext
def db_upgrade() -> None:
    """Apply every migration, then load purposes and notices from the seed file."""
    from consent.schema import upgrade

    for line in upgrade(_settings()):
        click.echo(line)
    click.echo("Database is up to date.")


@cli.group("notices")
def notices_group() -> None:
    """Purposes and the published versions of their privacy wording."""


@notices_group.command("sync")
@with_appcontext
def notices_sync() -> None:
    """Publish a new version of every notice whose wording changed in the seed file."""
    from consent.services import notices

    with _db().transaction() as session:
        published = notices.sync_from_file(session)
    click.echo(f"{len(published)} new notice version(s) published.")


@notices_group.command("publish")
@click.argument("purpose")
@click.option("--statement", required=True, help="The consent statement beside the tick box.")
@click.option("--file", "text_file", required=True, type=click.Path(exists=True, dir_okay=False))
@with_appcontext
@domain_errors
def notices_publish(purpose: str, statement: str, text_file: str) -> None:
    """Publish a new version of PURPOSE's notice; earlier versions are kept."""
    from consent.services import notices

    text = Path(text_file).read_text(encoding="utf-8")
    with _db().transaction() as session:
        notice = notices.publish(session, purpose, statement, text)
    click.echo(f"{purpose}: published notice version {notice.version}")


@cli.command("create-admin")
@click.argument("email")
@click.option("--role", required=True, type=click.Choice(["coordinator", "dpo", "admin"]))
@click.option("--name", default="", help="The person's name, shown in the audit log.")
@click.option("--ask", is_flag=True, help="Ask for the password instead of generating one.")
@with_appcontext
@domain_errors
def create_admin(email: str, role: str, name: str, ask: bool) -> None:
    """Create a staff account and print how to enrol its one-time codes."""
    from consent.services import admin_users

    if ask:
        password = click.prompt("Password", hide_input=True, confirmation_prompt=True)
    else:
        password = secrets.token_urlsafe(15)
    with _db().transaction() as session:
        user, secret = admin_users.create_admin(session, email, role, password, name=name)
    click.echo(f"Created {role} account for {user.email}.")
    if not ask:
        click.echo(f"Password: {password}")
    click.echo("Add this account to an authenticator app to get one-time codes:")
    click.echo(f"  secret: {secret}")
    click.echo(f"  {admin_users.totp_uri(user, secret, _settings().service_name)}")


@cli.group("audit")
def audit_group() -> None:
    """Proof that the records have not been tampered with."""


@audit_group.command("verify")
@with_appcontext
def audit_verify() -> None:
    """Check every consent event chain and the audit log; exit 1 if anything was altered."""
    from consent.services import audit, ledger

    with _db().reader() as session:
        ledger_report = ledger.verify(session)
        audit_report = audit.verify(session)
    click.echo(
        f"Consent ledger: {ledger_report.events} events for {ledger_report.people} people checked."
    )
    click.echo(f"Audit log: {audit_report.events} events checked.")
    problems = ledger_report.problems + audit_report.problems
    if problems:
        click.echo(f"FAILED: {len(problems)} problem(s) found:", err=True)
        for problem in problems:
            click.echo(f"  - {problem}", err=True)
        sys.exit(1)
    click.echo("OK: every chain is intact.")


@cli.command("export")
@click.argument("email")
@with_appcontext
@domain_errors
def export_command(email: str) -> None:
    """Print everything held about the person with EMAIL, as JSON."""
    from consent.services import audit, people, rights

    with _db().transaction() as session:
        person = people.find_by_email(session, email)
        if person is None:
            raise click.ClickException("No one with that email address is on our records.")
        data = rights.export_person(session, person)
        audit.record(
            session,
            "person.exported",
            actor="cli",
            object_type="person",
            object_id=person.public_id,
        )
    click.echo(json.dumps(data, indent=2, ensure_ascii=False))


@cli.command("import")
@click.argument("file", type=click.Path(exists=True, dir_okay=False, path_type=Path))
@click.option("--purpose", required=True, help="The purpose they agreed to, e.g. newsletter.")
@click.option(
    "--panel",
    "panel_id",
    type=click.IntRange(1, 2**31 - 1),
    default=None,
    help="For panel members: the panel.",
)
@click.option("--dry-run", is_flag=True, help="Check every row and change nothing.")
@with_appcontext
@domain_errors
def import_command(file: Path, purpose: str, panel_id: int | None, dry_run: bool) -> None:
    """Import people who agreed elsewhere from FILE (CSV: email, consented_at, evidence).

    A dry run exits 1 when the import would be refused, so a script can check a file first.
    """
    from consent.services import imports

    if dry_run:
        with _db().reader() as session:
            result = imports.preview(session, file, purpose, panel_id=panel_id)
    else:
        try:
            with _db().transaction() as session:
                result = imports.commit(
                    session,
                    file,
                    purpose,
                    actor="cli",
                    actor_id=None,
                    source=file.name,
                    panel_id=panel_id,
                )
        except imports.ImportRefused:
            # Previewed after the rollback: the chunks written before the bad row was found
            # would otherwise count as already agreed.
            with _db().reader() as session:
                _report_import(imports.preview(session, file, purpose, panel_id=panel_id))
            raise
    _report_import(result)
    if dry_run and not result.ok:
        raise click.ClickException(
            f"Dry run: {result.errors} row(s) have problems, so the import would be refused."
            if result.errors
            else "Dry run: there is nobody new to import, so the import would be refused."
        )
    click.echo(
        "Dry run: nothing was imported." if dry_run else f"Imported {result.to_import} row(s)."
    )


def _report_import(result: Any) -> None:
    click.echo(
        f"{result.total} row(s): {result.to_import} to import, {result.already} already agreed, "
        f"{result.suppressed} asked not to be contacted, {result.errors} with problems."
    )
    for row in result.problems[:50]:
        click.echo(f"  line {row.line}: {row.message}", err=True)


@cli.command("demo")
@with_appcontext
@domain_errors
def demo_command() -> None:
    """Load demo panels, sessions, workshops and people (example.com addresses); refused
    in production."""
    from consent.services import demo

    with _db().transaction() as session:
        summary = demo.load(session)
    if summary.skipped:
        click.echo("Demo data is already loaded.")
        return
    click.echo(
        f"Loaded {summary.people} people, {summary.panels} panels with {summary.sessions} "
        f"sessions, {summary.workshops} workshops and {summary.bookings} bookings."
    )


@cli.group("retention")
def retention_group() -> None:
    """Deleting what the council promised not to keep."""


@retention_group.command("run")
@click.option("--dry-run", is_flag=True, help="List what would go, and change nothing.")
@click.option(
    "--batch-size", type=click.IntRange(min=1), default=None, help="Rows per transaction."
)
@with_appcontext
def retention_run(dry_run: bool, batch_size: int | None) -> None:
    """Run the retention sweep now."""
    from consent.services import retention

    report = retention.sweep(_db(), dry_run=dry_run, batch_size=batch_size, trigger="cli")
    if dry_run:
        click.echo("Dry run: nothing was changed.")
        for line in report.would[:200]:
            click.echo(f"  {line}")
        if len(report.would) > 200:
            click.echo(f"  ... and {len(report.would) - 200} more")
    removed = report.as_dict()
    verb = "would remove" if dry_run else "removed"
    click.echo(
        f"Retention {verb}: " + (", ".join(f"{k} {v}" for k, v in removed.items()) or "nothing")
    )
    click.echo(f"Took {report.seconds:.2f} s.")


@cli.group("mail")
def mail_group() -> None:
    """The mail queue."""


@mail_group.command("send")
@with_appcontext
def mail_send() -> None:
    """Deliver every message that is due now."""
    from consent import jobs

    report = jobs.deliver_mail(_db())
    click.echo(
        f"sent {report['sent']}, retrying {report['retrying']}, failed {report['failed']}, "
        f"waiting for the relay {report['released']}"
    )
    for error in report["errors"][:20]:
        click.echo(f"  {error}", err=True)


@mail_group.command("status")
@with_appcontext
def mail_status() -> None:
    """How the mail queue is doing."""
    from consent.services import outbox

    with _db().reader() as session:
        health = outbox.health(session)
    click.echo(
        f"queued {health.queued} (due now {health.due}), sending {health.sending}, "
        f"failed {health.failed}, sent in the last day {health.sent_last_day}"
    )


@cli.group("mailchimp")
def mailchimp_group() -> None:
    """The Mailchimp newsletter audience."""


@mailchimp_group.command("push")
@with_appcontext
def mailchimp_push() -> None:
    """Push queued audience changes to Mailchimp now."""
    from consent import jobs

    click.echo(json.dumps(jobs.push_mailchimp(_db()), indent=2))


@mailchimp_group.command("reconcile")
@with_appcontext
def mailchimp_reconcile() -> None:
    """Record unsubscribes and cleaned addresses Mailchimp has seen since the last run."""
    from consent import jobs

    click.echo(json.dumps(jobs.reconcile_mailchimp(_db()), indent=2))


@cli.group("keys")
def keys_group() -> None:
    """Secret keys and field encryption keys."""


@keys_group.command("generate")
def keys_generate() -> None:
    """Print a fresh set of keys as environment variables, for a production start."""
    keys = new_local_keys()
    click.echo(f"CONSENT_SECRET_KEYS={keys['secret_key']}")
    click.echo(f"CONSENT_FIELD_KEYS={keys['field_key']}")
    click.echo(f"CONSENT_HASH_KEY={keys['hash_key']}")


@keys_group.command("rotate-fields")
@with_appcontext
def keys_rotate_fields() -> None:
    """Re-encrypt every encrypted field under the newest of CONSENT_FIELD_KEYS."""
    from consent import crypto

    try:
        with _db().transaction() as session:
            counts = crypto.rotate_all(session)
    except crypto.UndecryptableField as exc:
        raise click.ClickException(str(exc)) from exc
    for table, done in counts.items():
        click.echo(f"{table}: {done} value(s) re-encrypted")
    click.echo("Done. Keys other than the first in CONSENT_FIELD_KEYS can now be removed.")


if __name__ == "__main__":
    main()
