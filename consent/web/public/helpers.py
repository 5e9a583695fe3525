"""Small pieces the public views share."""

from __future__ import annotations

from sqlmodel import Session

from consent import links
from consent.models import Person
from consent.web import security

MAX_TOKEN = 600

CHANNEL_WORDS = {
    "web_form": "using a form on our website",
    "email_link": "using a link in one of our emails",
    "one_click_unsubscribe": "using the unsubscribe button in your email app",
    "admin": "by telling a member of our staff",
    "import": "before we moved to this system",
    "mailchimp_webhook": "through our newsletter email system",
    "system": "automatically",
}


def resolve(session: Session, token: str, action: str) -> tuple[Person, links.LinkClaims]:
    """The person a signed link belongs to; the page it shows leaks nothing onwards."""
    security.token_page()
    if len(token) > MAX_TOKEN:
        raise links.TamperedLink("This link is not valid.")
    return links.resolve(session, token, action)
