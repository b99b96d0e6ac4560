"""Fixtures for the API tests: copies of the shared model's bundle (v1), a second version (v2),
a corrupt one, a small model with numeric and dotted field names, and apps built on them."""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pytest
import yaml
from fastapi.testclient import TestClient
from serve_helpers import corrupt, serve_settings, write_version

from leadscore.config import Settings, load_spec
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
    from leadscore.pipeline import run_training

    root = tmp_path_factory.mktemp("mixed")
    rng = np.random.default_rng(3)
    n = 1500
    plan = rng.choice(["free", "team", "enterprise"], n)
    rate = rng.normal(0, 1, n).round(2)
    visits = rng.poisson(3, n)
    logit = -1 + (plan == "enterprise") * 1.2 + rate * 0.8 + visits * 0.2
    converted = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    frame = pd.DataFrame({
        "lead_id": [f"M{i:05d}" for i in range(n)],
        "created_at": pd.date_range("2024-01-01", periods=n, freq="h").astype(str),
        "plan": plan, "emp.var.rate": rate, "visits": visits, "converted": converted,
    })
    frame.to_csv(root / "leads.csv", index=False)
    spec = {
        "name": "mixed_test",
        "leads": {"path": str(root / "leads.csv"), "id": "lead_id", "created_at": "created_at"},
        "outcome": {"column": "converted", "positive": ["1"], "negative": ["0"]},
        "features": {"categorical": ["plan"], "numeric": ["emp.var.rate", "visits"]},
        # one thread: OpenMP's spin-waits make training crawl when the machine is busy
        "train": {"min_per_class": 20, "params": {"num_threads": 1}},
    }
    (root / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    settings = Settings(models_dir=root / "models", model_name="mixed")
    result = run_training(load_spec(root / "spec.yaml"), settings, track=False, with_report=False,
                          baselines=False, bundle_out=root / "models" / "mixed")
    return result.bundle_dir


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
