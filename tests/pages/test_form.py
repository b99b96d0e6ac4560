"""The score-one-lead form `/models/{name}/score` on a real uvicorn server, with a small model
that takes a category, numbers (one named like `emp.var.rate`) and a bounded field: the form is
built from the model's fields, CSRF-protected, scores with the API's own code (the same float),
and turns bad input into the form again with one plain line naming the field (422)."""

from __future__ import annotations

import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from bundle_helpers import train_plan_bundle
from markupsafe import escape
from pages_helpers import running

from leadscore.config import Settings

pytestmark = pytest.mark.slow

MODEL = "formtest"
FORM = f"/models/{MODEL}/score"


@pytest.fixture(scope="module")
def form_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model: plan (category), emp.var.rate and visits (numbers, visits bounded)."""
    return train_plan_bundle(
        tmp_path_factory.mktemp("formtest"), "form_test", MODEL, seed=11, id_prefix="F",
        with_report=True, bounds={"visits": [0, 500]},
        labels={"plan": {"label": "Plan <b>tier</b>", "values": {"enterprise": "Enterprise"}}})


@pytest.fixture(scope="module")
def url(form_bundle: Path, tmp_path_factory: pytest.TempPathFactory) -> Iterator[str]:
    home = tmp_path_factory.mktemp("form-home")
    settings = Settings(model_uri=str(form_bundle), home=home, api_keys="", reload_seconds=0,
                        tracking_uri=f"sqlite:///{home / 'mlflow.db'}")
    with running(settings) as address:
        yield address


def token_of(html: str) -> str:
    found = re.search(r'name="csrf_token" value="([^"]+)"', html)
    assert found, "no CSRF token in the form"
    return found.group(1)


def probability_of(html: str) -> float:
    found = re.search(r'data-probability="([^"]+)"', html)
    assert found, "no result in the page"
    return float(found.group(1))


def api(url: str, lead: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{url}/v1/models/{MODEL}/score", json={"leads": [lead]}, timeout=30)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["results"][0]
    return result


def post(url: str, fields: dict[str, str], token: str | None) -> httpx.Response:
    data = dict(fields)
    if token is not None:
        data["csrf_token"] = token
    return httpx.post(url + FORM, data=data, timeout=30)


def test_form_is_built_from_the_models_fields(url: str) -> None:
    response = httpx.get(url + FORM, timeout=30)
    assert response.status_code == 200
    html = response.text
    assert '<select id="f-1" name="plan">' in html or 'name="plan"' in html
    for level in ("free", "team"):
        assert f'<option value="{level}">{level}</option>' in html
    assert '<option value="enterprise">Enterprise</option>' in html  # the spec's words
    assert '<option value="">(not given)</option>' in html
    assert re.search(r'name="emp\.var\.rate" type="number" step="any"', html)
    assert re.search(r'name="visits" type="number" step="1" min="0.0" max="500.0"', html)
    assert "Employment variation rate" in html  # labels in words
    # a label from the spec is text, never markup
    assert "Plan &lt;b&gt;tier&lt;/b&gt;" in html and "<b>tier</b>" not in html
    assert 'name="lead_id"' not in html


def test_form_probability_equals_the_api(url: str) -> None:
    token = token_of(httpx.get(url + FORM, timeout=30).text)
    cases = [
        ({"plan": "enterprise", "emp.var.rate": "1.25", "visits": "4"},
         {"plan": "enterprise", "emp.var.rate": 1.25, "visits": 4}),
        ({"plan": "", "emp.var.rate": "-0.3", "visits": ""}, {"emp.var.rate": -0.3}),
        ({"plan": "", "emp.var.rate": "", "visits": ""}, {}),  # all blank: all missing
    ]
    for form, lead in cases:
        response = post(url, form, token)
        assert response.status_code == 200, response.text[-1500:]
        expected = api(url, lead)
        shown = probability_of(response.text)
        assert abs(shown - expected["probability"]) <= 1e-9
        assert shown == expected["probability"]
        html = response.text
        assert f'data-score="{expected["score"]}"' in html
        assert f'data-tier="{expected["tier"]}"' in html
        assert f'<span id="tier-label">{expected["tier_label"]}</span>' in html
        for reason in expected["reasons"]:
            assert str(escape(reason["text"])) in html  # as text: the label holds markup
        # the values entered are shown again
        if form["emp.var.rate"]:
            assert f'value="{form["emp.var.rate"]}"' in html


def test_post_without_or_with_a_wrong_token_is_403(url: str) -> None:
    fields = {"plan": "team", "emp.var.rate": "0", "visits": "1"}
    for token in (None, "", "0" * 64):
        response = post(url, fields, token)
        assert response.status_code == 403
        assert "did not come from this site" in response.text
        assert 'id="result"' not in response.text


def test_text_in_a_number_field_is_422_naming_the_field(url: str) -> None:
    token = token_of(httpx.get(url + FORM, timeout=30).text)
    response = post(url, {"plan": "team", "emp.var.rate": "<script>x</script>", "visits": "2"},
                    token)
    assert response.status_code == 422
    html = response.text
    assert "Employment variation rate (emp.var.rate) must be a number" in html
    assert "<script>x</script>" not in html
    assert 'value="&lt;script&gt;x&lt;/script&gt;"' in html  # shown back, as text
    assert "Traceback" not in html and 'id="result"' not in html
    for bad, words in (("nan", "finite"), ("inf", "finite")):
        response = post(url, {"emp.var.rate": bad}, token)
        assert response.status_code == 422 and words in response.text


def test_value_outside_the_bounds_and_unknown_choice_are_422(url: str) -> None:
    token = token_of(httpx.get(url + FORM, timeout=30).text)
    response = post(url, {"visits": "-5"}, token)
    assert response.status_code == 422
    assert "field &#39;visits&#39;" in response.text and "lead 0" not in response.text
    response = post(url, {"plan": "platinum"}, token)
    assert response.status_code == 422
    assert "(plan) must be one of the listed choices" in response.text


def test_form_body_must_be_urlencoded(url: str) -> None:
    response = httpx.post(url + FORM, json={"plan": "team"}, timeout=30)
    assert response.status_code == 415


def test_browser_fills_numbers_and_gets_the_apis_probability(url: str, browser: Any) -> None:
    hosts: set[str] = set()
    page = browser.new_page()
    try:
        page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
        page.goto(url + FORM)
        page.select_option("select[name=plan]", "team")
        page.fill("input[name='emp.var.rate']", "0.75")
        page.fill("input[name=visits]", "6")
        page.click("button[type=submit]")
        page.wait_for_selector("#result")
        shown = float(str(page.locator("#result").get_attribute("data-probability")))
        tier = page.locator("#tier-label").inner_text()
    finally:
        page.close()
    expected = api(url, {"plan": "team", "emp.var.rate": 0.75, "visits": 6})
    assert abs(shown - expected["probability"]) <= 1e-9
    assert tier == expected["tier_label"]
    assert hosts == {url.split("/")[2]}


def test_with_api_keys_the_pages_send_to_sign_in(form_bundle: Path,
                                                 tmp_path: Path) -> None:
    """The pages ask `require_page_user`: with keys configured and nobody signed in, the form,
    its POST and the model page redirect to /signin and score nothing."""
    settings = Settings(model_uri=str(form_bundle), home=tmp_path, api_keys="k-0123456789abcdef",
                        reload_seconds=0, tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}")
    with running(settings) as address:
        for method, path in (("GET", FORM), ("POST", FORM), ("GET", f"/models/{MODEL}")):
            response = httpx.request(method, address + path, data={"plan": "team"}
                                     if method == "POST" else None, timeout=30)
            assert response.status_code == 303, (method, path, response.status_code)
            assert response.headers["location"].startswith("/signin?next=")
            assert "data-probability" not in response.text
