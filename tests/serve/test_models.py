"""Several datasets in one store and one server: each trains its own registered model, a
challenger only ever meets its own champion, `models/<name>/` is the champion alone, and a
running server serves every champion, each reloading on its own alias (schema changes held
back until promoted with --allow-schema-change). Real MLflow store, real uvicorn server."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import httpx
import numpy as np
import pandas as pd
import pytest
import yaml
from server_helpers import Server, launch

from leadscore.config import DatasetSpec, Settings, load_spec
from leadscore.pipeline import run_training

pytestmark = pytest.mark.slow

ROOT = Path(__file__).resolve().parents[2]
BANK = "lead-bank-marketing"
SYNTH = "lead-synthetic-crm"
QUICK = {"with_report": False, "baselines": False}


@dataclass
class Store:
    root: Path
    settings: Settings
    bank: DatasetSpec
    bank_csv: Path
    synth: DatasetSpec
    synth_csv: Path

    def env(self) -> dict[str, str]:
        clean = {k: v for k, v in os.environ.items()
                 if not k.startswith(("LEADSCORE_", "MLFLOW_", "PROMETHEUS_"))}
        clean.update({"LEADSCORE_TRACKING_URI": str(self.settings.tracking_uri),
                      "LEADSCORE_HOME": str(self.root), "PYTHONWARNINGS": "ignore"})
        return clean


@pytest.fixture(scope="module")
def store(synth_dir: Path, tmp_path_factory: pytest.TempPathFactory) -> Store:
    """An empty store and two specs of different datasets (bank marketing on a sample that
    keeps time order; the synthetic CRM), each naming no model: names come from the specs."""
    root = tmp_path_factory.mktemp("two-models")
    bank_spec = load_spec(ROOT / "configs" / "bank_marketing.yaml")
    full = pd.read_csv(bank_spec.resolve(bank_spec.leads.path), sep=";", dtype=str)
    bank_csv = root / "bank.csv"
    full.iloc[::12].to_csv(bank_csv, sep=";", index=False)
    raw = yaml.safe_load((ROOT / "configs" / "bank_marketing.yaml").read_text())
    raw["leads"]["path"] = str(bank_csv)
    (root / "bank.yaml").write_text(yaml.safe_dump(raw))
    synth = {
        "name": "synthetic_crm",
        "leads": {"path": str(synth_dir / "leads.csv"), "id": "lead_id",
                  "created_at": "created_at"},
        "outcome": {"column": "converted", "positive": ["1"], "negative": ["0"]},
        "features": {"categorical": ["source_channel", "seniority", "industry", "budget",
                                     "authority", "need", "timeline"], "numeric": []},
        "drop": ["converted_at", "job_title"],
        "pii": ["name", "email", "phone"],
        "train": {"min_per_class": 20},
    }
    (root / "synth.yaml").write_text(yaml.safe_dump(synth))
    settings = Settings(tracking_uri=f"sqlite:///{root / 'mlflow.db'}", home=root,
                        model_name=None, feature_cache="off")
    return Store(root, settings, load_spec(root / "bank.yaml"), bank_csv,
                 load_spec(root / "synth.yaml"), synth_dir / "leads.csv")


class Served:
    """A running `leadscore serve` and the two calls these tests make of it."""

    def __init__(self, server: Server) -> None:
        self.server = server
        self.url = server.url
        self.process = server.process

    def get(self, path: str) -> Any:
        response = httpx.get(self.url + path, timeout=10)
        assert response.status_code == 200, response.text
        return response.json()

    def score(self, name: str, leads: list[dict[str, Any]]) -> list[dict[str, Any]]:
        response = httpx.post(f"{self.url}/v1/models/{name}/score?reasons=0",
                              json={"leads": leads}, timeout=30)
        assert response.status_code == 200, response.text
        results: list[dict[str, Any]] = response.json()["results"]
        return results


@pytest.fixture
def serve(store: Store) -> Iterator[Any]:
    started: list[Served] = []

    def start(**env: str) -> Served:
        server = Served(launch({**store.env(), "LEADSCORE_RELOAD_SECONDS": "0.2", **env},
                               store.root, store.root))
        started.append(server)
        return server

    yield start
    for server in started:
        server.process.kill()
        server.process.wait(timeout=10)


def bank_leads(store: Store, n: int = 40) -> list[dict[str, Any]]:
    frame = pd.read_csv(store.bank_csv, sep=";").drop(columns=["y", "duration"])
    return [{k: v for k, v in row.items() if v == v} for row in frame.tail(n).to_dict("records")]


def synth_leads(store: Store, n: int = 40) -> list[dict[str, Any]]:
    frame = pd.read_csv(store.synth_csv, dtype=str, keep_default_na=False)
    fields = [*store.synth.features.categorical, "lead_id"]
    return [{k: row[k] for k in fields} for row in frame.tail(n).to_dict("records")]


def champion_folder(store: Store, name: str) -> dict[str, Any]:
    meta: dict[str, Any] = json.loads(
        (store.root / "models" / name / "bundle.json").read_text(encoding="utf-8"))
    return meta


def alias(store: Store, name: str, which: str = "champion") -> str:
    from mlflow.tracking import MlflowClient

    client = MlflowClient(tracking_uri=store.settings.resolved_tracking_uri())
    return str(client.get_model_version_by_alias(name, which).version)


def wait_for(check: Any, seconds: float = 30) -> None:
    deadline = time.monotonic() + seconds
    while not check():
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.2)


def test_two_datasets_two_models_one_server(store: Store, serve: Any) -> None:
    from leadscore import tracking
    from leadscore.batch import rescore

    bank = run_training(store.bank, store.settings, **QUICK)
    assert bank.promoted and bank.model_uri == f"models:/{BANK}@champion"
    bank_only = serve()
    assert bank_only.get("/v1/models")["default"] == BANK
    leads = bank_leads(store)
    before = bank_only.score(BANK, leads)
    folder_before = (store.root / "models" / BANK / "bundle.json").read_bytes()

    # the second dataset registers its own model and takes nothing from the first
    synth = run_training(store.synth, store.settings, **QUICK)
    assert synth.promoted and synth.version == "1" and synth.model_uri.startswith(
        f"models:/{SYNTH}@")
    assert alias(store, BANK) == "1" and alias(store, SYNTH) == "1"
    assert (store.root / "models" / BANK / "bundle.json").read_bytes() == folder_before
    time.sleep(1)  # a few reload polls of the running server
    assert bank_only.score(BANK, leads) == before
    assert bank_only.get("/readyz")["models"] == {BANK: "1"}

    # a deliberately weak bank challenger: registered, not promoted, the folder untouched
    # (2 trees of 2 leaves alone are not weak on this data: the linear start carries it)
    weak = run_training(store.bank, store.settings, params={
        "num_leaves": 2, "num_iterations": 2, "linear_start": False}, **QUICK)
    assert not weak.promoted and weak.version == "2"
    assert alias(store, BANK) == "1" and alias(store, BANK, "challenger") == "2"
    assert champion_folder(store, BANK)["version"] == "1"
    assert (store.root / "models" / BANK / "bundle.json").read_bytes() == folder_before
    assert bank_only.score(BANK, leads) == before

    # one server, both champions; each model's answers equal batch scoring's
    both = serve()
    listed = both.get("/v1/models")
    assert {m["name"]: m["version"] for m in listed["models"]} == {BANK: "1", SYNTH: "1"}
    assert listed["default"] is None
    one = both.get(f"/v1/models/{SYNTH}")
    assert one["dataset"] == "synthetic_crm" and "need" in one["features"]
    assert one["metrics"]["test_roc_auc"] == pytest.approx(synth.metrics["test_roc_auc"])
    missing = httpx.post(f"{both.url}/v1/models/nope/score", json={"leads": [{}]})
    assert missing.status_code == 404 and missing.json()["error"]["code"] == "model_not_found"
    ambiguous = httpx.post(f"{both.url}/v1/score", json={"leads": [{}]})
    assert ambiguous.status_code == 404
    assert ambiguous.json()["error"]["code"] == "no_default_model"
    for name, rows in ((BANK, bank_leads(store)), (SYNTH, synth_leads(store))):
        answers = both.score(name, rows)
        file = store.root / f"{name}.csv"
        pd.DataFrame(rows).to_csv(file, index=False)
        out = store.root / f"{name}.parquet"
        champion = tracking.load_model(tracking.resolve_model_uri(name, store.settings),
                                       store.settings)
        rescore(champion, file, out, reasons=0)
        batch = pd.read_parquet(out)
        np.testing.assert_allclose([a["probability"] for a in answers],
                                   batch["probability"].to_numpy(), rtol=0, atol=1e-9)
        assert {a["model_name"] for a in answers} == {name}
    # the schema writes each model's scoring path out with that model's own fields
    schema = both.get("/openapi.json")
    assert "/v1/models/{name}/score" not in schema["paths"]
    for name, field in ((BANK, "nr.employed"), (SYNTH, "need")):
        operation = schema["paths"][f"/v1/models/{name}/score"]["post"]
        ref = operation["requestBody"]["content"]["application/json"]["schema"]["$ref"]
        lead_ref = schema["components"]["schemas"][ref.rsplit("/", 1)[1]]["properties"][
            "leads"]["items"]["$ref"]
        lead = schema["components"]["schemas"][lead_ref.rsplit("/", 1)[1]]
        assert field in lead["properties"] and lead["additionalProperties"] is False
    metrics = httpx.get(f"{both.url}/metrics").text
    assert f'leadscore_scored_leads_total{{model="{SYNTH}",tier="A"}}' in metrics


def test_a_schema_change_waits_for_an_explicit_promotion(store: Store, serve: Any) -> None:
    from mlflow.tracking import MlflowClient

    from leadscore import tracking

    if alias(store, BANK) != "1":  # run alone: train the champion first
        run_training(store.bank, store.settings, **QUICK)
    server = serve(LEADSCORE_MODELS=BANK)
    fewer = store.bank.model_copy(update={"drop": [*store.bank.drop, "age"]})
    held = run_training(fewer, store.settings, **QUICK)
    assert not held.promoted
    assert "removed 'age'" in held.promotion_reason
    assert f"leadscore promote {BANK} {held.version} --allow-schema-change" in \
        held.promotion_reason
    served = server.get(f"/v1/models/{BANK}")["version"]

    # someone moves the alias by hand: the server holds the new version back, and says why
    client = MlflowClient(tracking_uri=store.settings.resolved_tracking_uri())
    client.set_registered_model_alias(BANK, "champion", held.version)
    wait_for(lambda: server.get(f"/v1/models/{BANK}").get("pending") is not None)
    info = server.get(f"/v1/models/{BANK}")
    assert info["version"] == served
    assert info["pending"]["version"] == held.version
    assert "removed 'age'" in info["pending"]["reason"]
    assert "--allow-schema-change" in info["pending"]["reason"]
    assert "age" in info["features"]

    tracking.promote(BANK, held.version, store.settings, allow_schema_change=True)
    wait_for(lambda: server.get(f"/v1/models/{BANK}")["version"] == held.version)
    info = server.get(f"/v1/models/{BANK}")
    assert info["pending"] is None and "age" not in info["features"]
    assert champion_folder(store, BANK)["version"] == held.version


def test_a_model_no_better_than_chance_is_not_promoted(
    synth_dir: Path, tmp_path: Path
) -> None:
    rng = np.random.default_rng(11)
    leads = pd.read_csv(synth_dir / "leads.csv", dtype=str, keep_default_na=False)
    leads["coin"] = rng.choice(["heads", "tails", "edge"], len(leads))
    leads.to_csv(tmp_path / "leads.csv", index=False)
    spec = {
        "name": "coin_toss",
        "leads": {"path": str(tmp_path / "leads.csv"), "id": "lead_id",
                  "created_at": "created_at"},
        "outcome": {"column": "converted", "positive": ["1"], "negative": ["0"]},
        "features": {"categorical": ["coin"], "numeric": []},
        "train": {"min_per_class": 20},
    }
    (tmp_path / "spec.yaml").write_text(yaml.safe_dump(spec))
    settings = Settings(tracking_uri=f"sqlite:///{tmp_path / 'mlflow.db'}", home=tmp_path,
                        model_name=None, feature_cache="off")
    result = run_training(load_spec(tmp_path / "spec.yaml"), settings, baselines=False)
    assert abs(result.metrics["test_roc_auc"] - 0.5) <= 0.02
    assert not result.promoted and result.version == "1"
    assert "within 0.02 of 0.5" in result.promotion_reason
    assert result.bundle_dir is None and not (tmp_path / "models").exists()
    assert result.report_dir is not None
    card = (result.report_dir / "model_card.md").read_text(encoding="utf-8")
    assert card.splitlines()[0].startswith("**Not fit to serve, never promoted automatically")


def test_training_from_another_folder_leaves_the_checkout_alone(
    store: Store, tmp_path: Path
) -> None:
    if not (ROOT / ".git").exists():
        pytest.skip("not a git checkout")

    def status() -> str:
        return subprocess.run(["git", "status", "--porcelain", "--untracked-files=all"],
                              cwd=ROOT, capture_output=True, text=True, check=True).stdout

    before = status()
    env = {k: v for k, v in store.env().items() if k not in ("LEADSCORE_HOME",
                                                             "LEADSCORE_TRACKING_URI")}
    done = subprocess.run(
        [sys.executable, "-m", "leadscore.cli", "train", "--config", str(store.synth.source)],
        cwd=tmp_path, env=env, capture_output=True, text=True, timeout=600,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    assert status() == before
    for made in ("mlflow.db", "mlartifacts", "reports", "cache/features"):
        assert (tmp_path / made).exists(), made
    promoted = "promoted to @champion" in done.stdout
    assert (tmp_path / "models" / SYNTH / "bundle.json").exists() == promoted, done.stdout
