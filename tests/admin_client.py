"""Signing in to the admin pages in tests, the way staff do: password, then a fresh code."""

from __future__ import annotations

import pyotp
from flask import Flask
from flask.testing import FlaskClient
from werkzeug.test import TestResponse

from consent.db import Database
from consent.services import admin_users
from consent.timeutil import utcnow
from tests.web import csrf

PASSWORD = "correct horse battery staple"


def make_staff(db: Database, role: str, email: str | None = None) -> tuple[str, str]:
    """Create an account; returns (email, one-time-code secret)."""
    address = email or f"{role}@example.gov.uk"
    with db.transaction() as session:
        _, secret = admin_users.create_admin(session, address, role, PASSWORD, name=role.title())
    return address, secret


def code_for(secret: str, step: int = 0) -> str:
    """A code from the authenticator, optionally from a later 30-second step."""
    return pyotp.TOTP(secret).at(utcnow().timestamp() + 30 * step)


def password_step(client: FlaskClient, email: str, password: str = PASSWORD) -> TestResponse:
    """The first step of signing in: the email address and password."""
    page = client.get("/admin/sign-in")
    return client.post(
        "/admin/sign-in",
        data={
            "csrf_token": csrf(page.get_data(as_text=True)),
            "email": email,
            "password": password,
        },
    )


def sign_in(
    client: FlaskClient, email: str, secret: str, password: str = PASSWORD, step: int = 0
) -> None:
    """Sign in; ``step`` takes the code from a later 30 seconds, as each code works once."""
    response = password_step(client, email, password)
    assert response.status_code == 302, response.get_data(as_text=True)[:500]
    page = client.get("/admin/sign-in/code")
    response = client.post(
        "/admin/sign-in/code",
        data={"csrf_token": csrf(page.get_data(as_text=True)), "code": code_for(secret, step)},
    )
    assert response.status_code == 302, response.get_data(as_text=True)[:800]


def staff_client(app: Flask, role: str) -> FlaskClient:
    client = app.test_client()
    email, secret = make_staff(app.extensions["consent.db"], role)
    sign_in(client, email, secret)
    return client
