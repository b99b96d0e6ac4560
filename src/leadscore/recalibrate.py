"""Recalibration without retraining: a new calibration (same trees, same features) fitted on the
champion's recent matured outcomes from the score history, checked on held-out later ones, and
registered as a new version that goes through the usual promotion gate.

Why only the champion's own scorings: a calibration maps one set of trees' log-odds to
probabilities; another version's stored features may be encoded differently. Why a time split
(the latest `holdout` share of scorings held out, not a random one): the new calibration is for
leads scored after it, so it is checked on the leads scored last.
"""

from __future__ import annotations

import logging
import tempfile
from dataclasses import dataclass, field
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd

from leadscore.config import DEFAULT_HORIZON_DAYS
from leadscore.errors import DataError
from leadscore.evaluate import expected_calibration_error
from leadscore.monitor import joined
from leadscore.scoring import ModelBundle, predict
from leadscore.store import ScoreStore
from leadscore.train import Calibrator, percentile_grid, tier_cutoffs

log = logging.getLogger(__name__)

HOLDOUT = 0.3
MIN_ROWS = 200  # matured scorings to fit on
MIN_POSITIVES = 20  # conversions among them


@dataclass
class Recalibration:
    """The recalibrated bundle and how both calibrations do on the held-out outcomes."""

    bundle: ModelBundle
    fit_rows: int
    holdout_rows: int
    since: str | None
    before: dict[str, float]  # the champion's calibration on the held-out outcomes
    after: dict[str, float]  # the new one's
    holdout_features: np.ndarray = field(repr=False)
    holdout_y: np.ndarray = field(repr=False)

    def evaluate(self, other: ModelBundle) -> dict[str, float]:
        """Any bundle's `roc_auc` and `ece` on the held-out outcomes: the promotion gate judges
        the champion and the new version on the same leads."""
        return holdout_metrics(self.holdout_y, probabilities(other, self.holdout_features))

    def as_dict(self) -> dict[str, Any]:
        return {"fit_rows": self.fit_rows, "holdout_rows": self.holdout_rows,
                "since": self.since, "before": self.before, "after": self.after,
                "calibration": self.bundle.calibrator.to_dict()["method"]}


def probabilities(bundle: ModelBundle, features: np.ndarray) -> np.ndarray:
    return predict(bundle, features)[0].probability


def holdout_metrics(y: np.ndarray, p: np.ndarray) -> dict[str, float]:
    from sklearn.metrics import roc_auc_score

    auc = float(roc_auc_score(y, p)) if len(set(y.tolist())) == 2 else float("nan")
    return {"roc_auc": auc, "ece": expected_calibration_error(y, p),
            "expected": float(p.sum()), "actual": float(y.sum())}


def recalibrate(store: ScoreStore, name: str, outcomes: pd.DataFrame, champion: ModelBundle,
                *, since: datetime | None = None, horizon_days: int = DEFAULT_HORIZON_DAYS,
                as_of: datetime | None = None, holdout: float = HOLDOUT,
                method: str = "auto") -> Recalibration:
    """Fit a calibration on the champion's matured scorings (since `since`), the latest
    `holdout` share held out to check it; tiers and percentiles follow the new probabilities,
    so tier sizes stay what sales planned for."""
    if not 0.0 < holdout < 1.0:
        raise DataError("--holdout must be between 0 and 1")
    as_of = as_of or datetime.now(UTC)
    data = joined(store, name, outcomes, horizon_days=horizon_days, as_of=as_of, period="week")
    data = data[data["matured"] & (data["model_version"] == champion.version)]
    if since is not None:
        data = data[data["scored_at"] >= pd.Timestamp(since)]
    data = data.sort_values("scored_at", kind="stable")
    cut = int(round(len(data) * (1.0 - holdout)))
    fit, held = data.iloc[:cut], data.iloc[cut:]
    positives = int(fit["y"].sum())
    when = f" since {since.date().isoformat()}" if since else ""
    if len(fit) < MIN_ROWS or positives < MIN_POSITIVES or len(held) == 0:
        raise DataError(
            f"too few matured outcomes to recalibrate {name} version {champion.version}{when}: "
            f"{len(data)} matured scorings ({positives} conversions in the part fitted on); "
            f"need {MIN_ROWS} to fit on with {MIN_POSITIVES} conversions, and some held out"
        )
    x_fit = np.array(fit["features"].tolist(), dtype=float)
    x_held = np.array(held["features"].tolist(), dtype=float)
    y_fit, y_held = fit["y"].to_numpy(), held["y"].to_numpy()
    margin = predict(champion, x_fit)[0].margin
    calibrator = Calibrator(method).fit(margin, y_fit)  # type: ignore[arg-type]
    p_fit = np.clip(calibrator.transform(margin), 0.0, 1.0)
    meta = {
        **champion.meta,
        "tiers": tier_cutoffs(p_fit),
        "percentiles": percentile_grid(p_fit),
        "recalibrated": {"from_version": champion.version, "fit_rows": len(fit),
                         "holdout_rows": len(held), "horizon_days": horizon_days,
                         "since": since.isoformat() if since else None,
                         "at": datetime.now(UTC).isoformat(timespec="seconds")},
    }
    meta.pop("version", None)
    meta.pop("run_id", None)
    bundle = ModelBundle(champion.booster, champion.builder, calibrator, meta)
    before = holdout_metrics(y_held, probabilities(champion, x_held))
    after = holdout_metrics(y_held, probabilities(bundle, x_held))
    log.info("recalibrated %s on %d matured scorings; held out %d: ECE %.4f -> %.4f, expected "
             "%.1f -> %.1f for %d actual", name, len(fit), len(held), before["ece"],
             after["ece"], before["expected"], after["expected"], int(after["actual"]))
    return Recalibration(bundle, len(fit), len(held), since.isoformat() if since else None,
                         before, after, x_held, y_held)


def register(name: str, result: Recalibration, settings: Any) -> dict[str, Any]:
    """Log and register the recalibrated bundle as a new version of `name`; the promotion gate
    compares it with the champion on the held-out outcomes (ECE and ROC AUC)."""
    from leadscore import tracking  # MLflow costs seconds to import

    bundle = result.bundle
    mine = {"roc_auc": result.after["roc_auc"], "ece": result.after["ece"]}
    metrics = {
        "test_roc_auc": float((bundle.meta.get("metrics") or {}).get("test_roc_auc", "nan")),
        **{f"holdout_{k}": v for k, v in result.after.items()},
        **{f"holdout_before_{k}": v for k, v in result.before.items()},
    }
    dataset = str(bundle.meta.get("dataset") or name)
    with tempfile.TemporaryDirectory(prefix="leadscore-bundle-") as staging:
        staged = bundle.save(Path(staging) / "bundle")
        logged = tracking.log_training(
            name=name, bundle_dir=staged, bundle=bundle, settings=settings,
            experiment=dataset,
            params={"kind": "recalibration", "from_version": bundle.meta["recalibrated"][
                "from_version"], "fit_rows": result.fit_rows,
                "holdout_rows": result.holdout_rows, "since": result.since or "",
                "calibration": bundle.calibrator.to_dict()["method"]},
            metrics=metrics,
            artifacts={"recalibration.json": result.as_dict()},
            tags={"leadscore.dataset": dataset, "leadscore.model_name": name,
                  "leadscore.kind": "recalibration"},
            evaluate=result.evaluate,
            challenger_metrics=mine,
        )
    bundle.meta["version"], bundle.meta["run_id"] = logged.version, logged.run_id
    if logged.promoted:
        tracking.publish_champion(bundle, name, settings)
    return {"name": name, "version": logged.version, "promoted": logged.promoted,
            "reason": logged.reason, "run_id": logged.run_id, **result.as_dict()}
