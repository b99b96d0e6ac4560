"""The model page `/models/{name}` served by a real uvicorn server: the registered test model
(its @champion, with a version history) and a monitoring report written by the real `monitor`;
then the page and the score form in headless Chromium, the form's probability equal to the API's.
"""

from __future__ import annotations

import json
import re
import shutil
from collections.abc import Iterator
from datetime import UTC, datetime
from html.parser import HTMLParser
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pyarrow as pa
import pytest
from pages_helpers import running

from leadscore.config import Settings
from leadscore.scoring import ModelBundle, score_arrays

pytestmark = pytest.mark.slow

MODEL = "test-leads"


def write_monitor_report(home: Path, bundle: ModelBundle, leads: pd.DataFrame) -> dict[str, Any]:
    """Two weekly cohorts of the model's own scores in a score store, their outcomes joined
    back by `monitor.monitor`, saved where `leadscore monitor` saves it."""
    from leadscore import modelpage
    from leadscore.monitor import monitor
    from leadscore.store import ScoreStore, history_rows

    store = ScoreStore(home / "scores")
    sample = leads.head(400).reset_index(drop=True)
    outcomes = []
    for week, (start, part) in enumerate((("2026-01-05", sample[:200]),
                                          ("2026-01-12", sample[200:]))):
        scored_at = pd.Timestamp(f"{start}T10:00:00", tz="UTC")
        scores = score_arrays(bundle, part)
        assert scores.matrix is not None
        ids = pa.array(part["lead_id"].astype(str).tolist(), pa.string())
        store.append(MODEL, history_rows(ids, bundle.version, scored_at.to_pydatetime(),
                                         scores.probability, scores.score, scores.tier,
                                         scores.matrix), key=f"w{week}")
        converted = part["converted"].astype(str) == "1"
        outcomes.append(pd.DataFrame({
            "lead_id": part["lead_id"].astype(str),
            "converted_at": [scored_at + pd.Timedelta(days=5) if c else pd.NaT
                             for c in converted]}))
    frame = pd.concat(outcomes, ignore_index=True)
    frame["converted_at"] = pd.to_datetime(frame["converted_at"], utc=True)
    report = monitor(store, MODEL, frame, horizon_days=30,
                     as_of=pd.Timestamp("2026-03-01", tz="UTC").to_pydatetime())
    path = modelpage.monitor_path(home / "reports", MODEL)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report), encoding="utf-8")
    return report


@pytest.fixture(scope="module")
def site(trained: Any, bundle: ModelBundle, synth_leads: pd.DataFrame,
         tmp_path_factory: pytest.TempPathFactory) -> Iterator[dict[str, Any]]:
    home = tmp_path_factory.mktemp("pages-home")
    report = write_monitor_report(home, bundle, synth_leads)
    settings = Settings(tracking_uri=trained.settings.tracking_uri,
                        models_dir=trained.settings.models_dir, model_name=MODEL, home=home,
                        api_keys="", reload_seconds=0)
    with running(settings) as url:
        yield {"url": url, "home": home, "report": report}


class Page(HTMLParser):
    """Text by element id, every src/href, and the calibration plot's circles."""

    def __init__(self, text: str) -> None:
        super().__init__()
        self.links: list[str] = []
        self.circles = 0
        self.ids: dict[str, str] = {}
        self._open: list[str] = []
        self.feed(text)

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        found = dict(attrs)
        self.links += [v for k, v in attrs if k in ("src", "href", "action") and v]
        if tag == "circle":
            self.circles += 1
        if found.get("id"):
            self.ids[str(found["id"])] = ""
            self._open.append(str(found["id"]))

    def handle_data(self, data: str) -> None:
        for key in self._open:
            self.ids[key] += data

    def handle_endtag(self, tag: str) -> None:
        if self._open and tag in ("p", "td", "table", "span", "section", "svg", "h1"):
            self._open.pop()


def test_model_page_shows_the_bundles_figures(site: dict[str, Any], bundle: ModelBundle) -> None:
    response = httpx.get(f"{site['url']}/models/{MODEL}", timeout=30)
    assert response.status_code == 200, response.text[-2000:]
    assert response.headers["content-type"].startswith("text/html")
    text = response.text
    page = Page(text)
    meta = bundle.meta
    # what the score means: tiers with their words and cutoffs
    assert "score from 0 to 100" in text
    for tier, word in bundle.tier_words_.items():
        assert f"<td>{tier}</td><td>{word}</td>" in text
    cutoff = meta["tiers"]["A"]
    assert f"from {cutoff * 100:.1f}%" in text
    # when it was trained, as people read a time (not ISO 8601 with its T and offset)
    trained = datetime.fromisoformat(meta["trained_at"]).astimezone(UTC)
    assert f"Trained {trained:%Y-%m-%d %H:%M} UTC" in text
    # expected vs actual on the test slice: the bundle's numbers
    assert page.ids["test-expected"] == f"{meta['metrics']['test_expected_conversions']:.1f}"
    assert page.ids["test-actual"] == f"{meta['metrics']['test_actual_conversions']:.0f}"
    forecast = re.search(r'data-forecast-ok="(\w+)"', text)
    assert forecast is not None and forecast.group(1) in ("true", "false")
    # calibration plot: one circle per non-empty bin
    bins = [b for b in meta["evaluation"]["reliability"] if b["leads"]]
    assert '<svg id="calibration-plot"' in text and page.circles == len(bins)
    # the tier table, the importance labels, the baselines
    for row in meta["evaluation"]["tiers"]["test"]:
        assert f'data-tier="{row["tier"]}"' in text
    top = meta["evaluation"]["importance"][0]["field"]
    assert bundle.words_[bundle.sources.index(top)].label in text
    assert 'data-model="scorecard"' in text and 'data-model="logistic"' in text
    # version history with the promotion reason from the registry
    assert 'data-version="' + bundle.version + '"' in text
    assert "no champion yet" in text
    # cohorts joined back by the monitor
    cohorts = [c["cohort"] for c in site["report"]["cohorts"]]
    assert cohorts and all(c in text for c in cohorts)
    assert "Outcomes joined back as of 2026-03-01" in text
    # nothing from another host
    assert all(not re.match(r"(?i)^(https?:)?//", link) for link in page.links), page.links


def test_without_a_monitor_report_the_page_says_how_to_get_one(site: dict[str, Any]) -> None:
    folder = site["home"] / "reports" / "monitoring"
    aside = site["home"] / "monitoring-aside"
    shutil.move(folder, aside)
    try:
        text = httpx.get(f"{site['url']}/models/{MODEL}", timeout=30).text
    finally:
        shutil.move(aside, folder)
    assert "No outcomes joined back yet" in text
    assert f"leadscore monitor {MODEL} --outcomes FILE" in text
    assert 'id="cohorts"' not in text


def test_unknown_model_is_a_404_page(site: dict[str, Any]) -> None:
    for path in ("/models/nope", "/models/nope/score"):
        response = httpx.get(site["url"] + path, timeout=30)
        assert response.status_code == 404
        assert response.headers["content-type"].startswith("text/html")
        assert "no model named &#39;nope&#39; is served here" in response.text
        assert "Traceback" not in response.text
    hostile = httpx.get(site["url"] + "/models/%3Cimg%20src%3Dx%20onerror%3Dalert(1)%3E",
                        timeout=30)
    assert hostile.status_code == 404
    assert "<img" not in hostile.text
    assert "&lt;img src=x onerror=alert(1)&gt;" in hostile.text


def _api_probability(url: str, lead: dict[str, Any]) -> dict[str, Any]:
    response = httpx.post(f"{url}/v1/models/{MODEL}/score", json={"leads": [lead]}, timeout=30)
    assert response.status_code == 200, response.text
    result: dict[str, Any] = response.json()["results"][0]
    return result


def test_browser_model_page_and_form(site: dict[str, Any], bundle: ModelBundle,
                                     tmp_path: Path, browser: Any) -> None:
    """In Chromium: the page's calibration plot and history render; the form, filled in by
    choosing values, gives the API's probability; no request leaves the server's host."""
    url = site["url"]
    hosts: set[str] = set()
    page = browser.new_page(viewport={"width": 1280, "height": 900})
    try:
        page.on("request", lambda r: hosts.add(r.url.split("/")[2]))
        page.goto(f"{url}/models/{MODEL}")
        assert page.locator("#calibration-plot circle").count() > 0
        assert page.locator("#calibration-plot").is_visible()
        box = page.locator("#calibration-plot").bounding_box()
        assert box is not None and box["width"] > 100 and box["height"] > 100
        history = page.locator("#version-history")
        assert history.is_visible()
        assert "no champion yet" in history.inner_text()
        page.screenshot(path=str(tmp_path / "model-desktop.png"), full_page=True)
        page.set_viewport_size({"width": 390, "height": 844})
        page.screenshot(path=str(tmp_path / "model-phone.png"), full_page=True)
        page.set_viewport_size({"width": 1280, "height": 900})

        page.click("text=Score one lead")
        page.wait_for_selector("#score-form")
        chosen: dict[str, str] = {}
        selects = page.locator("#score-form select")
        for i in range(selects.count()):
            select = selects.nth(i)
            values = [v for v in select.locator("option").evaluate_all(
                "os => os.map(o => o.value)") if v]
            if i % 3 == 2 or not values:
                continue  # some fields left blank: scored as missing
            value = values[i % len(values)]
            select.select_option(value)
            chosen[str(select.get_attribute("name"))] = value
        assert chosen
        page.click("button[type=submit]")
        page.wait_for_selector("#result")
        shown = float(str(page.locator("#result").get_attribute("data-probability")))
        reasons = page.locator("#reasons li").all_inner_texts()
        page.screenshot(path=str(tmp_path / "form-result.png"), full_page=True)
    finally:
        page.close()
    api = _api_probability(url, chosen)
    assert abs(shown - api["probability"]) <= 1e-9
    assert shown == api["probability"]  # the same code: the very same float
    assert reasons == [r["text"] for r in api["reasons"]]
    assert hosts == {url.split("/")[2]}, hosts
    assert (tmp_path / "model-phone.png").stat().st_size > 0
    assert np.isfinite(shown)


def test_a_model_without_calibration_does_not_claim_one(bundle: Any) -> None:
    """Under drift the refitted model keeps its own probabilities (calibration: none): the
    page must not call them calibrated."""
    from types import SimpleNamespace

    from leadscore import modelpage
    from serve.pages.rendering import TEMPLATES

    page = modelpage.gather(bundle)
    template = TEMPLATES.env.get_template("model.html")
    served = SimpleNamespace(models={bundle.name: bundle}, default=bundle.name)
    state = SimpleNamespace(models=served, key_digests=None)
    request = SimpleNamespace(scope={}, app=SimpleNamespace(state=state), path_params={},
                              query_params={}, url=SimpleNamespace(path="/models/m"), cookies={})
    context = {"request": request, "root": "", "csrf": "t", "keys_required": False,
               "signed_in": False, "page": page, "plot": None,
               "not_recorded": modelpage.NOT_RECORDED, "error": None}
    page.calibration_method = "none"
    text = " ".join(template.render(context).split())
    assert "no separate calibration step" in text and "calibrated probability" not in text
    page.calibration_method = "platt"
    assert "calibrated probability" in " ".join(template.render(context).split())
