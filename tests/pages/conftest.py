"""Fixtures for the pages: a small model and a score history of 3 dates in a temp
LEADSCORE_HOME, a real `leadscore serve` on them with an API key, an httpx client signed in,
and a headless Chromium page (Debian's, driven by Playwright) signed in the same way."""

from __future__ import annotations

import shutil
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import httpx
import pytest
from pages_helpers import (
    API_KEY,
    LEADS,
    World,
    make_bundle,
    score_dates,
    sign_in,
    start_server,
)

from leadscore.scoring import ModelBundle
from leadscore.store import ScoreStore

CHROMIUM = "/usr/bin/chromium"
CHROMIUM_ARGS = ["--no-sandbox", "--disable-gpu", "--disable-background-networking",
                 "--disable-component-update", "--disable-sync", "--no-first-run"]


@pytest.fixture(scope="session")
def scored_home(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, Path, ModelBundle,
                                                                  ScoreStore]:
    """The bundle folder and a home whose score history holds LEADS leads (one with an HTML id)
    scored on 3 dates."""
    root = tmp_path_factory.mktemp("pages")
    bundle = make_bundle(root / "bundle")
    home = root / "home"
    home.mkdir()
    store = score_dates(bundle, home, LEADS)
    return root / "bundle", home, bundle, store


@pytest.fixture(scope="session")
def world(scored_home: tuple[Path, Path, ModelBundle, ScoreStore]) -> Iterator[World]:
    """A real server (uvicorn, in its own process) with LEADSCORE_API_KEYS set."""
    bundle_dir, home, bundle, store = scored_home
    server = start_server(bundle_dir, home)
    yield World(home, bundle_dir, bundle, store, server)
    server.stop()


@pytest.fixture
def client(world: World) -> Iterator[httpx.Client]:
    """An httpx client signed in to the world's server (redirects not followed)."""
    with httpx.Client(base_url=world.url, timeout=30) as c:
        response = sign_in(c)
        assert response.status_code == 303, response.text
        yield c


@pytest.fixture
def anonymous(world: World) -> Iterator[httpx.Client]:
    with httpx.Client(base_url=world.url, timeout=30) as c:
        yield c


@pytest.fixture(scope="module")
def browser() -> Iterator[Any]:
    """Headless Debian Chromium, one per test module: Playwright's sync API runs an event loop
    in this thread while it is open, so it is closed before the next module (tests/serve calls
    `asyncio.run`, which refuses to start inside a running loop)."""
    if not Path(CHROMIUM).exists() and not shutil.which("chromium"):
        pytest.skip(f"no Chromium at {CHROMIUM}: `make test` installs Debian's chromium")
    from playwright.sync_api import sync_playwright

    with sync_playwright() as p:
        launched = p.chromium.launch(executable_path=CHROMIUM if Path(CHROMIUM).exists()
                                     else shutil.which("chromium"), args=CHROMIUM_ARGS)
        yield launched
        launched.close()


@pytest.fixture
def page(browser: Any, world: World) -> Iterator[Any]:
    """A fresh browser page (1280 x 900), signed in through the sign-in form. Any JavaScript
    dialog fails the test that opened it (an `alert` from the data would be an injection)."""
    context = browser.new_context(viewport={"width": 1280, "height": 900})
    tab = context.new_page()
    dialogs: list[str] = []
    tab.on("dialog", lambda d: (dialogs.append(d.message), d.dismiss()))
    tab.goto(f"{world.url}/signin")
    tab.fill("#key", API_KEY)
    tab.click("button[type=submit]")
    tab.wait_for_url(f"{world.url}/")
    tab.dialogs = dialogs
    yield tab
    context.close()
    assert not dialogs, f"a JavaScript dialog opened: {dialogs}"
