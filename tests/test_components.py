"""Fixed GOV.UK components: rendered once, yet exactly what the GOV.UK macro makes."""

from __future__ import annotations

from flask import Flask, render_template_string

from consent.web.components import KEPT_AT_MOST, fixed_component


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
