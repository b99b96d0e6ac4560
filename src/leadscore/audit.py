"""Leak audit: find the columns that give the outcome away before they flatter a model.

A CRM export mixes what was known when a lead arrived with what the sales team wrote after
talking to it (a "Tags: will revert after reading the email" column, a close date). Nobody tells
the audit which is which: it flags a column that on its own separates the outcome too well,
one filled in far more often for one outcome than for the other, and a timestamp that falls after
the lead's scoring moment or its conversion. Flagged columns are dropped unless the spec keeps
them; the report says why, and is logged with the run.
"""

from __future__ import annotations

import logging
from dataclasses import dataclass, field
from typing import Any

import numpy as np
import pandas as pd
from sklearn.metrics import roc_auc_score

from leadscore.config import DatasetSpec
from leadscore.data import LABEL
from leadscore.features import Feature, builder_for

log = logging.getLogger(__name__)


@dataclass
class LeakReport:
    flagged: dict[str, list[str]] = field(default_factory=dict)  # column → reasons
    kept: list[str] = field(default_factory=list)  # flagged but kept by the spec
    checked: dict[str, dict[str, float]] = field(default_factory=dict)

    @property
    def dropped(self) -> list[str]:
        return [c for c in self.flagged if c not in self.kept]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dropped": self.dropped,
            "flagged": self.flagged,
            "kept_by_spec": self.kept,
            "checked": self.checked,
        }


def single_feature_auc(
    values: np.ndarray, y: np.ndarray, categorical: bool, seed: int = 0
) -> float:
    """How well one column alone ranks converters first (0.5 = not at all, 1 = perfectly).

    Categories are replaced by their conversion rate, learned on the other half of the rows,
    so a high-cardinality column cannot look predictive by memorising itself.
    """
    if categorical:
        keys = np.where(np.isnan(values), -1.0, values)
        rng = np.random.default_rng(seed)
        fold = rng.integers(0, 2, len(y))
        encoded = np.empty(len(y))
        prior = y.mean()
        for f in (0, 1):
            fit = fold != f
            rates = pd.Series(y[fit]).groupby(keys[fit]).agg(["sum", "count"])
            smoothed = (rates["sum"] + 10 * prior) / (rates["count"] + 10)
            encoded[~fit] = pd.Series(keys[~fit]).map(smoothed).fillna(prior).to_numpy()
        score = encoded
    else:
        lowest = np.nanmin(values) if np.isfinite(values).any() else 0.0
        score = np.where(np.isnan(values), lowest - 1.0, values)
    if len(np.unique(y)) < 2:
        return 0.5
    auc = float(roc_auc_score(y, score))
    return max(auc, 1.0 - auc)


def _fill_rates(filled: np.ndarray, y: np.ndarray) -> tuple[float, float]:
    return float(filled[y == 1].mean()), float(filled[y == 0].mean())


def _timestamp_share_after(values: pd.Series, reference: np.ndarray) -> float | None:
    """Share of filled values that are dates later than `reference`; None if not date-like."""
    text = values.dropna().astype(str)
    if (
        text.empty
        or not text.str.contains(r"\d{4}-\d{2}-\d{2}|\d{1,2}/\d{1,2}/\d{2,4}").mean() > 0.9
    ):
        return None
    stamps = pd.to_datetime(values.astype("string"), errors="coerce", format="mixed")
    ok = stamps.notna().to_numpy() & ~np.isnat(reference)
    if ok.sum() == 0:
        return None
    later = stamps.to_numpy(dtype="datetime64[ns]")[ok] > reference[ok]
    return float(later.mean())


def audit_leaks(table: pd.DataFrame, spec: DatasetSpec, rows: np.ndarray) -> LeakReport:
    """Audit every candidate feature on the given (training) rows of the table."""
    settings = spec.leak_audit
    report = LeakReport()
    part = table.iloc[rows]
    part = part[part[LABEL].notna()]
    y = part[LABEL].to_numpy()
    if len(part) == 0 or len(np.unique(y)) < 2:
        return report
    builder = builder_for(spec, table).fit(part)
    matrix = builder.transform(part)
    reference = None
    if "_as_of" in part:
        reference = part["_as_of"].to_numpy(dtype="datetime64[ns]")
    converted_at = (
        part["_converted_at"].to_numpy(dtype="datetime64[ns]") if "_converted_at" in part else None
    )

    for j, feature in enumerate(builder.features_):
        column = _audit_name(feature)
        values = matrix[:, j]
        auc = single_feature_auc(values, y, feature.kind == "categorical", spec.train.seed)
        if not feature.derive and feature.source in part:
            filled = part[feature.source].notna().to_numpy()
        else:
            filled = ~np.isnan(values)
        fill_pos, fill_neg = _fill_rates(filled, y)
        stats = {
            "auc": round(auc, 4),
            "fill_converted": round(fill_pos, 4),
            "fill_not_converted": round(fill_neg, 4),
        }
        reasons: list[str] = []
        if auc > settings.auc_threshold:
            reasons.append(
                f"separates the outcome on its own (AUC {auc:.3f} > {settings.auc_threshold})"
            )
        high, low = max(fill_pos, fill_neg), min(fill_pos, fill_neg)
        if high - low >= settings.min_fill_gap and high >= settings.fill_ratio * max(low, 1e-9):
            who = "converted" if fill_pos > fill_neg else "not-converted"
            reasons.append(f"filled in for {high:.0%} of {who} leads but {low:.0%} of the others")
        if not feature.derive and feature.source in part and feature.kind == "categorical":
            if reference is not None:
                share = _timestamp_share_after(part[feature.source], reference)
                if share is not None:
                    stats["after_as_of"] = round(share, 4)
                    if share >= 0.5:
                        reasons.append(
                            f"a timestamp after the lead's scoring moment in {share:.0%}"
                        )
            if converted_at is not None:
                share = _timestamp_share_after(part[feature.source], converted_at)
                if share is not None and share >= 0.5:
                    reasons.append(f"a timestamp after the conversion in {share:.0%}")
        report.checked[column] = stats
        if reasons:
            report.flagged[column] = reasons
            if column in settings.keep or feature.name in settings.keep:
                report.kept.append(column)
    for column, reasons in report.flagged.items():
        verdict = "kept (named in leak_audit.keep)" if column in report.kept else "dropped"
        log.warning("leak audit: %r %s: %s", column, verdict, "; ".join(reasons))
    return report


def _audit_name(feature: Feature) -> str:
    """Plain columns are reported by name; derived ones by their feature name."""
    return feature.name
