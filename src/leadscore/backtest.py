"""Replay history as the model would have lived it: walk through the most recent share of the
labelled leads in steps, retrain on everything before each step, score the step. The per-step
ROC AUC shows how fast a model goes stale, so a team can choose how often to retrain."""

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
from leadscore.train import fit_model, split_leads

log = logging.getLogger(__name__)


@dataclass
class BacktestResult:
    steps: list[dict[str, Any]] = field(default_factory=list)
    overall: dict[str, float] = field(default_factory=dict)
    dropped: list[str] = field(default_factory=list)

    def as_dict(self) -> dict[str, Any]:
        return {"overall": self.overall, "steps": self.steps, "leak_audit_dropped": self.dropped}


def backtest(
    leads: pd.DataFrame,
    spec: DatasetSpec,
    steps: int,
    *,
    share: float | None = None,
    params: dict[str, Any] | None = None,
) -> BacktestResult:
    """Walk-forward evaluation of `fit_model` over the most recent `share` (default: the spec's
    test fraction) of labelled leads in `steps` equal steps."""
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
    y_all: list[np.ndarray] = []
    p_all: list[np.ndarray] = []
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
        p = trained.predict_proba(table.iloc[test_rows])
        y_all.append(y)
        p_all.append(p)
        both = 0 < y.sum() < len(y)
        entry = {
            "step": i + 1,
            "train_leads": int(len(history)),
            "scored_leads": int(len(test_rows)),
            "conversion_rate": float(y.mean()),
            "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
            "mean_probability": float(p.mean()),
        }
        result.steps.append(entry)
        log.info(
            "backtest step %d/%d: %d leads, ROC AUC %.4f",
            i + 1,
            steps,
            entry["scored_leads"],
            entry["roc_auc"],
        )
    y_cat, p_cat = np.concatenate(y_all), np.concatenate(p_all)
    result.overall = classification_metrics(y_cat, p_cat)
    aucs = [s["roc_auc"] for s in result.steps if s["roc_auc"] == s["roc_auc"]]
    result.overall["mean_step_roc_auc"] = float(np.mean(aucs)) if aucs else float("nan")
    result.overall["steps"] = float(len(result.steps))
    return result


def run_backtest(
    spec: DatasetSpec,
    settings: Settings,
    steps: int,
    *,
    data_path: Path | None = None,
    params: dict[str, Any] | None = None,
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
    result = backtest(leads, spec, steps, params=params)
    result.dropped = dropped
    return result
