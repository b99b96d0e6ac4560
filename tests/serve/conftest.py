"""Fixtures for the API tests: copies of the shared model's bundle (v1), a second version (v2),
a corrupt one, a small model with numeric and dotted field names, and apps built on them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import pytest
from bundle_helpers import train_plan_bundle
from fastapi.testclient import TestClient
from serve_helpers import corrupt, serve_settings, write_version

from leadscore.scoring import load_bundle


@pytest.fixture(scope="session")
def bundles(trained: Any, tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    """v1 (the shared trained model, copied so nothing else can overwrite it), v2 (half its
    trees), and a corrupt copy of v2."""
    root = tmp_path_factory.mktemp("bundles")
    v1 = write_version(trained.bundle_dir, root / "v1", "1")
    trees = load_bundle(v1).booster.num_trees()
    v2 = write_version(v1, root / "v2", "2", keep_trees=max(1, trees // 2))
    bad = corrupt(v2, root / "bad", "3")
    return {"v1": v1, "v2": v2, "bad": bad}


@pytest.fixture(scope="session")
def mixed_bundle(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """A small model with numeric fields, one of them named like `emp.var.rate`."""
    return train_plan_bundle(tmp_path_factory.mktemp("mixed"), "mixed_test", "mixed", seed=3,
                             id_prefix="M")


@pytest.fixture
def make_client() -> Iterator[Callable[..., TestClient]]:
    """`make_client(bundle_dir, **settings)`: a started app (model loaded) and its client."""
    from serve.main import create_app

    clients: list[TestClient] = []

    def make(model_uri: Path | str, **overrides: Any) -> TestClient:
        client = TestClient(create_app(serve_settings(model_uri, **overrides)),
                            raise_server_exceptions=False)
        client.__enter__()
        clients.append(client)
        return client

    yield make
    for client in clients:
        client.__exit__(None, None, None)


@pytest.fixture
def client(make_client: Callable[..., TestClient], bundles: dict[str, Path]) -> TestClient:
    """The v1 model, no API keys."""
    return make_client(bundles["v1"])


@pytest.fixture
def mixed_client(make_client: Callable[..., TestClient], mixed_bundle: Path) -> TestClient:
    return make_client(mixed_bundle)


@pytest.fixture
def all_logs(caplog: pytest.LogCaptureFixture) -> pytest.LogCaptureFixture:
    """Every record from every logger, for checks that nothing personal is logged."""
    caplog.set_level(logging.DEBUG)
    for name in ("serve", "serve.access", "leadscore", "uvicorn"):
        logging.getLogger(name).setLevel(logging.DEBUG)
    return caplog
