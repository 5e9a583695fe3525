"""Signed links: per-action, time-limited, rotatable, revocable, and free of personal data."""

from __future__ import annotations

import base64
import json
from dataclasses import replace
from datetime import timedelta

import pytest
import time_machine
from sqlmodel import Session

from consent.config import Settings
from consent.links import (
    ExpiredLink,
    RevokedLink,
    TamperedLink,
    link_url,
    make_token,
    read_token,
    resolve,
)
from consent.services import people
from consent.timeutil import utcnow
from tests import factories


def _payload(token: str) -> dict:
    body = token.split(".")[0]
    return json.loads(base64.urlsafe_b64decode(body + "=" * (-len(body) % 4)))


def test_a_token_round_trips_to_its_person(session: Session, settings: Settings) -> None:
    person = factories.person(session, "amy@example.com", name="Amy Lee")
    token = make_token(settings, person, "unsubscribe", purpose="newsletter")
    found, claims = resolve(session, token, "unsubscribe")
    assert found.id == person.id
    assert (claims.action, claims.purpose) == ("unsubscribe", "newsletter")


def test_no_email_or_name_in_the_payload(session: Session, settings: Settings) -> None:
    person = factories.person(session, "amy.private@example.com", name="Amy Private")
    token = make_token(settings, person, "manage")
    payload = _payload(token)
    assert set(payload) == {"p", "v", "a"}
    assert payload["p"] == person.public_id and payload["p"] != str(person.id)
    decoded = json.dumps(payload).lower()
    assert "amy" not in decoded and "private" not in decoded and "example.com" not in decoded


def _flip_signature(token: str) -> str:
    """Change the signature's first character: every bit of it counts, unlike the last
    character, whose low bits are base64 padding and may decode to the same bytes."""
    body, signature = token.rsplit(".", 1)
    return f"{body}.{'Q' if signature[0] == 'A' else 'A'}{signature[1:]}"


@pytest.mark.parametrize(
    "mangle",
    [
        _flip_signature,
        lambda t: "x" + t,
        lambda t: t.replace(".", "", 1),
        lambda t: "",
        lambda t: "not.a.token",
        lambda t: t + t,
    ],
)
def test_tampered_tokens_are_refused(session: Session, settings: Settings, mangle) -> None:
    person = factories.person(session)
    with pytest.raises(TamperedLink):
        read_token(settings, mangle(make_token(settings, person, "manage")), "manage")


def test_a_forged_payload_with_a_real_signature_from_elsewhere_is_refused(
    session: Session, settings: Settings
) -> None:
    one, two = factories.person(session), factories.person(session)
    token_one, token_two = make_token(settings, one, "manage"), make_token(settings, two, "manage")
    spliced = token_one.split(".")[0] + "." + ".".join(token_two.split(".")[1:])
    with pytest.raises(TamperedLink):
        read_token(settings, spliced, "manage")


def test_a_token_for_one_action_does_not_work_for_another(
    session: Session, settings: Settings
) -> None:
    person = factories.person(session)
    token = make_token(settings, person, "unsubscribe")
    with pytest.raises(TamperedLink):
        read_token(settings, token, "manage")


def test_tokens_expire_after_their_action_s_maximum_age(
    session: Session, settings: Settings
) -> None:
    person = factories.person(session)
    start = utcnow()
    with time_machine.travel(start, tick=False):
        token = make_token(settings, person, "confirm")
    max_age = settings.link_max_age["confirm"]
    with time_machine.travel(start + timedelta(seconds=max_age - 60), tick=False):
        assert read_token(settings, token, "confirm").public_id == person.public_id
    with time_machine.travel(start + timedelta(seconds=max_age + 60), tick=False):
        with pytest.raises(ExpiredLink):
            read_token(settings, token, "confirm")
        assert read_token(settings, make_token(settings, person, "confirm"), "confirm")


def test_rotated_keys_keep_links_in_flight_working(session: Session, settings: Settings) -> None:
    person = factories.person(session)
    old = make_token(settings, person, "manage")
    rotated = replace(settings, secret_keys=("a-brand-new-key-" + "n" * 32, *settings.secret_keys))
    assert read_token(rotated, old, "manage").public_id == person.public_id
    new = make_token(rotated, person, "manage")
    with pytest.raises(TamperedLink):
        read_token(settings, new, "manage")
    retired = replace(rotated, secret_keys=rotated.secret_keys[:1])
    assert read_token(retired, new, "manage")
    with pytest.raises(TamperedLink):
        read_token(retired, old, "manage")


def test_bumping_the_token_version_revokes_every_link(session: Session, settings: Settings) -> None:
    person = factories.person(session)
    tokens = [make_token(settings, person, action) for action in ("manage", "unsubscribe")]
    people.revoke_links(person)
    session.flush()
    for token, action in zip(tokens, ("manage", "unsubscribe"), strict=True):
        with pytest.raises(RevokedLink):
            resolve(session, token, action)
    assert resolve(session, make_token(settings, person, "manage"), "manage")[0].id == person.id


def test_links_of_an_erased_person_are_revoked(session: Session, settings: Settings) -> None:
    person = factories.consenting(session, "newsletter")
    token = make_token(settings, person, "unsubscribe")
    people.erase(session, person, channel="email_link", actor="self")
    with pytest.raises(RevokedLink):
        resolve(session, token, "unsubscribe")
    with pytest.raises(ValueError):
        make_token(settings, person, "manage")


def test_link_urls_are_absolute(session: Session, settings: Settings) -> None:
    person = factories.person(session)
    url = link_url(settings, person, "manage")
    assert url.startswith("https://consent.test/manage/")
