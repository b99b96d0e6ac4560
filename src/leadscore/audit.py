"""Leak audit: find the columns that give the outcome away before they flatter a model.

A CRM export mixes what was known when a lead arrived with what the sales team wrote after
talking to it (a "Tags: will revert after reading the email" column, a close date). Nobody tells
the audit which is which: it flags a column that on its own separates the outcome too well,
one filled in far more often for one outcome than for the other (by the horizon label, and by
whether the lead ever converted: a column filled almost only for eventual customers is written
after the sale even when the sale came too late to count), and a timestamp that falls after the
lead's scoring moment or its conversion. Candidate text columns holding e-mail addresses or
phone numbers are flagged too (personal data, see `privacy`). Flagged columns are dropped unless
the spec keeps them; the report says why, with counts and never a value, and is logged with the
run.
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
from leadscore.privacy import scan_column

log = logging.getLogger(__name__)

# A sparse post-outcome column (an invoice number, a contract date typed in after the sale): filled
# for at least this many leads that eventually converted, for at most this share of the leads that
# never did, and at least this many times as often for the first as for the second.
POST_OUTCOME_MIN_FILLED = 10
POST_OUTCOME_MAX_NEVER_FILL = 0.01
POST_OUTCOME_RATIO = 10.0
# A column's lone AUC is read from a seeded sample of at most this many leads (its standard error
# there is below 0.002, far inside the flagging margin); fill rates still count every lead, so a
# rare post-outcome column is not missed. All 47 columns of a 1M-lead table took 14 s.
AUC_MAX_ROWS = 200_000


@dataclass
class LeakReport:
    flagged: dict[str, list[str]] = field(default_factory=dict)  # column → reasons
    kept: list[str] = field(default_factory=list)  # flagged but kept by the spec
    checked: dict[str, dict[str, float]] = field(default_factory=dict)
    # column → counts of sampled values that looked like contact details (never the values)
    personal_data: dict[str, dict[str, int]] = field(default_factory=dict)

    @property
    def dropped(self) -> list[str]:
        return [c for c in self.flagged if c not in self.kept]

    def as_dict(self) -> dict[str, Any]:
        return {
            "dropped": self.dropped,
            "flagged": self.flagged,
            "kept_by_spec": self.kept,
            "checked": self.checked,
            "personal_data": self.personal_data,
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
    """Fill rates of the positive (1 or True) and the negative rows."""
    positive = y == 1
    return float(filled[positive].mean()), float(filled[~positive].mean())


def _timestamp_share_after(values: pd.Series, reference: np.ndarray) -> float | None:
    """Share of filled values that are dates later than `reference`; None if not date-like."""
    text = values.dropna()
    if len(text) > 20_000:  # whether a column holds dates: a sample answers that
        text = text.sample(20_000, random_state=0)
    text = text.astype(str)
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


def flag_personal_data(table: pd.DataFrame, spec: DatasetSpec, report: LeakReport) -> list[str]:
    """Scan every candidate text (categorical) column for e-mail addresses and phone numbers.

    A column is flagged when at least `privacy.FLAG_SHARE` of a seeded sample of up to
    `privacy.SAMPLE_SIZE` non-empty values look like one: it is dropped from the features unless
    `leak_audit.keep` names it. Runs whether or not the leak audit is enabled: switching off the
    statistics must not switch off the privacy check. Returns the flagged columns.
    """
    keep = set(spec.leak_audit.keep)
    where = str(spec.source) if spec.source is not None else "the spec"
    flagged: list[str] = []
    for column in builder_for(spec, table).categorical:
        if column not in table:
            continue
        finding = scan_column(column, table[column], spec.leads.missing_values, spec.train.seed)
        if not finding.flagged:
            continue
        flagged.append(column)
        report.personal_data[column] = finding.as_dict()
        report.flagged[column] = [finding.describe()]
        if column in keep:
            report.kept.append(column)
            log.warning(
                "personal data: column %r kept (named in leak_audit.keep): %s; values that look "
                "like an e-mail address or a phone number are never stored as category levels",
                column,
                finding.describe().removeprefix("personal data: "),
            )
        else:
            how = (
                f"declare it under pii: (not features) in {where}"
                if column in spec.features.categorical
                else f"remove it from its dimension's columns in {where}"
            )
            log.warning(
                "personal data: column %r dropped from the features: %s; %s, or list it in "
                "leak_audit.keep to keep it",
                column,
                finding.describe().removeprefix("personal data: "),
                how,
            )
    return flagged


def audit_leaks(table: pd.DataFrame, spec: DatasetSpec, rows: np.ndarray) -> LeakReport:
    """Audit every candidate feature on the given (training) rows of the table.

    The personal-data scan (`flag_personal_data`) reads the whole table and always runs; the
    leak statistics only when `leak_audit.enabled`.
    """
    settings = spec.leak_audit
    report = LeakReport()
    personal = flag_personal_data(table, spec, report)
    if not settings.enabled:
        return report
    refused = [c for c in personal if c not in report.kept]
    if refused:  # already dropped; a kept one is still audited like any feature
        spec = spec.model_copy(update={"drop": [*spec.drop, *refused]})
    part = table.iloc[rows]
    part = part[part[LABEL].notna()]
    y = part[LABEL].to_numpy()
    if len(part) == 0 or len(np.unique(y)) < 2:
        return report
    eventual = _eventually_converted(part, y)
    late = bool((eventual & (y == 0)).any())  # some converted after the horizon
    builder = builder_for(spec, table).fit(part)
    matrix = builder.transform(part)
    reference = None
    if "_as_of" in part:
        reference = part["_as_of"].to_numpy(dtype="datetime64[ns]")
    converted_at = (
        part["_converted_at"].to_numpy(dtype="datetime64[ns]") if "_converted_at" in part else None
    )
    leaks: dict[str, list[str]] = {}
    sample = np.arange(len(y))
    if len(y) > AUC_MAX_ROWS:
        rng = np.random.default_rng(spec.train.seed)
        sample = np.sort(rng.choice(len(y), AUC_MAX_ROWS, replace=False))

    for j, feature in enumerate(builder.features_):
        column = _audit_name(feature)
        values = matrix[:, j]
        auc = single_feature_auc(
            values[sample], y[sample], feature.kind == "categorical", spec.train.seed
        )
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
        by_fill = high - low >= settings.min_fill_gap and high >= settings.fill_ratio * max(
            low, 1e-9
        )
        if by_fill:
            who = "converted" if fill_pos > fill_neg else "not-converted"
            reasons.append(f"filled in for {high:.0%} of {who} leads but {low:.0%} of the others")
        if late:
            fill_ever, fill_never = _fill_rates(filled, eventual)
            stats["fill_eventually_converted"] = round(fill_ever, 4)
            stats["fill_never_converted"] = round(fill_never, 4)
            gap = fill_ever - fill_never
            if (
                not by_fill
                and gap >= settings.min_fill_gap
                and fill_ever >= settings.fill_ratio * fill_never
            ):
                by_fill = True
                reasons.append(
                    f"filled in for {fill_ever:.0%} of leads that eventually converted (some "
                    f"after the horizon) but {fill_never:.0%} of the others: post-outcome data"
                )
        sparse = None if by_fill else _sparse_post_outcome(filled, eventual)
        if sparse:
            reasons.append(sparse)
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
            leaks[column] = reasons
            report.flagged.setdefault(column, []).extend(reasons)
            kept = column in settings.keep or feature.name in settings.keep
            if kept and column not in report.kept:
                report.kept.append(column)
    for column, reasons in leaks.items():  # personal data was warned about with its own advice
        verdict = "kept (named in leak_audit.keep)" if column in report.kept else "dropped"
        log.warning("leak audit: %r %s: %s", column, verdict, "; ".join(reasons))
    return report


def _eventually_converted(part: pd.DataFrame, y: np.ndarray) -> np.ndarray:
    """Leads that converted at any time: labelled 1, or converted after the outcome horizon
    (labelled 0, but a column written after their sale still gives the sale away)."""
    eventual = y == 1
    if "_converted_at" in part:
        eventual = eventual | ~np.isnat(part["_converted_at"].to_numpy(dtype="datetime64[ns]"))
    return eventual


def _sparse_post_outcome(filled: np.ndarray, eventual: np.ndarray) -> str | None:
    """The reason when a column is filled almost only for leads that eventually converted (see
    the POST_OUTCOME_* thresholds), else None. Too rare to move a fill rate by much, so the
    rule counts leads instead."""
    n_ever, n_never = int(eventual.sum()), int((~eventual).sum())
    filled_ever = int(filled[eventual].sum())
    filled_never = int(filled[~eventual].sum())
    if n_ever == 0 or n_never == 0 or filled_ever < POST_OUTCOME_MIN_FILLED:
        return None
    fill_ever, fill_never = filled_ever / n_ever, filled_never / n_never
    if fill_never > POST_OUTCOME_MAX_NEVER_FILL or fill_ever < POST_OUTCOME_RATIO * fill_never:
        return None
    return (
        f"filled for {filled_ever} of {n_ever} leads that eventually converted and "
        f"{filled_never} of {n_never} others: post-outcome data"
    )


def _audit_name(feature: Feature) -> str:
    """Plain columns are reported by name; derived ones by their feature name."""
    return feature.name
