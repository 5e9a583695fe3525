"""The figures on the admin dashboard, each a single indexed query."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

from sqlalchemy import func, select
from sqlmodel import Session

from consent.models import (
    ConsentState,
    Panel,
    PanelMembership,
    Purpose,
    RetentionRun,
    RightsRequest,
)
from consent.services import mailchimp, outbox, rights
from consent.timeutil import utcnow


@dataclass(frozen=True)
class Dashboard:
    consents: list[tuple[str, int]]
    panels: list[tuple[Panel, int]]
    expiring_soon: int
    last_retention: RetentionRun | None
    mail: outbox.QueueHealth
    mailchimp: dict[str, int]
    overdue_requests: int
    open_requests: int


def build(session: Session, now: datetime | None = None) -> Dashboard:
    now = now or utcnow()
    consents = session.execute(
        select(Purpose.title, func.count(ConsentState.person_id))
        .outerjoin(
            ConsentState,
            (ConsentState.purpose_id == Purpose.id) & (ConsentState.status == "given"),
        )
        .group_by(Purpose.id, Purpose.title, Purpose.sort_order)
        .order_by(Purpose.sort_order)
    ).all()
    panels = session.execute(
        select(Panel, func.count(PanelMembership.id))
        .outerjoin(
            PanelMembership,
            (PanelMembership.panel_id == Panel.id) & PanelMembership.left_at.is_(None),
        )
        .group_by(Panel.id)
        .order_by(Panel.name)
    ).all()
    expiring = session.execute(
        select(func.count()).where(
            PanelMembership.left_at.is_(None),
            PanelMembership.expires_at <= now + timedelta(days=30),
        )
    ).scalar_one()
    last_run = session.execute(
        select(RetentionRun).order_by(RetentionRun.started_at.desc()).limit(1)
    ).scalar()
    requests = RightsRequest.__table__
    overdue = session.execute(
        select(func.count()).where(
            requests.c.status == "open", requests.c.due_at < rights.overdue_cutoff(now)
        )
    ).scalar_one()
    open_count = session.execute(
        select(func.count()).where(requests.c.status == "open")
    ).scalar_one()
    return Dashboard(
        consents=[(title, count) for title, count in consents],
        panels=[(panel, count) for panel, count in panels],
        expiring_soon=expiring,
        last_retention=last_run,
        mail=outbox.health(session, now),
        mailchimp=mailchimp.sync_state(session),
        overdue_requests=overdue,
        open_requests=open_count,
    )
