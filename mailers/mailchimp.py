"""Talking to Mailchimp with the official ``mailchimp-marketing`` client.

``push`` sends queued audience changes: one call each when there are a few, the batch
operations endpoint (500 operations a batch) when there are many. ``reconcile`` reads the
members Mailchimp has unsubscribed or cleaned since the last run, and those it holds as
subscribed, to unsubscribe again anyone who opted out here. ``parse_webhook`` turns
Mailchimp's form-encoded webhook into a typed event, or refuses it.
"""

from __future__ import annotations

import io
import json
import logging
import tarfile
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import requests
from mailchimp_marketing import Client
from mailchimp_marketing.api_client import ApiClientError

from consent.config import Settings
from consent.db import Database
from consent.errors import InvalidInput
from consent.models import MailchimpChange
from consent.services import bookmarks
from consent.services import mailchimp as queue
from consent.timeutil import utcnow
from consent.validation import normalise_email

log = logging.getLogger(__name__)

BATCH_THRESHOLD = 10
BATCH_SIZE = 500
RETRY_DELAY = timedelta(minutes=5)
RECONCILED_AT = "mailchimp.reconciled_at"
#: Members whose reconciliation may fail before a run stops (the database is down, say).
MEMBER_ERRORS = 10
NOT_TRIED = "not tried: Mailchimp asked us to wait"


class MailchimpUnavailable(Exception):
    """Mailchimp could not be reached or answered with a server error."""


class ReconcileIncomplete(Exception):
    """Some members could not be reconciled: the next run reads them again."""


def make_client(settings: Settings) -> Client:
    """The official client; ``CONSENT_MAILCHIMP_API_URL`` points it elsewhere (tests)."""
    client = Client()
    config: dict[str, Any] = {"api_key": settings.mailchimp_api_key, "timeout": 30}
    if settings.mailchimp_server:
        config["server"] = settings.mailchimp_server
    client.set_config(config)
    if settings.mailchimp_api_url:
        client.api_client.host = settings.mailchimp_api_url.rstrip("/")
        client.api_client.server = ""
    return client


def _call(function: Callable[..., Any], *args: Any, **kwargs: Any) -> tuple[int, Any]:
    """Run one client call; return (status, body). The client returns a bare response for
    an empty error body instead of raising, so both shapes are handled."""
    try:
        result = function(*args, **kwargs)
    except ApiClientError as exc:
        return int(exc.status_code or 0), exc.text
    if isinstance(result, requests.Response):
        return result.status_code, result.text
    return 200, result


def _retryable(status: int) -> bool:
    return status == 0 or status == 429 or status >= 500


def _member_body(change: MailchimpChange) -> dict[str, Any]:
    if change.action == "subscribe":
        body: dict[str, Any] = {
            "email_address": change.email,
            "status_if_new": "subscribed",
            "status": "subscribed",
        }
        if change.opt_in_at:
            stamp = change.opt_in_at.astimezone(UTC).strftime("%Y-%m-%d %H:%M:%S")
            body["timestamp_opt"] = stamp
        if change.name:
            body["merge_fields"] = {"FNAME": change.name}
        return body
    if change.action == "unsubscribe":
        return {"status": "unsubscribed"}
    if change.action == "update_email":
        return {"email_address": change.email}
    return {}


def _operation(change: MailchimpChange, list_id: str) -> dict[str, Any]:
    member = f"/lists/{list_id}/members/{change.subscriber_hash}"
    method, path = {
        "subscribe": ("PUT", member),
        "unsubscribe": ("PATCH", member),
        "update_email": ("PATCH", member),
        "delete": ("POST", f"{member}/actions/delete-permanent"),
    }[change.action]
    operation: dict[str, Any] = {"method": method, "path": path, "operation_id": str(change.id)}
    if change.action != "delete":
        operation["body"] = json.dumps(_member_body(change))
    return operation


def _outcome(change: MailchimpChange, status: int) -> str:
    """What one change's HTTP status means: done, missing, retry (Mailchimp unavailable),
    refused (an unsubscribe or delete refused: never given up, since Mailchimp would keep
    mailing or holding the person) or failed."""
    if 200 <= status < 300:
        return "done"
    if status == 404 and change.action in queue.STOPPING:
        return "done"
    if status == 404 and change.action == "update_email":
        return "missing"
    if _retryable(status):
        return "retry"
    if change.action in queue.STOPPING:
        return "refused"
    return "failed"


@dataclass
class PushReport:
    pushed: int = 0
    retrying: int = 0
    refused: int = 0
    failed: int = 0
    batches: int = 0
    requests: int = 0
    errors: list[str] = field(default_factory=list)


class Pusher:
    def __init__(
        self,
        database: Database,
        client: Client | None = None,
        *,
        poll_interval: float = 2.0,
        poll_timeout: float = 600.0,
        batch_threshold: int = BATCH_THRESHOLD,
        batch_size: int = BATCH_SIZE,
    ) -> None:
        self.database = database
        self.settings = database.settings
        self.client = client or make_client(self.settings)
        self.poll_interval = poll_interval
        self.poll_timeout = poll_timeout
        self.batch_threshold = batch_threshold
        self.batch_size = batch_size

    def push(self) -> PushReport:
        """Push every due change; a few go one call each, many go by batch."""
        report = PushReport()
        while True:
            with self.database.transaction() as session:
                changes = queue.claim(session, self.batch_size)
            if not changes:
                return report
            if len(changes) <= self.batch_threshold:
                self._one_by_one(changes, report)
            else:
                self._batch(changes, report)
            if report.retrying:
                return report

    def _record(self, results: dict[int, tuple[str, str]], report: PushReport) -> None:
        done = [i for i, (outcome, _) in results.items() if outcome == "done"]
        retry = {i: error for i, (outcome, error) in results.items() if outcome == "retry"}
        refused = {i: error for i, (outcome, error) in results.items() if outcome == "refused"}
        failed = {i: error for i, (outcome, error) in results.items() if outcome == "failed"}
        missing = [i for i, (outcome, _) in results.items() if outcome == "missing"]
        untried = [i for i, (outcome, _) in results.items() if outcome == "untried"]
        with self.database.transaction() as session:
            queue.mark_done(session, done)
            queue.mark_moved_missing(session, missing)
            for change_id, error in {**retry, **refused}.items():
                queue.mark_retry(session, [change_id], error, RETRY_DELAY)
            for change_id, error in failed.items():
                queue.mark_failed(session, [change_id], error)
            queue.release(session, untried, NOT_TRIED, RETRY_DELAY)
        report.pushed += len(done)
        report.retrying += len(retry) + len(untried)
        report.refused += len(refused)
        report.failed += len(failed)
        report.errors.extend(f"{i}: {e}" for i, e in {**retry, **refused, **failed}.items())

    def _one_by_one(self, changes: list[MailchimpChange], report: PushReport) -> None:
        lists = self.client.lists
        list_id = self.settings.mailchimp_list_id
        results: dict[int, tuple[str, str]] = {}
        for change in changes:
            assert change.id is not None
            body = _member_body(change)
            if change.action == "subscribe":
                status, answer = _call(lists.set_list_member, list_id, change.subscriber_hash, body)
            elif change.action == "delete":
                status, answer = _call(
                    lists.delete_list_member_permanent, list_id, change.subscriber_hash
                )
            else:
                status, answer = _call(
                    lists.update_list_member, list_id, change.subscriber_hash, body
                )
            report.requests += 1
            outcome = _outcome(change, status)
            results[change.id] = (outcome, f"HTTP {status}: {str(answer)[:300]}")
            if outcome == "retry":
                for later in changes[changes.index(change) + 1 :]:
                    assert later.id is not None
                    results[later.id] = ("untried", NOT_TRIED)
                break
        self._record(results, report)

    def _batch(self, changes: list[MailchimpChange], report: PushReport) -> None:
        list_id = self.settings.mailchimp_list_id
        operations = [_operation(change, list_id) for change in changes]
        by_id = {change.id: change for change in changes}
        status, answer = _call(self.client.batches.start, {"operations": operations})
        report.requests += 1
        if status != 200 or not isinstance(answer, dict) or "id" not in answer:
            reason = f"batch not accepted: HTTP {status}: {str(answer)[:300]}"
            self._record({i: ("retry", reason) for i in by_id if i is not None}, report)
            return
        report.batches += 1
        batch = self._wait_for(answer["id"], report)
        if batch is None:
            reason = "batch did not finish in time; it will be sent again"
            self._record({i: ("retry", reason) for i in by_id if i is not None}, report)
            return
        statuses = self._batch_results(batch, report)
        results: dict[int, tuple[str, str]] = {}
        for change_id, change in by_id.items():
            assert change_id is not None
            code = statuses.get(change_id)
            if code is None:
                results[change_id] = ("retry", "no result for this operation")
            else:
                results[change_id] = (_outcome(change, code), f"HTTP {code} in batch")
        self._record(results, report)

    def _wait_for(self, batch_id: str, report: PushReport) -> dict[str, Any] | None:
        deadline = time.monotonic() + self.poll_timeout
        while time.monotonic() < deadline:
            status, answer = _call(self.client.batches.status, batch_id)
            report.requests += 1
            if status == 200 and isinstance(answer, dict) and answer.get("status") == "finished":
                return answer
            time.sleep(self.poll_interval)
        return None

    def _batch_results(self, batch: dict[str, Any], report: PushReport) -> dict[int, int]:
        """Per-operation status codes from the batch's results archive."""
        url = batch.get("response_body_url")
        if not url:
            return {}
        response = requests.get(url, timeout=60)
        report.requests += 1
        response.raise_for_status()
        codes: dict[int, int] = {}
        with tarfile.open(fileobj=io.BytesIO(response.content), mode="r:gz") as archive:
            for member in archive.getmembers():
                if not member.isfile() or not member.name.endswith(".json"):
                    continue
                handle = archive.extractfile(member)
                if handle is None:
                    continue
                for item in json.load(handle):
                    try:
                        codes[int(item["operation_id"])] = int(item["status_code"])
                    except (KeyError, TypeError, ValueError):
                        continue
        return codes


@dataclass
class ReconcileReport:
    withdrawn: int = 0
    unsubscribed_again: int = 0
    seen: int = 0
    #: Members at an address we would not accept, so nobody's here.
    skipped: int = 0
    failed: int = 0
    requests: int = 0


def _moment(value: object) -> datetime | None:
    """A Mailchimp timestamp (ISO 8601 with its offset); None if it is missing or odd."""
    if not isinstance(value, str):
        return None
    try:
        moment = datetime.fromisoformat(value)
    except ValueError:
        return None
    return moment.astimezone(UTC) if moment.tzinfo else None


def reconcile(
    database: Database, client: Client | None = None, page: int = 1000
) -> ReconcileReport:
    """Record in the ledger every unsubscribe and clean Mailchimp made since the last run,
    and unsubscribe again anyone Mailchimp re-subscribed who had opted out here.

    One member going wrong does not hold up the others. An address we would not accept is
    nobody's here, so it is skipped for good; a member that fails otherwise keeps the last
    run's bookmark, so the next run reads it again, and the run ends in an error.
    """
    settings = database.settings
    client = client or make_client(settings)
    report = ReconcileReport()
    started = utcnow()
    with database.reader() as session:
        since = bookmarks.get(session, RECONCILED_AT)
    for status in ("unsubscribed", "cleaned", "subscribed"):
        offset = 0
        while True:
            kwargs: dict[str, Any] = {"status": status, "count": page, "offset": offset}
            if since:
                kwargs["since_last_changed"] = since
            code, answer = _call(
                client.lists.get_list_members_info, settings.mailchimp_list_id, **kwargs
            )
            report.requests += 1
            if code != 200 or not isinstance(answer, dict):
                raise MailchimpUnavailable(f"Mailchimp answered HTTP {code} when listing members.")
            members = answer.get("members", [])
            for member in members:
                report.seen += 1
                email = member.get("email_address")
                if isinstance(email, str):
                    _reconcile_member(database, status, email, member, report)
            if len(members) < page:
                break
            offset += page
    if report.failed:
        raise ReconcileIncomplete(
            f"{report.failed} member(s) could not be reconciled; the next run reads them again."
        )
    with database.transaction() as session:
        bookmarks.put(session, RECONCILED_AT, started.strftime("%Y-%m-%dT%H:%M:%S+00:00"))
    return report


def _reconcile_member(
    database: Database, status: str, email: str, member: dict[str, Any], report: ReconcileReport
) -> None:
    """Reconcile one member, keeping whatever goes wrong with them to them. The log names
    the member by Mailchimp's web id, not by the address or its hash (Mailchimp's own id)."""
    member_id = member.get("web_id", "without a web id")
    try:
        normalise_email(email)
    except InvalidInput:
        report.skipped += 1
        log.warning("Mailchimp member %s skipped: an address we would not accept", member_id)
        return
    try:
        _reconcile_one(database, status, email, member, report)
    except Exception:
        report.failed += 1
        log.exception("Mailchimp member %s (%s) could not be reconciled", member_id, status)
        if report.failed >= MEMBER_ERRORS:
            raise


def _reconcile_one(
    database: Database, status: str, email: str, member: dict[str, Any], report: ReconcileReport
) -> None:
    with database.transaction() as session:
        if status == "subscribed":
            report.unsubscribed_again += queue.recheck_subscribed(session, email)
        elif queue.record_unsubscribe(
            session,
            email,
            reason=status,
            actor="mailchimp:reconcile",
            changed_at=_moment(member.get("last_changed")),
        ):
            report.withdrawn += 1


# ---- webhooks ---------------------------------------------------------------------------


class MalformedWebhook(ValueError):
    """The request is not a Mailchimp webhook we understand."""


@dataclass(frozen=True)
class WebhookEvent:
    type: str
    email: str | None = None
    old_email: str | None = None
    new_email: str | None = None
    reason: str | None = None
    list_id: str | None = None
    fired_at: datetime | None = None


HANDLED = {"unsubscribe", "cleaned", "upemail"}
#: How far ahead of our clock fired_at may be: covers clock drift and an account's time zone.
FIRED_AT_AHEAD = timedelta(days=1)
KNOWN = HANDLED | {"subscribe", "profile", "campaign"}


def _fired_at(value: str | None) -> datetime | None:
    """When Mailchimp sent the event. A time further ahead than any clock or time zone
    could put it is not Mailchimp's: taken at its word it would outrank every agreement
    given here, so it is refused rather than guessed at."""
    if not value:
        return None
    try:
        fired_at = datetime.strptime(value, "%Y-%m-%d %H:%M:%S").replace(tzinfo=UTC)
    except ValueError as exc:
        raise MalformedWebhook("fired_at is not a date") from exc
    if fired_at > utcnow() + FIRED_AT_AHEAD:
        raise MalformedWebhook("fired_at is more than a day in the future")
    return fired_at


def parse_webhook(form: Mapping[str, str]) -> WebhookEvent:
    """Check and type Mailchimp's ``type=...&data[...]=...`` form body."""
    kind = form.get("type")
    if kind not in KNOWN:
        raise MalformedWebhook("unknown or missing type")
    fired_at = _fired_at(form.get("fired_at"))
    list_id = form.get("data[list_id]")
    try:
        if kind == "upemail":
            old = normalise_email(form.get("data[old_email]"))
            new = normalise_email(form.get("data[new_email]"))
            return WebhookEvent(
                kind, old_email=old, new_email=new, list_id=list_id, fired_at=fired_at
            )
        if kind in ("unsubscribe", "cleaned", "subscribe", "profile"):
            email = normalise_email(form.get("data[email]"))
            reason = form.get("data[reason]") or form.get("data[action]") or kind
            return WebhookEvent(
                kind, email=email, reason=reason[:100], list_id=list_id, fired_at=fired_at
            )
    except Exception as exc:
        raise MalformedWebhook("the email address is missing or not valid") from exc
    return WebhookEvent(kind, list_id=list_id, fired_at=fired_at)
