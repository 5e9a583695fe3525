"""Fixed markup: rendered once, yet exactly what the macro or url_for makes."""

from __future__ import annotations

from flask import Flask, render_template_string, url_for
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from consent.models import Purpose
from consent.services import notices
from consent.web.components import (
    KEPT_AT_MOST,
    fixed_component,
    fixed_url,
    notice_html,
    token_url,
)


def _macro(name: str, macro: str, params: dict[str, str]) -> str:
    return render_template_string(
        f'{{% from "govuk_frontend_jinja/components/{name}/macro.html" import {macro} %}}'
        f"{{{{ {macro}(params) }}}}",
        params=params,
    )


def test_a_fixed_component_is_the_macro_s_own_markup(app: Flask) -> None:
    with app.test_request_context("/"):
        for name, macro, params in (
            ("button", "govukButton", {"text": "Stop everything", "classes": "govuk-button--x"}),
            ("skip-link", "govukSkipLink", {"href": "#main", "text": "Skip"}),
            (
                "service-navigation",
                "govukServiceNavigation",
                {"serviceName": "S", "serviceUrl": "/"},
            ),
        ):
            assert str(fixed_component(name, params)) == _macro(name, macro, params)


def test_each_set_of_arguments_is_kept_apart_and_escaped(app: Flask) -> None:
    with app.test_request_context("/"):
        first = fixed_component("button", {"text": "First"})
        second = fixed_component("button", {"text": "<script>x</script>"})
        assert "First" in first and "First" not in second
        assert "<script>" not in second and "&lt;script&gt;" in second
        assert fixed_component("button", {"text": "First"}) is first


def test_arguments_that_vary_per_request_do_not_fill_memory(app: Flask) -> None:
    with app.test_request_context("/"):
        for number in range(KEPT_AT_MOST + 50):
            assert f"Item {number}\n" in fixed_component("button", {"text": f"Item {number}"})
        assert len(app.extensions["consent.components"]) == KEPT_AT_MOST


def test_a_notice_s_wording_is_rendered_once_and_escaped(app: Flask) -> None:
    with app.app_context():
        db = app.extensions["consent.db"]
        with db.transaction() as session:
            published = notices.publish(
                session, "newsletter", "Yes, <b>bold</b>.", "First <script>x</script>\n\nSecond"
            )
            purpose = notices.get_purpose(session, "newsletter")
    with app.test_request_context("/"):
        html = notice_html(published, purpose)
        assert "<script>" not in html and "&lt;script&gt;x&lt;/script&gt;" in html
        assert '<p class="govuk-body">First' in html and '<p class="govuk-body">Second</p>' in html
        assert purpose.lawful_basis in html and purpose.retention in html
        assert f"Version {published.version}, published" in html
        assert notice_html(published, purpose) is html
        changed = Purpose(**{**purpose.model_dump(), "retention": "Until the end of time."})
        other = notice_html(published, changed)
        assert "Until the end of time." in other and purpose.retention not in other


def test_fixed_urls_are_url_for_s_own_and_follow_the_mount_point(app: Flask) -> None:
    with app.test_request_context("/"):
        assert fixed_url("static", filename="app.css") == url_for("static", filename="app.css")
        assert fixed_url("public.privacy") == url_for("public.privacy")
    with app.test_request_context("/", base_url="http://localhost/council"):
        assert fixed_url("public.privacy") == url_for("public.privacy")
        assert fixed_url("public.privacy").startswith("/council/")


_TOKEN_PAGES = ("public.manage", "public.details", "public.delete", "public.stop_everything")


@settings(max_examples=300, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    token=st.one_of(
        st.text(alphabet="ABCXYZabcxyz0189_-.", min_size=1, max_size=200),
        st.text(min_size=1, max_size=40).filter(lambda text: "/" not in text),
    ),
    endpoint=st.sampled_from(_TOKEN_PAGES),
)
def test_a_token_url_is_url_for_s_own(app: Flask, token: str, endpoint: str) -> None:
    """Any token, including ones a URL must quote (these go through url_for itself)."""
    with app.test_request_context("/"):
        assert token_url(endpoint, token) == url_for(endpoint, token=token)
    with app.test_request_context("/", base_url="http://localhost/council"):
        assert token_url(endpoint, token) == url_for(endpoint, token=token)


def test_token_urls_keep_their_other_values_apart(app: Flask) -> None:
    with app.test_request_context("/"):
        for booking in (1, 22, 1):
            assert token_url("public.cancel_booking", "a.b-c_d", booking_id=booking) == url_for(
                "public.cancel_booking", token="a.b-c_d", booking_id=booking
            )
        assert token_url("public.manage", "first") != token_url("public.manage", "second")


def test_token_urls_that_vary_do_not_crowd_out_fixed_urls(app: Flask) -> None:
    with app.test_request_context("/"):
        for booking in range(KEPT_AT_MOST + 10):
            token_url("public.cancel_booking", "a.b", booking_id=booking)
        assert fixed_url("public.accessibility") == url_for("public.accessibility")
        kept = app.extensions["consent.urls"]
        assert any(key[1] == "public.accessibility" for key in kept)
