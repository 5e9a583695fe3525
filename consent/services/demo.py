"""A realistic demo data set, so a newcomer sees a working service on first run.

Every address uses example.com, which is reserved and never delivers to anyone.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from datetime import timedelta

from sqlmodel import Session, select

from consent.db import settings_of
from consent.errors import DomainError
from consent.models import Panel
from consent.options import PREFER_NOT_TO_SAY, options
from consent.services import ledger, panels, people, workshops
from consent.timeutil import utcnow

FIRST = [
    "Amira",
    "Ben",
    "Chloe",
    "Dev",
    "Efua",
    "Finn",
    "Grace",
    "Hamza",
    "Isla",
    "Jay",
    "Kiran",
    "Leah",
    "Mo",
    "Nia",
    "Oscar",
    "Priya",
    "Rhys",
    "Sana",
    "Tom",
    "Zara",
]
LAST = [
    "Ahmed",
    "Brown",
    "Clarke",
    "Davies",
    "Evans",
    "Khan",
    "Lewis",
    "Nowak",
    "Okafor",
    "Patel",
    "Roberts",
    "Singh",
    "Taylor",
    "Walsh",
    "Wright",
]
PANELS = [
    (
        "Northfield Parent Carer Panel",
        "Northfield Family Hub",
        "Parents and carers from Northfield meet every two months to shape what the Family "
        "Hub offers, from opening hours to new groups.",
    ),
    (
        "Riverside SEND Parent Carer Panel",
        "Riverside Family Hub",
        "For parents and carers of children with special educational needs and disabilities. "
        "The panel reviews the local offer and how easy it is to get help.",
    ),
]
WORKSHOPS = [
    (
        "Helping your baby sleep",
        "Practical ideas for bedtimes and night waking, with time "
        "for your questions. For parents and carers of babies up to 12 months.",
    ),
    (
        "Talking with toddlers",
        "Simple ways to help your child's early language at home, "
        "from a speech and language therapist.",
    ),
    (
        "Understanding big feelings",
        "How to support children aged 4 to 11 through worry, "
        "anger and tears, and look after yourself too.",
    ),
]


@dataclass
class DemoSummary:
    people: int = 0
    panels: int = 0
    sessions: int = 0
    workshops: int = 0
    bookings: int = 0
    skipped: bool = False


def load(session: Session, *, seed: int = 7, people_count: int = 40) -> DemoSummary:
    """Add demo panels, sessions, workshops and people; does nothing if already loaded.

    Never in production: the ledger is append-only, so fake people's consent could not be
    taken out again, and their counts would go into the reports to government.
    """
    if settings_of(session).is_production:
        raise DomainError(
            "Demo data cannot be loaded into a production database (CONSENT_ENV=production). "
            "Nothing was changed."
        )
    summary = DemoSummary()
    if session.exec(select(Panel).where(Panel.name == PANELS[0][0])).first():
        summary.skipped = True
        return summary
    rng = random.Random(seed)  # noqa: S311 (demo data, not security)
    opts = options()
    now = utcnow()
    made_panels = []
    for name, hub, description in PANELS:
        panel = panels.create_panel(session, name=name, family_hub=hub, description=description)
        made_panels.append(panel)
        summary.panels += 1
        for months in (-2, 1, 3):
            start = (now + timedelta(days=30 * months)).replace(
                hour=18, minute=0, second=0, microsecond=0
            )
            panels.create_session(
                session,
                panel,
                title=f"{hub} panel meeting",
                starts_at=start,
                format=rng.choice(["online", "in_person"]),
                location=hub,
                recorded=rng.random() < 0.5,
            )
            summary.sessions += 1
    made_workshops = []
    for index, (title, description) in enumerate(WORKSHOPS):
        start = (now + timedelta(days=7 * (index + 1))).replace(
            hour=10, minute=0, second=0, microsecond=0
        )
        made_workshops.append(
            workshops.create_workshop(
                session,
                title=title,
                description=description,
                starts_at=start,
                ends_at=start + timedelta(hours=1, minutes=30),
                capacity=rng.choice([12, 20, 30]),
                location="Online (Microsoft Teams)",
            )
        )
        summary.workshops += 1
    for index in range(people_count):
        first, last = rng.choice(FIRST), rng.choice(LAST)
        email = f"{first.lower()}.{last.lower()}{index}@example.com"
        person = people.find_or_create(session, email, name=f"{first} {last}")
        summary.people += 1
        for key in ("newsletter", "family_hub_events", "workshops"):
            if rng.random() < 0.5:
                ledger.give(
                    session,
                    person,
                    key,
                    channel="web_form",
                    actor="self",
                    at=now - timedelta(days=rng.randint(1, 400)),
                )
        if rng.random() < 0.35:
            special = {
                q.key: rng.choice([*q.options, PREFER_NOT_TO_SAY])
                for q in opts.special_category
                if not q.free_text and rng.random() < 0.7
            }
            profile = panels.ProfileInput(
                postcode=rng.choice(["NE1 4ST", "SW1A 1AA", "M1 1AE", "B33 8TH", "LS1 4AP"]),
                age_band=rng.choice(opts.age_bands[1:5]),
                children_count=rng.randint(1, 4),
                children_ages=[rng.randint(0, 17) for _ in range(rng.randint(1, 3))],
                services_used=rng.sample(list(opts.family_hub_services[:-1]), 2),
                special_category=special,
            )
            panels.join(
                session,
                rng.choice(made_panels),
                person,
                profile,
                channel="web_form",
                actor="self",
                recordings=rng.random() < 0.5,
                at=now - timedelta(days=rng.randint(1, 700)),
            )
        if rng.random() < 0.3:
            workshop = rng.choice(made_workshops)
            _, created = workshops.book(
                session,
                workshop,
                name=f"{first} {last}",
                email=email,
                setting=None,
                district=rng.choice(opts.districts),
                job_role=opts.job_roles[0],
            )
            summary.bookings += int(created)
    return summary
