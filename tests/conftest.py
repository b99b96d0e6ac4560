"""Small seeded fixtures shared by the suite: a synthetic CRM, a spec for it, an isolated MLflow
store and one model trained and registered there (session-scoped: training costs seconds)."""

from __future__ import annotations

import logging
import os
import shutil
import sys
from collections.abc import Iterator
from dataclasses import dataclass
from pathlib import Path

import pandas as pd
import pytest
import yaml

from leadscore.config import DatasetSpec, Settings, load_spec

SYNTH_CATEGORICAL = [
    "source_channel",
    "seniority",
    "industry",
    "company_size",
    "country",
    "budget",
    "authority",
    "need",
    "timeline",
    "stage_at_creation",
]


@pytest.fixture(autouse=True, scope="session")
def _isolated_environment(tmp_path_factory: pytest.TempPathFactory) -> Iterator[None]:
    """No test may touch a developer's tracking server or the project's own mlflow.db."""
    saved = {
        k: os.environ.pop(k) for k in list(os.environ) if k.startswith(("MLFLOW_", "LEADSCORE_"))
    }
    os.environ["MLFLOW_ALLOW_PICKLE_DESERIALIZATION"] = "false"
    # outputs a test does not place itself (reports, caches, models) land here, not in the
    # working directory (the checkout, when the suite runs from it)
    os.environ["LEADSCORE_HOME"] = str(tmp_path_factory.mktemp("home"))
    yield
    os.environ.pop("MLFLOW_ALLOW_PICKLE_DESERIALIZATION", None)
    os.environ.pop("LEADSCORE_HOME", None)
    os.environ.update(saved)


@pytest.fixture(autouse=True)
def _restore_logging() -> Iterator[None]:
    """The CLI sets up logging on the root logger (a handler on its own stderr); a test that
    invokes it in-process must not leave that handler writing to a closed stream."""
    root = logging.getLogger()
    handlers, level = list(root.handlers), root.level
    ours = logging.getLogger("leadscore").level
    yield
    root.handlers[:] = handlers
    root.setLevel(level)
    logging.getLogger("leadscore").setLevel(ours)


def write_spec(path: Path, data: dict) -> Path:
    path.write_text(yaml.safe_dump(data, sort_keys=False), encoding="utf-8")
    return path


def synthetic_spec_dict(leads_csv: Path, **overrides: object) -> dict:
    spec = {
        "name": "synthetic_test",
        "leads": {"path": str(leads_csv), "id": "lead_id", "created_at": "created_at"},
        "outcome": {"column": "converted", "positive": ["1"], "negative": ["0"]},
        "features": {"categorical": SYNTH_CATEGORICAL, "numeric": []},
        "drop": ["converted_at", "job_title"],
        "pii": ["name", "email", "phone"],
        "train": {"min_per_class": 20},
    }
    spec.update(overrides)
    return spec


@pytest.fixture(scope="session")
def synth_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """4,000 synthetic leads with activities, conversions and true probabilities, as CSV."""
    from leadscore import synth

    out = tmp_path_factory.mktemp("synth")
    synth.write(synth.generate(4000, seed=7), out, fmt="csv")
    return out


@pytest.fixture(scope="session")
def synth_leads(synth_dir: Path) -> pd.DataFrame:
    return pd.read_csv(synth_dir / "leads.csv", dtype=str, keep_default_na=False)


@pytest.fixture(scope="session")
def synth_spec(synth_dir: Path) -> DatasetSpec:
    path = write_spec(synth_dir / "spec.yaml", synthetic_spec_dict(synth_dir / "leads.csv"))
    return load_spec(path)


@pytest.fixture(scope="session")
def store(tmp_path_factory: pytest.TempPathFactory) -> Settings:
    """Settings for an isolated embedded MLflow store and models folder."""
    root = tmp_path_factory.mktemp("store")
    return Settings(
        tracking_uri=f"sqlite:///{root / 'mlflow.db'}",
        models_dir=root / "models",
        model_name="test-leads",
    )


@dataclass
class Trained:
    settings: Settings
    spec: DatasetSpec
    uri: str
    bundle_dir: Path
    version: str
    metrics: dict[str, float]


@pytest.fixture(scope="session")
def trained(synth_spec: DatasetSpec, store: Settings) -> Trained:
    """One model trained on the synthetic leads, logged and registered as @champion."""
    from leadscore.pipeline import run_training

    result = run_training(synth_spec, store)
    assert result.version is not None and result.model_uri is not None
    return Trained(
        store, synth_spec, result.model_uri, result.bundle_dir, result.version, result.metrics
    )


@pytest.fixture(scope="session")
def bundle(trained: Trained):  # type: ignore[no-untyped-def]
    """The champion, loaded through the registry alias like the API and batch load it."""
    from leadscore.tracking import load_model

    return load_model(trained.uri, trained.settings)


@pytest.fixture(scope="session")
def spark() -> Iterator[object]:
    """One local[2] Spark session for every Spark test (a JVM start costs seconds); skipped
    without PySpark or Java (make test installs both)."""
    pytest.importorskip("pyspark")
    if shutil.which("java") is None and not os.environ.get("JAVA_HOME"):
        pytest.skip("Spark needs Java (make test installs it)")
    from pyspark.sql import SparkSession

    saved = os.environ.get("PYSPARK_PYTHON")
    os.environ["PYSPARK_PYTHON"] = sys.executable  # workers import leadscore from this venv
    os.environ.setdefault("PYTHONWARNINGS", "ignore::FutureWarning")
    session = (
        SparkSession.builder.master("local[2]").appName("leadscore-tests")
        .config("spark.ui.enabled", "false")
        .config("spark.sql.shuffle.partitions", "2")
        .config("spark.driver.memory", "1g")
        .getOrCreate()
    )
    session.sparkContext.setLogLevel("ERROR")
    yield session
    session.stop()
    if saved is None:
        os.environ.pop("PYSPARK_PYTHON", None)
    else:
        os.environ["PYSPARK_PYTHON"] = saved
