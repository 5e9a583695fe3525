"""``/webhooks/mailchimp/<secret>``: what Mailchimp tells us about the audience.

A wrong secret is a 404 (the endpoint does not admit it exists); malformed data, or an
event that does not name this service's audience, is a 400 with nothing written.
Unsubscribes and cleaned addresses become ledger withdrawals, an address change becomes a
details correction. Other event types are acknowledged and ignored: we run our own double
opt-in, so a subscribe in Mailchimp proves nothing.
"""

from __future__ import annotations

import hmac
import logging

from flask import Blueprint, Response, abort, request

from consent.errors import DomainError
from consent.services import mailchimp
from consent.web import database, settings
from mailers.mailchimp import MalformedWebhook, parse_webhook

bp = Blueprint("webhooks", __name__)
log = logging.getLogger(__name__)


@bp.route("/webhooks/mailchimp/<secret>", methods=["GET", "POST"])
def mailchimp_webhook(secret: str) -> Response | tuple[str, int]:
    expected = settings().mailchimp_webhook_secret
    if not expected or not hmac.compare_digest(secret.encode(), expected.encode()):
        abort(404)
    if request.method == "GET":
        return "", 200
    try:
        event = parse_webhook(request.form)
    except MalformedWebhook as exc:
        return f"Not a Mailchimp webhook we understand: {exc}.", 400
    if event.list_id != settings().mailchimp_list_id:
        return "That audience is not the one this service keeps, or none was named.", 400
    try:
        with database().transaction() as session:
            if event.type in ("unsubscribe", "cleaned") and event.email:
                mailchimp.record_unsubscribe(
                    session,
                    event.email,
                    reason=event.reason or event.type,
                    actor="mailchimp:webhook",
                    changed_at=event.fired_at,
                )
            elif event.type == "upemail" and event.old_email and event.new_email:
                mailchimp.record_email_change(
                    session, event.old_email, event.new_email, actor="mailchimp:webhook"
                )
    except DomainError as exc:
        log.warning("mailchimp webhook %s not applied: %s", event.type, exc.message)
    return "", 200
