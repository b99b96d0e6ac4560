"""Behavioural tests on synthetic data, where the truth is known: what a lead did must move its
score the way sales expect, and the model must come close to the generator's true odds."""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
import yaml
from sklearn.metrics import roc_auc_score

from leadscore.config import DatasetSpec, load_spec
from leadscore.data import ID, LABEL
from leadscore.features import activity_count_column
from leadscore.table import build_table
from leadscore.train import TrainedModel, fit_model

ROOT = Path(__file__).resolve().parents[1]
FAST = {"learning_rate": 0.1, "monotone_constraints_method": "basic"}


def activity_spec(folder: Path) -> DatasetSpec:
    """configs/synthetic.yaml (activity log, positive and negative activity types) on `folder`."""
    spec = yaml.safe_load((ROOT / "configs" / "synthetic.yaml").read_text(encoding="utf-8"))
    spec["leads"]["path"] = str(folder / "leads.csv")
    spec["outcome"]["table"]["path"] = str(folder / "conversions.csv")
    spec["activities"]["path"] = str(folder / "activities.csv")
    spec.setdefault("train", {})["min_per_class"] = 20
    path = folder / "activity_spec.yaml"
    path.write_text(yaml.safe_dump(spec, sort_keys=False), encoding="utf-8")
    return load_spec(path)


@pytest.fixture(scope="module")
def model(synth_dir: Path) -> tuple[pd.DataFrame, DatasetSpec, TrainedModel]:
    spec = activity_spec(synth_dir)
    table, _ = build_table(spec)
    return table, spec, fit_model(table, spec, FAST)


def _columns(table: pd.DataFrame, spec: DatasetSpec, kind: str) -> list[str]:
    assert spec.activities is not None
    names = [activity_count_column(kind, w) for w in spec.activities.windows]
    missing = [c for c in names if c not in table.columns]
    assert not missing, f"the training table lacks activity aggregates {missing}"
    return names


def test_a_demo_request_never_lowers_the_score(model) -> None:  # type: ignore[no-untyped-def]
    table, spec, trained = model
    leads = table.iloc[trained.split.test].copy()
    before = trained.predict_proba(leads)
    for extra in (1, 3):
        more = leads.copy()
        for column in _columns(table, spec, "demo_request"):
            more[column] = more[column].fillna(0) + extra
        after = trained.predict_proba(more)
        assert np.all(after >= before - 1e-12), "a demo request lowered a score"
        assert np.mean(after > before + 1e-9) > 0.5, "and it should usually raise it"


def test_more_unanswered_calls_never_raise_the_score(model) -> None:  # type: ignore[no-untyped-def]
    table, spec, trained = model
    leads = table.iloc[trained.split.test].copy()
    before = trained.predict_proba(leads)
    more = leads.copy()
    for column in _columns(table, spec, "call_unanswered"):
        more[column] = more[column].fillna(0) + 2
    after = trained.predict_proba(more)
    assert np.all(after <= before + 1e-12), "an unanswered call raised a score"


@pytest.mark.slow
def test_auc_is_high_and_close_to_the_truth(tmp_path: Path) -> None:
    from leadscore import synth

    synth.write(synth.generate(12_000, seed=3), tmp_path, fmt="csv")
    spec = activity_spec(tmp_path)
    table, _ = build_table(spec)
    trained = fit_model(table, spec, FAST)
    test = table.iloc[trained.split.test]
    truth = pd.read_csv(tmp_path / "truth.csv", dtype={"lead_id": str}).set_index("lead_id")
    p_true = truth["p_true"].reindex(test[ID].astype(str)).to_numpy()
    assert not np.isnan(p_true).any()
    auc_model = roc_auc_score(test[LABEL], trained.predict_proba(test))
    auc_truth = roc_auc_score(test[LABEL], p_true)
    assert auc_model >= 0.8
    assert auc_model >= auc_truth - 0.02, (auc_model, auc_truth)
