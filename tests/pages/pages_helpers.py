"""A small scored world for the page tests: a model bundle folder, a score history of 3 dates
(with kept columns, one of them personal data the store must refuse, and a lead whose id and
kept value are HTML), and a real `leadscore serve` process on it."""

from __future__ import annotations

import os
import re
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

import httpx
import lightgbm as lgb
import numpy as np
import pandas as pd
from server_helpers import Server, free_port, launch, wait_ready

from leadscore.batch import rescore
from leadscore.config import Settings
from leadscore.evaluate import feature_profile
from leadscore.features import FeatureBuilder
from leadscore.scoring import ModelBundle, load_bundle
from leadscore.store import ScoreStore
from leadscore.train import Calibrator, percentile_grid, tier_cutoffs

ROOT = Path(__file__).resolve().parents[2]
API_KEY = "pages-key-0123456789"
MODEL = "pages-test"
DATES = ["2026-01-05T09:00:00+00:00", "2026-01-12T09:00:00+00:00", "2026-01-19T09:00:00+00:00"]
HTML_ID = "<script>alert('id')</script>"
HTML_REGION = "<img src=x onerror=alert('region')>"
CHANNELS = ["web", "referral", "event", "partner"]
REGIONS = ["north", "south", "east", "west"]
LEADS = 120


def make_leads(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({
        "lead_id": [f"L{i:05d}" for i in range(n)],
        "channel": rng.choice(CHANNELS, n),
        "visits": rng.integers(0, 30, n).astype(str),
        "budget": np.round(rng.gamma(2.0, 20.0, n), 2).astype(str),
        "email": [f"person{i}@{'gmail.com' if i % 3 else 'acme.io'}" for i in range(n)],
        "region": rng.choice(REGIONS, n),
        "contact": [f"person{i}@example.com" for i in range(n)],
    })
    frame.loc[::11, "budget"] = ""
    return frame


def make_bundle(folder: Path, version: str = "1", seed: int = 1) -> ModelBundle:
    leads = make_leads(2000, seed=seed)
    builder = FeatureBuilder(categorical=["channel"], numeric=["visits", "budget"],
                             derive={"email": "email"}).fit(leads)
    x = builder.transform(leads)
    logit = (-1.5 + 0.08 * np.nan_to_num(x[:, 1]) + 0.9 * (leads["channel"] == "referral")
             + 0.01 * np.nan_to_num(x[:, 2]))
    rng = np.random.default_rng(seed + 1)
    y = (rng.random(len(leads)) < 1 / (1 + np.exp(-logit))).astype(int)
    params = {"objective": "binary", "num_leaves": 7, "verbosity": -1, "deterministic": True,
              "num_threads": 1, "min_data_in_leaf": 20, "seed": seed}
    data = lgb.Dataset(x, y, categorical_feature=builder.categorical_indices_)
    booster = lgb.train(params, data, num_boost_round=25)
    margin = booster.predict(x, raw_score=True)
    calibrator = Calibrator("platt").fit(margin, y)
    p = calibrator.transform(margin)
    meta = {"name": MODEL, "version": version, "id_column": "lead_id",
            "tiers": tier_cutoffs(p), "percentiles": percentile_grid(p),
            "profile": feature_profile(builder.features_, x, p)}
    ModelBundle(booster, builder, calibrator, meta).save(folder)
    return load_bundle(folder)


def score_dates(bundle: ModelBundle, home: Path, n: int) -> ScoreStore:
    """`n` leads scored on 3 dates (visits grow for some, so trends differ), plus the lead with
    an HTML id and region, keeping `region` and `contact` (e-mail addresses: never stored)."""
    store = ScoreStore(home / "scores")
    frame = make_leads(n, seed=5)
    frame.loc[0, ["lead_id", "region"]] = [HTML_ID, HTML_REGION]
    rng = np.random.default_rng(9)
    for i, when in enumerate(DATES):
        if i:
            bump = rng.integers(-4, 9, n)
            visits = frame["visits"].astype(int) + bump
            frame["visits"] = visits.clip(0, 29).astype(str)
            frame.loc[rng.random(n) < 0.2, "channel"] = "referral"
        src = home / f"leads-{i}.csv"
        frame.to_csv(src, index=False)
        rescore(bundle, src, home / f"out-{i}.parquet", scored_at=when, history=store,
                chunk_rows=40, keep=["region", "contact"])
    return store


def start_server(bundle_dir: Path, home: Path, **env: str) -> Server:
    """`leadscore serve` on a free port of 127.0.0.1, once `/readyz` answers 200 (60 s)."""
    clean = {k: v for k, v in os.environ.items()
             if not k.startswith(("LEADSCORE_", "MLFLOW_", "PROMETHEUS_"))}
    clean.update({"LEADSCORE_MODEL_URI": str(bundle_dir), "LEADSCORE_HOME": str(home),
                  "LEADSCORE_API_KEYS": API_KEY, "PYTHONWARNINGS": "ignore",
                  "PYTHONPATH": os.pathsep.join([str(ROOT / "src"), str(ROOT)]), **env})
    return launch(clean, home, home)


@dataclass
class World:
    home: Path
    bundle_dir: Path
    bundle: ModelBundle
    store: ScoreStore
    server: Server

    @property
    def url(self) -> str:
        return self.server.url


def csrf_of(html: str) -> str:
    found = re.search(r'name="csrf" value="([^"]+)"', html)
    assert found, "the form carries a CSRF token"
    return found.group(1)


def sign_in(client: httpx.Client, key: str = API_KEY, next_path: str = "/") -> httpx.Response:
    form = client.get("/signin", params={"next": next_path})
    return client.post("/signin", data={"csrf": csrf_of(form.text), "next": next_path,
                                        "key": key})


@contextmanager
def running(settings: Settings) -> Iterator[str]:
    """The app on a real uvicorn server (its own thread, a free port) until the block ends."""
    import uvicorn

    from serve.main import create_app

    port = free_port()
    server = uvicorn.Server(uvicorn.Config(create_app(settings), host="127.0.0.1", port=port,
                                           log_level="warning", lifespan="on"))
    thread = threading.Thread(target=server.run, daemon=True)
    thread.start()
    url = f"http://127.0.0.1:{port}"
    wait_ready(url, thread.is_alive, lambda: "server stopped while starting")
    try:
        yield url
    finally:
        server.should_exit = True
        thread.join(timeout=30)
