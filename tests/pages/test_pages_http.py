"""The pages over plain HTTP against a real server: sign-in (303 to /signin, 401 for a wrong
key, 403 without the form's token, a forged cookie refused), the board's filters and its CSV,
404 pages, and every value from the data escaped."""

from __future__ import annotations

import csv
import io
import re
import time
from typing import Any

import httpx
import pyarrow.parquet as pq
import pytest
from pages_helpers import (
    API_KEY,
    HTML_ID,
    HTML_REGION,
    LEADS,
    MODEL,
    World,
    sign_in,
    start_server,
)

pytestmark = pytest.mark.slow


@pytest.mark.parametrize("path", ["/", "/leads/L00003", "/board.csv?tier=A"])
def test_pages_need_sign_in(anonymous: httpx.Client, path: str) -> None:
    response = anonymous.get(path)
    assert response.status_code == 303
    assert response.headers["location"].startswith("/signin?next=")
    assert response.headers["location"].endswith(
        httpx.QueryParams({"next": path}).__str__().split("=", 1)[1])


def test_sign_in_sets_a_strict_http_only_cookie(anonymous: httpx.Client) -> None:
    response = sign_in(anonymous, next_path="/leads/L00003")
    assert response.status_code == 303 and response.headers["location"] == "/leads/L00003"
    cookie = response.headers["set-cookie"]
    assert "HttpOnly" in cookie and "SameSite=strict" in cookie and API_KEY not in cookie
    assert anonymous.get("/").status_code == 200


def test_wrong_key_missing_token_and_forged_cookie(anonymous: httpx.Client) -> None:
    wrong = sign_in(anonymous, key="not-the-key")
    assert wrong.status_code == 401 and "not one of this server&#39;s API keys" in wrong.text
    assert "not-the-key" not in wrong.text
    no_token = anonymous.post("/signin", data={"key": API_KEY, "next": "/"},
                              headers={"accept": "application/json"})
    assert no_token.status_code == 403
    assert no_token.json()["error"]["code"] == "csrf_failed"
    good = sign_in(anonymous)
    value = good.cookies["leadscore_session"]
    expires, kid, nonce, signature = value.split(".")
    forged = f"{int(expires) + 10**6}.{kid}.{nonce}.{signature}"  # a longer session, same MAC
    with httpx.Client(base_url=str(anonymous.base_url), timeout=30,
                      cookies={"leadscore_session": forged}) as other:
        assert other.get("/").status_code == 303


def test_next_never_leaves_the_site(anonymous: httpx.Client) -> None:
    for target in ("//evil.example/x", "https://evil.example/", "\\\\evil"):
        anonymous.cookies.clear()
        response = sign_in(anonymous, next_path=target)
        assert response.status_code == 303 and response.headers["location"] == "/"


def test_board_rows_sorted_filtered_and_paged(client: httpx.Client) -> None:
    first = client.get("/")
    assert first.status_code == 200
    assert re.search(rf'<span id="total">{LEADS}</span> leads, page 1 of 3', first.text)
    scores = [int(s) for s in re.findall(r'data-score="(\d+)"', first.text)]
    assert len(scores) == 50 and scores == sorted(scores, reverse=True)
    top = client.get("/", params={"tier": "A"})
    tiers = re.findall(r'data-tier="([A-D])"', top.text)
    assert tiers and set(tiers) == {"A"}
    by_id = client.get("/", params={"q": "L0001", "sort": "lead_id", "dir": "asc"})
    ids = re.findall(r'data-lead="([^"]+)"', by_id.text)
    assert ids == [f"L{i:05d}" for i in range(10, 20)]
    third = client.get("/", params={"page": "3"})
    assert len(re.findall(r'data-lead="', third.text)) == LEADS - 100


def test_bad_query_is_one_plain_line(client: httpx.Client) -> None:
    response = client.get("/", params={"sort": "scroe"}, headers={"accept": "text/html"})
    assert response.status_code == 400
    assert "cannot sort by &#39;scroe&#39;" in response.text and "did you mean" in response.text
    assert "Traceback" not in response.text
    as_json = client.get("/", params={"tier": "Z"}, headers={"accept": "application/json"})
    assert as_json.status_code == 400
    assert as_json.json()["error"]["message"] == "tier 'Z' is not a tier: A, B, C, D"
    unknown = client.get("/", params={"model": "nope"}, headers={"accept": "text/html"})
    assert unknown.status_code == 404 and "no model named" in unknown.text


def test_unknown_lead_is_a_404_page(client: httpx.Client) -> None:
    response = client.get("/leads/nobody", headers={"accept": "text/html"})
    assert response.status_code == 404
    assert response.headers["content-type"].startswith("text/html")
    assert "lead &#39;nobody&#39; has no scores" in response.text
    assert "Traceback" not in response.text


def test_html_in_the_data_is_text(client: httpx.Client) -> None:
    board = client.get("/", params={"q": "<scr"})
    assert "&lt;script&gt;alert(&#39;id&#39;)&lt;/script&gt;" in board.text
    assert "&lt;img src=x onerror=alert(&#39;region&#39;)&gt;" in board.text
    assert HTML_ID not in board.text and HTML_REGION not in board.text
    lead = client.get("/leads/" + httpx.URL("/x/").copy_with(path="/" + HTML_ID).raw_path
                      .decode().lstrip("/"))
    assert lead.status_code == 200
    assert "&lt;script&gt;" in lead.text and HTML_ID not in lead.text
    assert "script-src 'self'" in lead.headers["content-security-policy"]


def test_csv_is_flat_and_equals_the_filter(client: httpx.Client) -> None:
    params = {"tier": ["A", "B"], "sort": "score", "dir": "desc"}
    page = client.get("/", params=params)
    rows = list(csv.DictReader(io.StringIO(client.get("/board.csv", params=params).text)))
    total = int(re.search(r'<span id="total">([\d,]+)</span>', page.text).group(1))
    assert len(rows) == total and {r["tier"] for r in rows} <= {"A", "B"}
    assert [r["lead_id"] for r in rows[:50]] == re.findall(r'data-lead="([^"]+)"', page.text)
    assert [int(r["score"]) for r in rows] == sorted((int(r["score"]) for r in rows),
                                                     reverse=True)
    assert set(rows[0]) == {"lead_id", "score", "tier", "tier_label", "probability", "trend",
                            "previous_score", "scored_at", "model_version", "region"}
    for row in rows:
        for value in row.values():
            assert not value.startswith(("[", "{")), f"a JSON cell: {value}"


def test_kept_columns_reach_the_store_but_not_personal_data(world: World,
                                                            client: httpx.Client) -> None:
    names = pq.read_schema(world.store.files(MODEL)[0]).names
    assert "k_region" in names and "k_contact" not in names
    assert not any("@" in str(v) for v in pq.read_table(world.store.files(MODEL)[0])
                   .column("k_region").to_pylist())
    north = client.get("/", params={"k_region": "north"})
    assert north.status_code == 200
    assert set(re.findall(r'<td class="kept">([^<]*)</td>', north.text)) == {"north"}
    assert "kept column 'contact' not stored" not in client.get("/").text


def test_lead_page_says_it_in_words(client: httpx.Client, world: World) -> None:
    lead = client.get("/leads/L00003")
    assert lead.status_code == 200
    probability = float(re.search(r'data-probability="([^"]+)"', lead.text).group(1))
    rows = world.store.lead(MODEL, "L00003").to_pylist()
    assert probability == rows[-1]["probability"]
    assert "leads like this one convert" in lead.text
    assert len(re.findall(r'<g class="point"', lead.text)) == 3
    assert re.search(r"(Raising|Lowering) the score", lead.text)
    assert re.search(r": [+\u2212][\d.]+ points?</span>", lead.text)


def test_without_keys_pages_are_open_and_the_server_says_so(
        scored_home: tuple) -> None:  # type: ignore[type-arg]
    """No LEADSCORE_API_KEYS: no sign-in, a warning at start-up, and `leadscore serve` bound
    to 127.0.0.1 (its default)."""
    from pages_helpers import start_server

    bundle_dir, home = scored_home[0], scored_home[1]
    server = start_server(bundle_dir, home, LEADSCORE_API_KEYS="")
    try:
        with httpx.Client(base_url=server.url, timeout=30) as open_client:
            assert open_client.get("/").status_code == 200
            assert open_client.get("/signin").status_code == 303
        text = server.text()
        assert "pages are open: LEADSCORE_API_KEYS is not set" in text
        assert "Uvicorn running on http://127.0.0.1:" in text
    finally:
        server.stop()


@pytest.mark.parametrize("query", [
    {"page": "9" * 5000}, {"page": "٣"}, {"page": "0"}, {"page": "999999"}, {"sort": "'\";--"},
    {"tier": "\u00c5"}, {"q": "%_*[(\\"}, {"k_no\"pe": "x"}, {"k_region": "\x00"},
    {"dir": "sideways"}, {"model": "../../etc"},
])
def test_odd_queries_are_never_a_500(client: httpx.Client, query: dict[str, str]) -> None:
    response = client.get("/", params=query, headers={"accept": "text/html"})
    assert response.status_code in (200, 400, 404), response.text[:500]
    assert "Traceback" not in response.text
    csv_answer = client.get("/board.csv", params=query)
    assert csv_answer.status_code in (200, 400, 404)


@pytest.mark.parametrize("lead", ["%00", "..%2F..%2Fetc", "a" * 3000, "%F0%9F%92%A9", "L00003%0A"])
def test_odd_lead_ids_are_a_404_page(client: httpx.Client, lead: str) -> None:
    response = client.get(f"/leads/{lead}", headers={"accept": "text/html"})
    assert response.status_code in (200, 404), response.text[:500]
    assert "Traceback" not in response.text


def test_an_empty_server_shows_an_empty_board(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """No model served and no score recorded: the board says so (no error), a lead is a 404."""
    from fastapi.testclient import TestClient

    from leadscore.config import Settings
    from serve.main import create_app

    app = create_app(Settings(home=tmp_path, api_keys="", reload_seconds=0), load_model=False)
    with TestClient(app) as empty:
        board = empty.get("/")
        assert board.status_code == 200 and "No model is served" in board.text
        lead = empty.get("/leads/L1", headers={"accept": "text/html"})
        assert lead.status_code == 404 and "no scores are recorded yet" in lead.text


def test_the_board_is_read_into_its_cache_at_start(scored_home: Any) -> None:
    """A started server reads each served model's latest scores on a side thread: the board
    is cached before anyone opens it (its log says so without a page being asked for)."""
    bundle_dir, home, bundle, _ = scored_home
    server = start_server(bundle_dir, home)
    try:
        deadline = time.monotonic() + 30
        while "board for" not in server.text() and time.monotonic() < deadline:
            time.sleep(0.2)
        line = next(x for x in server.text().splitlines() if "board for" in x)
        assert f"board for {bundle.name}: {LEADS} leads" in line
        assert "GET / " not in server.text()
    finally:
        server.stop()


def test_a_lead_scored_once_reads_new_not_unknown(scored_home: Any, tmp_path) -> None:  # type: ignore[no-untyped-def]
    """One scoring has no trend: the API says "unknown", the pages say it in words."""
    from fastapi.testclient import TestClient
    from pages_helpers import make_leads

    from leadscore.batch import rescore
    from leadscore.config import Settings
    from leadscore.store import ScoreStore
    from serve.main import create_app

    bundle_dir, _, bundle, _ = scored_home
    src = tmp_path / "leads.csv"
    make_leads(5, seed=2).to_csv(src, index=False)
    rescore(bundle, src, tmp_path / "out.parquet", history=ScoreStore(tmp_path / "scores"))
    app = create_app(Settings(home=tmp_path, api_keys="", model_uri=str(bundle_dir),
                              reload_seconds=0))
    with TestClient(app) as client:
        board = client.get("/", headers={"accept": "text/html"})
        assert board.status_code == 200
        assert re.findall(r'class="trend-word">([^<]+)<', board.text) == ["new"] * 5
        lead_id = re.findall(r'href="/leads/([^"?]+)', board.text)[0]
        lead = client.get(f"/leads/{lead_id}", headers={"accept": "text/html"})
        assert "first scoring, no trend yet" in lead.text and "unknown" not in lead.text


def test_guessing_keys_is_slowed_to_a_429(tmp_path) -> None:  # type: ignore[no-untyped-def]
    """Ten wrong keys from one address in a minute: the eleventh try is a 429 with Retry-After,
    even with the right key; another address is not held back."""
    from fastapi.testclient import TestClient
    from pages_helpers import csrf_of

    from leadscore.config import Settings
    from serve.deps import MAX_FAILURES
    from serve.main import create_app

    app = create_app(Settings(home=tmp_path, api_keys=API_KEY, reload_seconds=0),
                     load_model=False)

    def attempt(client: TestClient, key: str) -> Any:
        token = csrf_of(client.get("/signin").text)
        return client.post("/signin", data={"csrf": token, "next": "/", "key": key},
                           follow_redirects=False)

    with TestClient(app) as guesser, TestClient(app, client=("10.0.0.9", 5000)) as other:
        for _ in range(MAX_FAILURES):
            assert attempt(guesser, "wrong-key").status_code == 401
        held = attempt(guesser, API_KEY)
        assert held.status_code == 429 and "Too many wrong keys" in held.text
        assert 1 <= int(held.headers["retry-after"]) <= 61
        assert attempt(other, API_KEY).status_code == 303
