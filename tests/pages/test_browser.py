"""The pages in a real headless Chromium (Debian's, driven by Playwright): sign in, the board
sorted by score, the top tier, a search by id, a lead's page with its reasons in words and its
history chart, the CSV download, HTML from the data staying text, nothing from another host,
and no horizontal overflow on a phone."""

from __future__ import annotations

import csv
import io
from html.parser import HTMLParser
from pathlib import Path
from typing import Any
from urllib.parse import urljoin, urlsplit

import httpx
import pytest
from pages_helpers import API_KEY, HTML_ID, HTML_REGION, World, sign_in

pytestmark = pytest.mark.slow


def board_rows(page: Any) -> list[dict[str, str]]:
    return page.eval_on_selector_all(
        "#board tbody tr[data-lead]",
        "rows => rows.map(r => ({id: r.dataset.lead, tier: r.dataset.tier,"
        " score: r.dataset.score, text: r.innerText}))")


def test_sign_in_then_the_board_by_score(browser: Any, world: World) -> None:
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    tab.goto(world.url + "/")
    assert urlsplit(tab.url).path == "/signin", "not signed in: the sign-in form"
    tab.fill("#key", "wrong-key")
    tab.click("button[type=submit]")
    assert "not one of this server's API keys" in tab.inner_text("[role=alert]")
    tab.fill("#key", API_KEY)
    tab.click("button[type=submit]")
    tab.wait_for_url(world.url + "/")
    rows = board_rows(tab)
    scores = [int(r["score"]) for r in rows]
    assert len(rows) == 50 and scores == sorted(scores, reverse=True)
    assert tab.get_attribute("th[aria-sort] a", "data-sort") == "score"
    context.close()


def test_top_tier_and_search(page: Any, world: World) -> None:
    page.check("input[name=tier][value=A]")
    page.click(".filters button[type=submit]")
    page.wait_for_load_state()
    rows = board_rows(page)
    assert rows and {r["tier"] for r in rows} == {"A"}
    assert all("hot" in r["text"] for r in rows), "the tier word beside the letter"
    page.goto(world.url + "/")
    page.fill("#q", "L0005")
    page.press("#q", "Enter")
    page.wait_for_url("**q=L0005**")
    assert sorted(r["id"] for r in board_rows(page)) == [f"L{i:05d}" for i in range(50, 60)]


def test_sort_by_lead_id_through_the_header(page: Any) -> None:
    page.click("th a[data-sort=lead_id]")
    page.wait_for_url("**sort=lead_id**")
    ids = [r["id"] for r in board_rows(page)]
    assert ids == sorted(ids, reverse=True)
    page.click("th a[data-sort=lead_id]")
    page.wait_for_url("**dir=asc**")
    ids = [r["id"] for r in board_rows(page)]
    assert ids == sorted(ids)


def test_open_a_lead_read_its_reasons_and_history(page: Any, world: World) -> None:
    page.fill("#q", "L00003")
    page.press("#q", "Enter")
    page.wait_for_url("**q=L00003**")
    page.click("#board a[href*='/leads/L00003']")
    page.wait_for_url("**/leads/L00003**")
    assert page.inner_text("h1") == "Lead L00003"
    reasons = page.locator(".reason-list li").all_inner_texts()
    assert reasons and all(" point" in r and ":" in r for r in reasons)
    assert any(r.startswith(("Channel", "Visits", "Budget", "Email domain")) for r in reasons)
    assert "leads like this one convert" in page.inner_text(".chance")
    points = page.locator("#history-chart g.point")
    assert points.count() == 3
    stored = [r["score"] for r in world.store.lead("pages-test", "L00003").to_pylist()]
    assert [int(s) for s in points.evaluate_all("gs => gs.map(g => g.dataset.score)")] == stored
    assert page.locator(".legend .key").count() == 1
    assert page.locator("#why").inner_text().startswith("Why it changed")


def test_csv_download_equals_the_filter(page: Any, world: World) -> None:
    page.check("input[name=tier][value=B]")
    page.click(".filters button[type=submit]")
    page.wait_for_url("**tier=B**")
    shown = [r["id"] for r in board_rows(page)]
    total = int(page.inner_text("#total").replace(",", ""))
    with page.expect_download() as info:
        page.click("#download")
    text = Path(info.value.path()).read_text(encoding="utf-8")
    rows = list(csv.DictReader(io.StringIO(text)))
    assert len(rows) == total and {r["tier"] for r in rows} == {"B"}
    assert [r["lead_id"] for r in rows][: len(shown)] == shown
    assert not any(v.startswith(("[", "{")) for r in rows for v in r.values())


def test_html_from_the_data_stays_text(page: Any, world: World) -> None:
    page.fill("#q", "<scr")
    page.press("#q", "Enter")
    page.wait_for_load_state()
    row = page.locator("#board tbody tr[data-lead]").first
    assert HTML_ID in row.inner_text() and HTML_REGION in row.inner_text()
    row.locator("td.id a").click()
    page.wait_for_load_state()
    assert HTML_ID in page.inner_text("h1")
    assert page.locator("main script, main img").count() == 0
    assert page.dialogs == [], "no script from the data ran"


class _Links(HTMLParser):
    def __init__(self) -> None:
        super().__init__()
        self.urls: list[str] = []

    def handle_starttag(self, tag: str, attrs: list[tuple[str, str | None]]) -> None:
        for name, value in attrs:
            if name in ("src", "href", "action", "srcset", "poster", "data") and value:
                self.urls.append(value)


@pytest.mark.parametrize("path", ["/signin", "/", "/leads/L00003"])
def test_no_external_host_in_the_html(world: World, path: str) -> None:
    with httpx.Client(base_url=world.url, timeout=30) as client:
        if path != "/signin":
            sign_in(client)
        response = client.get(path)
        assert response.status_code == 200
        links = _Links()
        links.feed(response.text)
        assert links.urls
        for url in links.urls:
            absolute = urljoin(world.url + path, url)
            assert urlsplit(absolute).netloc == urlsplit(world.url).netloc, url
        assert "http://" not in response.text.replace(world.url, "")
        assert "https://" not in response.text


def test_no_request_leaves_the_server(page: Any, world: World) -> None:
    """What the browser itself fetches (CSS, script, icons) for the board and a lead."""
    hosts: set[str] = set()
    page.on("request", lambda r: hosts.add(urlsplit(r.url).netloc))
    page.goto(world.url + "/")
    page.goto(world.url + "/leads/L00003")
    page.wait_for_load_state("networkidle")
    assert hosts == {urlsplit(world.url).netloc}


@pytest.mark.parametrize("width", [390, 1280])
def test_no_horizontal_page_overflow(browser: Any, world: World, width: int) -> None:
    context = browser.new_context(viewport={"width": width, "height": 800})
    tab = context.new_page()
    tab.goto(f"{world.url}/signin")
    tab.fill("#key", API_KEY)
    tab.click("button[type=submit]")
    tab.wait_for_url(world.url + "/")
    for path in ("/", "/leads/L00003"):
        tab.goto(world.url + path)
        overflow = tab.evaluate(
            "document.documentElement.scrollWidth - document.documentElement.clientWidth")
        assert overflow <= 0, f"{path} is {overflow}px wider than a {width}px screen"
    if width == 390:
        tab.goto(world.url + "/")
        wrap = tab.evaluate("(() => { const w = document.querySelector('.table-wrap');"
                            " return [w.scrollWidth, w.clientWidth]; })()")
        assert wrap[0] > wrap[1], "the board's table scrolls inside its own box"
    context.close()
