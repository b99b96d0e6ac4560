"""Metrics a data team and sales ops read: ranking (ROC/PR AUC), probability quality (log loss,
Brier, calibration error) and the expected-vs-actual conversions a forecast relies on."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

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


# --------------------------------------------------------------------------- drift profile

# inner edges of the fixed probability bins the score's distribution is kept in (finer at the
# low end, where most leads of a 10-30% base rate sit)
SCORE_EDGES = (0.02, 0.05, 0.1, 0.15, 0.2, 0.3, 0.4, 0.5, 0.6, 0.8)
PSI_WARNING = 0.2
_PSI_FLOOR = 1e-4


def feature_profile(
    features: Sequence[Any], matrix: np.ndarray, probability: np.ndarray
) -> dict[str, Any]:
    """The training data's distributions, for drift checks later, without storing any row.

    Numeric features: decile bin edges and the share of rows in each bin; categorical features:
    the share of each level; both with a last bin for missing. The score: shares over fixed
    probability bins. `features` are the encoder's `features_` (name, kind, levels), in the
    order of the matrix's columns.
    """
    out: dict[str, Any] = {}
    for j, feature in enumerate(features):
        column = matrix[:, j]
        present = column[~np.isnan(column)]
        entry: dict[str, Any] = {"kind": feature.kind}
        if feature.kind == "numeric":
            deciles = np.quantile(present, np.linspace(0.1, 0.9, 9)) if len(present) else []
            entry["edges"] = [float(e) for e in np.unique(deciles)]
        else:
            entry["levels"] = len(feature.levels)
        counts = bin_counts(entry, column)
        entry["proportions"] = [float(c) for c in counts / max(counts.sum(), 1)]
        out[feature.name] = entry
    score = {"edges": list(SCORE_EDGES)}
    counts = bin_counts(score, probability)
    score["proportions"] = [float(c) for c in counts / max(counts.sum(), 1)]
    return {"rows": int(len(matrix)), "features": out, "score": score}


# The drift reference is bin edges and proportions: a seeded random sample of this many leads
# pins each proportion to within about 0.001 (PSI noise far below the 0.1 warning), while
# encoding and scoring every lead of a 1M-lead table for it took 27 s.
PROFILE_MAX_ROWS = 200_000


def profile_training(trained: Any, leads: Any, seed: int = 0) -> dict[str, Any]:
    """`feature_profile` of the leads a model was trained on (a `TrainedModel` and its rows),
    from a sample of at most PROFILE_MAX_ROWS of them."""
    total = len(leads)
    if total > PROFILE_MAX_ROWS:
        rows = np.random.default_rng(seed).choice(total, PROFILE_MAX_ROWS, replace=False)
        leads = leads.iloc[np.sort(rows)]
    matrix = trained.builder.transform(leads)
    probability = trained.calibrator.transform(trained.margin(matrix))  # trees + linear start
    profile = feature_profile(trained.builder.features_, matrix, probability)
    if total > len(matrix):
        profile["rows"], profile["profiled_rows"] = total, len(matrix)
    return profile


def bin_counts(entry: Mapping[str, Any], values: np.ndarray) -> np.ndarray:
    """Counts of `values` in a profile entry's bins (the last bin counts missing values)."""
    values = np.asarray(values, dtype=float)
    missing = np.isnan(values)
    present = values[~missing]
    if "levels" in entry:
        n_bins = int(entry["levels"])
        codes = present.astype(np.int64)
        counts = np.bincount(codes[(codes >= 0) & (codes < n_bins)], minlength=n_bins)
    else:
        edges = np.asarray(entry["edges"], dtype=float)
        which = np.searchsorted(edges, present, side="right")
        counts = np.bincount(which, minlength=len(edges) + 1)
    return np.append(counts, missing.sum()).astype(np.int64)


def population_stability(expected: Sequence[float], actual: np.ndarray) -> float:
    """PSI between a profile's proportions and observed counts in the same bins (0: same
    distribution; above 0.2 the population has shifted enough to distrust the model)."""
    e = np.maximum(np.asarray(expected, dtype=float), _PSI_FLOOR)
    total = float(np.sum(actual))
    if total <= 0 or len(e) != len(actual):
        return float("nan")
    a = np.maximum(np.asarray(actual, dtype=float) / total, _PSI_FLOOR)
    return float(np.sum((a - e) * np.log(a / e)))


# --------------------------------------------------------------------------- report tables


def reliability_table(
    y: np.ndarray, probability: np.ndarray, bins: int = 10
) -> list[dict[str, float]]:
    """Per equal-width probability bin: leads, mean predicted and observed conversion rate."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(probability, dtype=float)
    edges = np.linspace(0.0, 1.0, bins + 1)
    which = np.clip(np.digitize(p, edges[1:-1]), 0, bins - 1)
    rows = []
    for b in range(bins):
        mask = which == b
        rows.append(
            {
                "bin_low": float(edges[b]),
                "bin_high": float(edges[b + 1]),
                "leads": int(mask.sum()),
                "predicted": float(p[mask].mean()) if mask.any() else float("nan"),
                "observed": float(y[mask].mean()) if mask.any() else float("nan"),
            }
        )
    return rows


def decile_table(y: np.ndarray, probability: np.ndarray) -> list[dict[str, float]]:
    """Leads sorted by probability, cut into ten equal groups (decile 1 = the best 10%): each
    group's conversion rate, lift over the overall rate, and the cumulative share of all
    conversions captured down to it (the gains curve)."""
    y = np.asarray(y, dtype=float)
    order = np.argsort(-np.asarray(probability, dtype=float), kind="stable")
    groups = np.array_split(order, 10)
    base = y.mean() if len(y) else float("nan")
    total = y.sum()
    rows, captured, seen = [], 0.0, 0
    for d, group in enumerate(groups, start=1):
        conversions = float(y[group].sum())
        captured += conversions
        seen += len(group)
        rate = conversions / len(group) if len(group) else float("nan")
        rows.append(
            {
                "decile": d,
                "leads": int(len(group)),
                "conversions": conversions,
                "conversion_rate": rate,
                "lift": rate / base if base > 0 else float("nan"),
                "cumulative_leads": seen / max(len(y), 1),
                "cumulative_gain": captured / total if total > 0 else float("nan"),
            }
        )
    return rows


def f1_optimal_threshold(y: np.ndarray, probability: np.ndarray) -> dict[str, float]:
    """The probability threshold that maximises F1 (with its precision and recall)."""
    from sklearn.metrics import precision_recall_curve

    y = np.asarray(y, dtype=float)
    if not 0 < y.sum() < len(y):
        return {
            "threshold": float("nan"),
            "f1": float("nan"),
            "precision": float("nan"),
            "recall": float("nan"),
        }
    precision, recall, thresholds = precision_recall_curve(y, probability)
    precision, recall = precision[:-1], recall[:-1]
    f1 = np.where(
        precision + recall > 0, 2 * precision * recall / np.maximum(precision + recall, 1e-12), 0.0
    )
    best = int(np.argmax(f1))
    return {
        "threshold": float(thresholds[best]),
        "f1": float(f1[best]),
        "precision": float(precision[best]),
        "recall": float(recall[best]),
    }


def tier_table(
    y: np.ndarray, probability: np.ndarray, cutoffs: Mapping[str, float]
) -> list[dict[str, Any]]:
    """Leads and conversion rate per tier (A is at or above cutoffs["A"], D below "C")."""
    y = np.asarray(y, dtype=float)
    p = np.asarray(probability, dtype=float)
    names = ["A", "B", "C"]
    edges = np.array([cutoffs.get(t, -np.inf) for t in names])
    index = (p[:, None] < edges[None, :]).sum(axis=1)
    rows = []
    for i, tier in enumerate([*names, "D"]):
        mask = index == i
        rows.append(
            {
                "tier": tier,
                "leads": int(mask.sum()),
                "share": float(mask.mean()) if len(p) else float("nan"),
                "conversions": float(y[mask].sum()),
                "conversion_rate": float(y[mask].mean()) if mask.any() else float("nan"),
            }
        )
    return rows


def tiers_descend(rows: Sequence[Mapping[str, Any]]) -> bool:
    """True when the conversion rate falls from A to D over the non-empty tiers."""
    rates = [r["conversion_rate"] for r in rows if r["leads"] > 0]
    return all(a >= b for a, b in zip(rates, rates[1:], strict=False))
