"""For the DPO: the audit log with its chain check, and proof that retention ran."""

from __future__ import annotations

from datetime import timedelta

from flask import render_template, request
from sqlalchemy import select

from consent.models import AuditEvent, JobRun, RetentionRun
from consent.services import audit
from consent.services import retention as retention_service
from consent.timeutil import utcnow
from consent.validation import whole_number
from consent.web import database
from consent.web.admin import DPO, audited, bp, roles
from consent.web.admin.forms import ButtonOnly

PAGE = 100


@bp.get("/audit")
@roles(DPO)
def audit_log() -> str:
    action = (request.args.get("action") or "").strip()[:64]
    actor = (request.args.get("actor") or "").strip()[:100]
    page_number = whole_number(request.args.get("page"), most=100_000) or 1
    with database().reader() as session:
        events = audit.events(
            session, action=action, actor=actor, limit=PAGE, offset=(page_number - 1) * PAGE
        )
    return render_template(
        "admin/audit.html",
        events=events,
        action=action,
        actor=actor,
        page=page_number,
        page_size=PAGE,
        button=ButtonOnly(),
        checked=None,
    )


@bp.post("/audit/verify")
@roles(DPO)
def audit_verify() -> str:
    with database().transaction() as session:
        report = audit.verify(session)
        audited(session, "audit.verified", ok=report.ok, events=report.events)
        events = list(
            session.execute(
                select(AuditEvent).order_by(AuditEvent.seq.desc()).limit(PAGE)
            ).scalars()
        )
        ledger_runs = list(
            session.execute(
                select(JobRun)
                .where(JobRun.job == "verify_ledger")
                .order_by(JobRun.started_at.desc())
                .limit(1)
            ).scalars()
        )
    return render_template(
        "admin/audit.html",
        events=events,
        action="",
        actor="",
        page=1,
        page_size=PAGE,
        button=ButtonOnly(),
        checked=report,
        ledger_run=ledger_runs[0] if ledger_runs else None,
    )


@bp.route("/retention", methods=["GET", "POST"])
@roles(DPO)
def retention() -> str:
    dry = None
    if request.method == "POST" and ButtonOnly().validate_on_submit():
        dry = retention_service.sweep(database(), dry_run=True, trigger="admin")
        with database().transaction() as session:
            audited(session, "retention.dry_run", would_remove=dict(dry.removed))
    with database().reader() as session:
        runs = list(
            session.execute(
                select(RetentionRun).order_by(RetentionRun.started_at.desc()).limit(30)
            ).scalars()
        )
        upcoming = retention_service.upcoming(session, utcnow(), timedelta(days=90))
    return render_template(
        "admin/retention.html", runs=runs, upcoming=upcoming, dry=dry, button=ButtonOnly()
    )
