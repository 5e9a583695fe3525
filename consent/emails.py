"""The emails the service sends: their subjects, why each is sent, and their rendering.

Every message has a plain-text and an HTML part from ``templates/email/``, sharing one
layout that states the council's name, why the person is getting it, and a link to their
preferences page. Templates never receive special category data: callers pass only the
fields listed in ``EmailSpec.fields``.
"""

from __future__ import annotations

from dataclasses import dataclass
from functools import cache
from typing import Any

from jinja2 import Environment, FileSystemLoader, StrictUndefined, select_autoescape

from consent.config import REPO_ROOT


@dataclass(frozen=True)
class EmailSpec:
    subject: str
    reason: str
    #: The purpose the unsubscribe link stops; None stops every kind of email we send.
    unsubscribe_purpose: str | None
    #: Sent because the person asked for it: goes even to a suppressed address.
    requested: bool
    fields: frozenset[str]


def _spec(
    subject: str, reason: str, purpose: str | None, requested: bool, *fields: str
) -> EmailSpec:
    return EmailSpec(subject, reason, purpose, requested, frozenset(fields))


#: What the workshop emails show of the booking: templates/email/_workshop.*.
_WORKSHOP = ("name", "workshop_title", "workshop_when", "workshop_location")

EMAILS: dict[str, EmailSpec] = {
    "confirm_newsletter": _spec(
        "Confirm you want the Family Hubs newsletter",
        "someone, probably you, asked for the Family Hubs newsletter at this address.",
        "newsletter",
        True,
        "name",
        "confirm_url",
    ),
    "confirm_subscription": _spec(
        "Confirm the emails you asked for",
        "someone, probably you, asked for emails from us at this address.",
        None,
        True,
        "name",
        "confirm_url",
        "asked_for",
    ),
    "welcome": _spec(
        "You are subscribed to the Family Hubs newsletter",
        "you confirmed you want the Family Hubs newsletter.",
        "newsletter",
        False,
        "name",
    ),
    "workshop_booked": _spec(
        "Your workshop place is booked",
        "you booked a place on a free workshop.",
        "workshops",
        True,
        *_WORKSHOP,
        "reminder",
    ),
    "workshop_reminder": _spec(
        "Reminder: your workshop is coming up",
        "you booked a place on a free workshop.",
        "workshops",
        True,
        *_WORKSHOP,
        "workshop_day",
    ),
    "workshop_changed": _spec(
        "The time or place of your workshop has changed",
        "you booked a place on a free workshop.",
        "workshops",
        True,
        *_WORKSHOP,
    ),
    "workshop_cancelled": _spec(
        "Your workshop has been cancelled",
        "you booked a place on a free workshop.",
        "workshops",
        True,
        "name",
        "workshop_title",
        "workshop_when",
    ),
    "workshop_evaluation": _spec(
        "Tell us what you thought of the workshop",
        "you booked a place on a free workshop.",
        "workshops",
        True,
        "name",
        "workshop_title",
        "evaluation_url",
    ),
    "confirm_panel": _spec(
        "Confirm you want to join the Parent Carer Panel",
        "someone, probably you, asked to join a Parent Carer Panel with this address.",
        "panel_contact",
        True,
        "name",
        "panel_name",
        "confirm_url",
    ),
    "panel_invitation": _spec(
        "You are invited to join a Parent Carer Panel",
        "a Family Hub coordinator invited you to join a Parent Carer Panel.",
        "panel_contact",
        False,
        "name",
        "panel_name",
        "family_hub",
        "join_url",
    ),
    "panel_session_invitation": _spec(
        "The next Parent Carer Panel meeting",
        "you are a member of a Parent Carer Panel.",
        "panel_contact",
        False,
        "name",
        "panel_name",
        "family_hub",
        "session_title",
        "session_when",
        "session_where",
        "session_recorded",
        "recording_consent",
    ),
    "reconsent_reminder": _spec(
        "Do you want to stay on the Parent Carer Panel?",
        "you are a member of a Parent Carer Panel and your agreement ends soon.",
        "panel_contact",
        False,
        "name",
        "panel_name",
        "given_on",
        "expires_on",
        "renew_url",
    ),
    "preferences_link": _spec(
        "Your link to manage your preferences",
        "someone, probably you, asked for a link to manage preferences for this address.",
        None,
        True,
        "name",
    ),
    "confirm_email": _spec(
        "Confirm your new email address",
        "someone, probably you, asked to change their email address to this one.",
        None,
        True,
        "confirm_url",
    ),
    "consent_withdrawn": _spec(
        "We have stopped what you asked us to stop",
        "you asked us to stop something you had agreed to.",
        None,
        True,
        "name",
        "withdrawn",
        "erasing",
    ),
    "panel_left": _spec(
        "You have left a Parent Carer Panel",
        "you asked to leave a Parent Carer Panel.",
        None,
        True,
        "name",
        "panel_name",
        "staying",
    ),
    "data_deleted": _spec(
        "We have deleted your details",
        "you asked us to delete your details.",
        None,
        True,
    ),
}


@cache
def environment() -> Environment:
    return Environment(
        loader=FileSystemLoader(str(REPO_ROOT / "templates")),
        autoescape=select_autoescape(enabled_extensions=("html",), default_for_string=False),
        undefined=StrictUndefined,
        keep_trailing_newline=True,
    )


@dataclass(frozen=True)
class Rendered:
    subject: str
    text: str
    html: str


def render(template: str, context: dict[str, Any], base: dict[str, Any]) -> Rendered:
    """Render both parts; refuses a context carrying fields the template does not declare."""
    spec = EMAILS[template]
    extra = set(context) - spec.fields
    if extra:
        raise ValueError(f"{template} does not take {', '.join(sorted(extra))}.")
    values = {field: None for field in spec.fields}
    values.update(context)
    values.update(base, subject=spec.subject, reason=spec.reason)
    env = environment()
    return Rendered(
        subject=spec.subject,
        text=env.get_template(f"email/{template}.txt").render(values).strip() + "\n",
        html=env.get_template(f"email/{template}.html").render(values),
    )
