"""Replay history as the model would have lived it: walk through the most recent share of the
labelled leads in steps, retrain on everything before each step, score the step. The per-step
ROC AUC shows how fast a model goes stale, so a team can choose how often to retrain.

Two more models are scored on the same steps, side by side, so one run answers "does the
pipeline earn its complexity?": a plain LightGBM retrained on all history at each step (fixed
parameters and rounds, no validation hold-out: the simplest honest competitor), and, with
`recalibrate`, the pipeline's own trees with only their calibration refitted on the latest
matured outcomes before the step (what `leadscore recalibrate` does for the live product)."""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from leadscore.config import DatasetSpec, Settings
from leadscore.data import LABEL, TIME, check_ready
from leadscore.errors import DataError
from leadscore.evaluate import classification_metrics
from leadscore.features import builder_for
from leadscore.train import Calibrator, boost, fit_model, split_leads, training_options

log = logging.getLogger(__name__)

# the plain model's fixed number of trees: development measured 100-200 trees at the same
# bank backtest AUC (0.761-0.771); fixed so the plain model never looks at a hold-out
PLAIN_ROUNDS = 150
# recalibration fits on the latest labelled leads before a step: as many as the step itself
# (about as recent as the history gets), but never fewer than this, so a Platt fit is stable
RECALIBRATE_MIN_ROWS = 200
VARIANTS = ("pipeline", "recalibrated", "plain")


@dataclass
class BacktestResult:
    steps: list[dict[str, Any]] = field(default_factory=list)
    overall: dict[str, float] = field(default_factory=dict)  # the pipeline's (as before)
    dropped: list[str] = field(default_factory=list)
    # pooled metrics per model scored: "pipeline", "plain" and (with recalibrate) "recalibrated";
    # per step, `<variant>_roc_auc` and `<variant>_mean_probability` (the pipeline's unprefixed)
    variants: dict[str, dict[str, float]] = field(default_factory=dict)
    recalibrate_rows: int | None = None  # the K latest matured leads each recalibration used

    def as_dict(self) -> dict[str, Any]:
        return {"overall": self.overall, "variants": self.variants, "steps": self.steps,
                "recalibrate_rows": self.recalibrate_rows, "leak_audit_dropped": self.dropped}


def _pooled(y: list[np.ndarray], p: list[np.ndarray], step_aucs: list[float]) -> dict[str, float]:
    """Pooled metrics over all steps plus the mean per-step ROC AUC (steps with one class
    have no AUC and are skipped)."""
    metrics = classification_metrics(np.concatenate(y), np.concatenate(p))
    aucs = [a for a in step_aucs if a == a]
    metrics["mean_step_roc_auc"] = float(np.mean(aucs)) if aucs else float("nan")
    metrics["steps"] = float(len(y))
    return metrics


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def plain_model_proba(
    table: pd.DataFrame, test_rows: np.ndarray, spec: DatasetSpec, params: dict[str, Any] | None
) -> np.ndarray:
    """The plain competitor: LightGBM with the project's tree parameters, `PLAIN_ROUNDS` trees,
    trained on every row of `table` outside `test_rows` (no hold-out, no linear start), features
    encoded by the pipeline's FeatureBuilder; probabilities for `test_rows`."""
    past = table.drop(index=table.index[test_rows])
    builder = builder_for(spec, table).fit(past)
    lgb_params, _ = training_options(spec, params, len(past))
    y = past[LABEL].to_numpy().astype(float)
    booster, _ = boost(lgb_params, builder, builder.transform(past), y, rounds=PLAIN_ROUNDS)
    return np.asarray(booster.predict(builder.transform(table.iloc[test_rows])), dtype=float)


def backtest(
    leads: pd.DataFrame,
    spec: DatasetSpec,
    steps: int,
    *,
    share: float | None = None,
    params: dict[str, Any] | None = None,
    recalibrate: bool = False,
    plain: bool = True,
) -> BacktestResult:
    """Walk-forward evaluation of `fit_model` over the most recent `share` (default: the spec's
    test fraction) of labelled leads in `steps` equal steps, with the plain model (`plain`)
    and the recalibrated pipeline (`recalibrate`) scored on the same steps."""
    if TIME not in leads.columns:
        raise DataError(
            f"{spec.name}: a backtest needs a created-at or order column (leads.created_at, "
            "leads.order_by or leads.file_order_is_time in the spec)"
        )
    if steps < 1:
        raise DataError("--steps must be at least 1")
    share = share or spec.train.test_fraction
    labelled = np.flatnonzero(leads[LABEL].notna().to_numpy())
    order = labelled[np.argsort(leads[TIME].to_numpy()[labelled], kind="stable")]
    n = len(order)
    start = n - int(round(n * share))
    bounds = np.linspace(start, n, steps + 1).round().astype(int)
    names = [v for v in VARIANTS if v == "pipeline" or (v == "plain" and plain)
             or (v == "recalibrated" and recalibrate)]
    y_all: list[np.ndarray] = []
    p_all: dict[str, list[np.ndarray]] = {v: [] for v in names}
    result = BacktestResult()
    for i in range(steps):
        history, upcoming = order[: bounds[i]], order[bounds[i] : bounds[i + 1]]
        if not len(upcoming):
            continue
        rows = np.concatenate([history, upcoming])
        table = leads.iloc[rows].reset_index(drop=True)
        fraction = len(upcoming) / len(rows)
        # the step is the "test" slice of a spec whose test fraction is exactly its size
        train = spec.train.model_copy(update={"test_fraction": fraction})
        step_spec = spec.model_copy(update={"train": train})
        trained = fit_model(table, step_spec, params)
        test_rows = trained.split.test
        y = table[LABEL].to_numpy()[test_rows]
        matrix = trained.builder.transform(table.iloc[test_rows])
        p = trained.calibrator.transform(trained.margin(matrix))
        probs = {"pipeline": p}
        if recalibrate:
            # outcomes matured before the step: every history row is labelled by construction;
            # the latest K of them, scored by this step's trees, refit only the calibration
            k = min(len(history), max(len(upcoming), RECALIBRATE_MIN_ROWS))
            result.recalibrate_rows = k
            recent = table.iloc[len(history) - k : len(history)]
            ry = recent[LABEL].to_numpy().astype(float)
            fresh = Calibrator("platt").fit(trained.margin(trained.builder.transform(recent)), ry)
            probs["recalibrated"] = fresh.transform(trained.margin(matrix))
        if plain:
            probs["plain"] = plain_model_proba(table, test_rows, step_spec, params)
        y_all.append(y)
        for v in names:
            p_all[v].append(probs[v])
        entry: dict[str, Any] = {
            "step": i + 1,
            "train_leads": int(len(history)),
            "scored_leads": int(len(test_rows)),
            "conversion_rate": float(y.mean()),
            "roc_auc": _auc(y, p),
            "mean_probability": float(p.mean()),
        }
        for v in names[1:]:
            entry[f"{v}_roc_auc"] = _auc(y, probs[v])
            entry[f"{v}_mean_probability"] = float(probs[v].mean())
        result.steps.append(entry)
        log.info(
            "backtest step %d/%d: %d leads, ROC AUC %.4f",
            i + 1,
            steps,
            entry["scored_leads"],
            entry["roc_auc"],
        )
    for v in names:
        key = "roc_auc" if v == "pipeline" else f"{v}_roc_auc"
        result.variants[v] = _pooled(y_all, p_all[v], [s[key] for s in result.steps])
    result.overall = dict(result.variants["pipeline"])
    return result


def run_backtest(
    spec: DatasetSpec,
    settings: Settings,
    steps: int,
    *,
    data_path: Path | None = None,
    params: dict[str, Any] | None = None,
    recalibrate: bool = False,
    plain: bool = True,
) -> BacktestResult:
    """The training table as `leadscore train` builds it (leak audit included), then `backtest`."""
    from leadscore.audit import audit_leaks
    from leadscore.pipeline import cached_build

    leads, _ = cached_build(spec, settings, data_path)
    check_ready(leads, spec, str(data_path or spec.resolve(spec.leads.path)))
    # always: the personal-data scan runs even with the leak statistics switched off
    split = split_leads(leads, spec)
    leak = audit_leaks(leads, spec, np.concatenate([split.train, split.valid]))
    dropped = leak.dropped
    if dropped:
        spec = spec.model_copy(update={"drop": [*spec.drop, *dropped]})
    result = backtest(
        leads, spec, steps, params=params, recalibrate=recalibrate, plain=plain
    )
    result.dropped = dropped
    return result
