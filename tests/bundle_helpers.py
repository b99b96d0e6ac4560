"""A small trained bundle on disk for the batch and compiled-trees tests: 40 LightGBM trees on
an encoded matrix, Platt calibration, tiers and percentiles (about a second to train)."""

from __future__ import annotations

from pathlib import Path

import lightgbm as lgb
import numpy as np

from leadscore.features import FeatureBuilder
from leadscore.scoring import ModelBundle
from leadscore.train import Calibrator, percentile_grid, tier_cutoffs


def save_small_bundle(builder: FeatureBuilder, x: np.ndarray, y: np.ndarray, name: str,
                      out: Path) -> Path:
    """Train on `x`, `y` (encoded by the fitted `builder`) and save the bundle to `out`."""
    params = {"objective": "binary", "num_leaves": 15, "verbosity": -1, "deterministic": True,
              "num_threads": 1, "min_data_in_leaf": 10}
    data = lgb.Dataset(x, y, categorical_feature=builder.categorical_indices_)
    booster = lgb.train(params, data, num_boost_round=40)
    margin = booster.predict(x, raw_score=True)
    calibrator = Calibrator("platt").fit(margin, y)
    p = calibrator.transform(margin)
    meta = {"name": name, "version": "1", "id_column": "lead_id",
            "tiers": tier_cutoffs(p), "percentiles": percentile_grid(p)}
    ModelBundle(booster, builder, calibrator, meta).save(out)
    return out
