"""A small trained bundle on disk for the batch and compiled-trees tests: 40 LightGBM trees on
an encoded matrix, Platt calibration, tiers and percentiles (about a second to train)."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np

from leadscore.evaluate import feature_profile
from leadscore.features import FeatureBuilder
from leadscore.scoring import ModelBundle
from leadscore.train import Calibrator, percentile_grid, tier_cutoffs


def save_small_bundle(builder: FeatureBuilder, x: np.ndarray, y: np.ndarray, name: str,
                      out: Path, *, num_leaves: int = 15, min_data_in_leaf: int = 10,
                      rounds: int = 40, profile: bool = False) -> Path:
    """Train on `x`, `y` (encoded by the fitted `builder`) and save the bundle to `out`; with
    `profile`, the drift reference too (from the training rows)."""
    params = {"objective": "binary", "num_leaves": num_leaves, "verbosity": -1,
              "deterministic": True, "num_threads": 1, "min_data_in_leaf": min_data_in_leaf}
    data = lgb.Dataset(x, y, categorical_feature=builder.categorical_indices_)
    booster = lgb.train(params, data, num_boost_round=rounds)
    margin = booster.predict(x, raw_score=True)
    calibrator = Calibrator("platt").fit(margin, y)
    p = calibrator.transform(margin)
    meta = {"name": name, "version": "1", "id_column": "lead_id",
            "tiers": tier_cutoffs(p), "percentiles": percentile_grid(p)}
    if profile:
        meta["profile"] = feature_profile(builder.features_, x, p)
    ModelBundle(booster, builder, calibrator, meta).save(out)
    return out


def train_plan_bundle(root: Path, name: str, model: str, *, seed: int, id_prefix: str,
                      with_report: bool = False, **spec_extra: object) -> Path:
    """`leadscore train` (no MLflow, no baselines) on 1,500 seeded leads: `plan` (a category),
    `emp.var.rate` (a number whose name has dots) and `visits`; the bundle in root/models."""
    import pandas as pd
    import yaml

    from leadscore.config import Settings, load_spec
    from leadscore.pipeline import run_training

    rng = np.random.default_rng(seed)
    n = 1500
    plan = rng.choice(["free", "team", "enterprise"], n)
    rate = rng.normal(0, 1, n).round(2)
    visits = rng.poisson(3, n)
    logit = -1 + (plan == "enterprise") * 1.2 + rate * 0.8 + visits * 0.2
    converted = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int)
    pd.DataFrame({
        "lead_id": [f"{id_prefix}{i:05d}" for i in range(n)],
        "created_at": pd.date_range("2024-01-01", periods=n, freq="h").astype(str),
        "plan": plan, "emp.var.rate": rate, "visits": visits, "converted": converted,
    }).to_csv(root / "leads.csv", index=False)
    spec = {
        "name": name,
        "leads": {"path": str(root / "leads.csv"), "id": "lead_id", "created_at": "created_at"},
        "outcome": {"column": "converted", "positive": ["1"], "negative": ["0"]},
        "features": {"categorical": ["plan"], "numeric": ["emp.var.rate", "visits"]},
        # one thread: OpenMP's spin-waits make training crawl when the machine is busy
        "train": {"min_per_class": 20, "params": {"num_threads": 1}},
        **spec_extra,
    }
    (root / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    settings = Settings(models_dir=root / "models", model_name=model, home=root)
    result = run_training(load_spec(root / "spec.yaml"), settings, track=False,
                          with_report=with_report, baselines=False,
                          bundle_out=root / "models" / model)
    assert result.bundle_dir is not None
    return result.bundle_dir
