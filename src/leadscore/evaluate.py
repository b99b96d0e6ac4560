"""Metrics a data team and sales ops read: ranking (ROC/PR AUC), probability quality (log loss,
Brier, calibration error) and the expected-vs-actual conversions a forecast relies on."""

from __future__ import annotations

import numpy as np
from sklearn.metrics import average_precision_score, brier_score_loss, log_loss, roc_auc_score


def expected_calibration_error(y: np.ndarray, probability: np.ndarray, bins: int = 10) -> float:
    """Mean |predicted − observed| over equal-width probability bins, weighted by bin size."""
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(probability, edges[1:-1]), 0, bins - 1)
    total = 0.0
    for b in range(bins):
        mask = which == b
        if mask.any():
            total += mask.sum() * abs(probability[mask].mean() - y[mask].mean())
    return float(total / max(len(y), 1))


def lift_at(y: np.ndarray, probability: np.ndarray, share: float = 0.1) -> float:
    """Conversion rate in the top `share` of leads by probability, over the overall rate."""
    n_top = max(1, int(round(len(y) * share)))
    top = np.argsort(-probability, kind="stable")[:n_top]
    base = y.mean()
    return float(y[top].mean() / base) if base > 0 else float("nan")


def classification_metrics(y: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """The headline numbers for one slice; NaN where a slice holds a single class."""
    y = np.asarray(y, dtype=float)
    p = np.clip(np.asarray(probability, dtype=float), 1e-7, 1 - 1e-7)
    both = 0 < y.sum() < len(y)
    return {
        "roc_auc": float(roc_auc_score(y, p)) if both else float("nan"),
        "pr_auc": float(average_precision_score(y, p)) if both else float("nan"),
        "log_loss": float(log_loss(y, p, labels=[0, 1])),
        "brier": float(brier_score_loss(y, p)),
        "ece": expected_calibration_error(y, p),
        "lift_top10": lift_at(y, p, 0.1),
        "expected_conversions": float(p.sum()),
        "actual_conversions": float(y.sum()),
        "rows": float(len(y)),
        "base_rate": float(y.mean()) if len(y) else float("nan"),
    }
