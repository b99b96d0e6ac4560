"""Recalibration without retraining: leads converting at a shifted level (log-odds + 0.8) after
the model was trained; a calibration fitted on their matured outcomes brings expected
conversions on the next cohort within 5% of actual, the trees unchanged; the CLI registers it
as a new version through the promotion gate."""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from leadscore.errors import DataError
from leadscore.monitor import read_outcomes
from leadscore.recalibrate import probabilities, recalibrate
from leadscore.scoring import score_arrays
from leadscore.store import ScoreStore, history_rows

SHIFT = 0.8
N = 12_000
FIT_DAY = pd.Timestamp("2026-01-05T10:00:00", tz="UTC")
AS_OF = pd.Timestamp("2026-03-01", tz="UTC")


def cohort(bundle: Any, synth_leads: pd.DataFrame, seed: int, prefix: str) -> tuple[
        pd.DataFrame, np.ndarray, np.ndarray]:
    """N leads resampled from the synthetic CRM; their features, the model's probabilities and
    outcomes drawn at the shifted level."""
    rng = np.random.default_rng(seed)
    leads = synth_leads.sample(N, replace=True, random_state=seed).reset_index(drop=True)
    leads["lead_id"] = [f"{prefix}{i:05d}" for i in range(N)]
    fields = list(bundle.input_types())
    scores = score_arrays(bundle, leads[["lead_id", *fields]].replace("", None))
    logit = np.log(scores.probability / (1 - scores.probability)) + SHIFT
    y = rng.random(N) < 1 / (1 + np.exp(-logit))
    return leads.assign(y=y), scores, y


def write_fit_cohort(root: Path, store: ScoreStore, bundle: Any,
                     synth_leads: pd.DataFrame) -> Path:
    leads, scores, y = cohort(bundle, synth_leads, 1, "F")
    rows = history_rows(pa.array(leads["lead_id"]), bundle.version, FIT_DAY.to_pydatetime(),
                        scores.probability, scores.score, scores.tier, scores.matrix)
    store.append("test-leads", rows, key="fit")
    when = [str(FIT_DAY + pd.Timedelta(days=5)) if hit else "" for hit in y]
    path = root / "outcomes.csv"
    pd.DataFrame({"lead_id": leads["lead_id"], "converted": y.astype(int),
                  "converted_at": when}).to_csv(path, index=False)
    return path


def test_recalibration_brings_the_next_cohort_within_5_percent(
        bundle: Any, synth_leads: pd.DataFrame, tmp_path: Path) -> None:
    store = ScoreStore(tmp_path / "scores")
    outcomes = read_outcomes(write_fit_cohort(tmp_path, store, bundle, synth_leads))
    result = recalibrate(store, "test-leads", outcomes, bundle, horizon_days=30,
                         as_of=AS_OF.to_pydatetime())
    assert result.fit_rows + result.holdout_rows == N
    assert result.bundle.booster is bundle.booster, "the trees are unchanged"
    assert result.after["ece"] < result.before["ece"]

    leads, scores, y = cohort(bundle, synth_leads, 2, "N")  # the next cohort, never seen
    actual = float(y.sum())
    before = float(scores.probability.sum())
    after = float(probabilities(result.bundle, scores.matrix).sum())
    assert abs(before - actual) / actual > 0.15, "the shift is real before recalibration"
    assert abs(after - actual) / actual < 0.05, (before, after, actual)
    # ranking untouched: the order of the leads is the trees'
    new_order = probabilities(result.bundle, scores.matrix)
    assert np.corrcoef(np.argsort(np.argsort(new_order)),
                       np.argsort(np.argsort(scores.probability)))[0, 1] > 0.99


def test_too_few_outcomes_is_one_line(bundle: Any, synth_leads: pd.DataFrame,
                                      tmp_path: Path) -> None:
    store = ScoreStore(tmp_path / "scores")
    outcomes = read_outcomes(write_fit_cohort(tmp_path, store, bundle, synth_leads))
    with pytest.raises(DataError, match=r"too few matured outcomes to recalibrate test-leads "
                                        r"version \d+ since 2026-02-01: 0 matured scorings"):
        recalibrate(store, "test-leads", outcomes, bundle, horizon_days=30,
                    as_of=AS_OF.to_pydatetime(),
                    since=pd.Timestamp("2026-02-01", tz="UTC").to_pydatetime())


@pytest.mark.slow
def test_cli_registers_a_new_version_through_the_gate(trained: Any, bundle: Any,
                                                      synth_leads: pd.DataFrame,
                                                      tmp_path: Path) -> None:
    """On a copy of the registry (the shared one's champion must not move)."""
    registry = tmp_path / "registry"
    registry.mkdir()
    source = Path(trained.settings.tracking_uri.removeprefix("sqlite:///"))
    shutil.copy(source, registry / "mlflow.db")
    home = tmp_path / "home"
    outcomes = write_fit_cohort(tmp_path, ScoreStore(home / "scores"), bundle, synth_leads)
    env = {**os.environ, "PYTHONPATH": os.pathsep.join(sys.path), "LEADSCORE_HOME": str(home),
           "LEADSCORE_TRACKING_URI": f"sqlite:///{registry / 'mlflow.db'}",
           "LEADSCORE_MODELS_DIR": str(tmp_path / "models")}
    done = subprocess.run(
        [sys.executable, "-m", "leadscore.cli", "recalibrate", "test-leads", "--outcomes",
         str(outcomes), "--horizon-days", "30", "--as-of", "2026-03-01"],
        env=env, capture_output=True, text=True)
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert int(result["version"]) > int(bundle.version)
    assert result["promoted"] is True, result["reason"]
    assert result["after"]["ece"] < result["before"]["ece"]
    from leadscore.config import Settings
    from leadscore.tracking import load_model

    settings = Settings(tracking_uri=env["LEADSCORE_TRACKING_URI"],
                        models_dir=tmp_path / "models")
    champion = load_model("models:/test-leads@champion", settings)
    assert champion.version == result["version"]
    assert champion.meta["recalibrated"]["from_version"] == bundle.version
    assert champion.booster.model_to_string() == bundle.booster.model_to_string()
    assert (tmp_path / "models" / "test-leads").is_dir()
