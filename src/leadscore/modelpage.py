"""What the model page shows, gathered from a version's bundle, its registry history and the last
monitoring report: plain numbers and sentences, no web framework (serve/pages renders them).

A version trained before `bundle.json` carried its evaluation (`meta["evaluation"]`) still
shows what its `metrics` hold (expected vs actual, ROC AUC, the baselines' headline numbers);
calibration bins and tier rates then read "not recorded for this version".
"""

from __future__ import annotations

import json
import logging
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from leadscore.labels import TIERS, prettify
from leadscore.report import forecast_verdict
from leadscore.scoring import ModelBundle

log = logging.getLogger(__name__)

NOT_RECORDED = "not recorded for this version"
# what each baseline is, for people (keys as in baselines.BASELINES)
BASELINE_WORDS = {
    "scorecard": "Points scorecard (points per field value, as kept in a spreadsheet)",
    "logistic": "Logistic regression",
    "hist_gb": "scikit-learn gradient boosting",
}
METRIC_KEYS = ("roc_auc", "pr_auc", "brier", "ece", "lift_top10")
MONITOR_FILE = "monitor.json"
RECENT_COHORTS = 8
_MARKUP = re.compile(r"\*\*|`")


@dataclass
class ModelPage:
    """Everything `/models/{name}` shows; every list may be empty and every optional None, with
    `missing` naming what this version never recorded."""

    name: str
    version: str
    dataset: str | None
    trained_at: str | None
    tiers: list[dict[str, Any]]  # tier, word, cutoff (probability), score_from, score_to
    forecast: list[str]  # the model card's verdict, as plain sentences
    forecast_ok: bool | None  # can the probabilities be summed as a forecast?
    expected_vs_actual: dict[str, Any] | None  # the test slice
    tier_rates: list[dict[str, Any]]  # test slice: tier, word, leads, conversion_rate
    calibration: list[dict[str, Any]]  # test bins: bin_low, bin_high, leads, predicted, observed
    importance: list[dict[str, Any]]  # field, label, share
    comparison: list[dict[str, Any]]  # name, label, roc_auc, pr_auc, brier, ece, lift_top10
    versions: list[dict[str, Any]]  # version, aliases, created, reason, roc_auc, ece
    cohorts: list[dict[str, Any]]  # the last monitoring report's recent cohorts
    monitor_note: str  # where the cohorts came from, or how to get some
    missing: list[str] = field(default_factory=list)
    versions_note: str = ""  # why there is no version history, when there is none
    calibration_method: str | None = None  # "none": the model's own probabilities (under drift)

    def as_dict(self) -> dict[str, Any]:
        return dict(vars(self))


def gather(bundle: ModelBundle, *, versions: Sequence[Mapping[str, Any]] = (),
           monitor_report: Mapping[str, Any] | None = None, versions_note: str = ""
           ) -> ModelPage:
    """The model page of `bundle`, with its registry history and monitoring report (each
    passed in, so this stays free of MLflow and of files: see `versions_of`, `read_monitor`)."""
    meta = bundle.meta
    evaluation = meta.get("evaluation") or {}
    metrics = meta.get("metrics") or {}
    missing: list[str] = []
    report = _verdict_input(evaluation, metrics, meta)
    forecast: list[str] = []
    forecast_ok: bool | None = None
    if report is not None:
        forecast = [_MARKUP.sub("", line) for line in forecast_verdict(report)]
        forecast_ok = any("can be used as a forecast" in line for line in forecast)
    else:
        missing.append("expected vs actual conversions")
    calibration = [dict(row) for row in evaluation.get("reliability") or []]
    if not calibration:
        missing.append("calibration bins")
    words = bundle.tier_words_
    tier_rates = [{**row, "word": words.get(row["tier"], row["tier"])}
                  for row in (evaluation.get("tiers") or {}).get("test") or []]
    if not tier_rates:
        missing.append("conversion rate per tier")
    comparison = _comparison(evaluation, metrics)
    if len(comparison) < 2:
        missing.append("baseline comparison")
    return ModelPage(
        name=bundle.name,
        version=bundle.version,
        dataset=meta.get("dataset"),
        trained_at=meta.get("trained_at"),
        tiers=tier_bands(bundle),
        forecast=forecast,
        forecast_ok=forecast_ok,
        expected_vs_actual=(report or {}).get("expected_vs_actual"),
        tier_rates=tier_rates,
        calibration=calibration,
        importance=importance(bundle),
        comparison=comparison,
        versions=[_version(v) for v in versions],
        cohorts=recent_cohorts(monitor_report, words),
        monitor_note=_monitor_note(bundle.name, monitor_report),
        missing=missing,
        versions_note=versions_note,
        calibration_method=(bundle.calibrator.state_ or {}).get("method"),
    )


def tier_bands(bundle: ModelBundle) -> list[dict[str, Any]]:
    """Each tier's word and where it starts: tier A from its cutoff up, D below C's cutoff. The
    score bands are the same cutoffs on the 0-100 scale (score = probability x 100, rounded)."""
    cutoffs = bundle.meta.get("tiers") or {}
    out: list[dict[str, Any]] = []
    upper: float | None = 1.0
    for tier in TIERS:
        low = cutoffs.get(tier)
        low_value = float(low) if low is not None else 0.0
        out.append({
            "tier": tier,
            "word": bundle.tier_words_.get(tier, tier),
            "cutoff": low_value if tier != TIERS[-1] else 0.0,
            "upper": upper,
            "score_from": round(low_value * 100) if tier != TIERS[-1] else 0,
            "score_to": round((upper or 0.0) * 100),
        })
        upper = low_value
    return out


def importance(bundle: ModelBundle, top: int = 12) -> list[dict[str, Any]]:
    """Total split gain per business field with its label, the same figures as the model
    card's table (`report.field_importance`), read from the bundle's own trees, so every
    version has them. Fields the logistic start carries alone do not appear (no tree splits)."""
    gains = np.asarray(bundle.booster.feature_importance(importance_type="gain"), dtype=float)
    total: dict[str, float] = {}
    for feature, gain in zip(bundle.builder.features_, gains, strict=False):
        total[feature.source] = total.get(feature.source, 0.0) + float(gain)
    overall = sum(total.values()) or 1.0
    labels = dict(zip(bundle.sources, (w.label for w in bundle.words_), strict=True))
    ranked = sorted(total.items(), key=lambda kv: -kv[1])[:top]
    return [{"field": name, "label": labels.get(name, prettify(name)), "share": gain / overall}
            for name, gain in ranked if gain > 0]


def _verdict_input(evaluation: Mapping[str, Any], metrics: Mapping[str, Any],
                   meta: Mapping[str, Any]) -> dict[str, Any] | None:
    """What `report.forecast_verdict` reads: the stored evaluation, else the same figures
    rebuilt from `metrics` (every version since the first has those)."""
    if evaluation.get("expected_vs_actual") and evaluation.get("test"):
        return {"expected_vs_actual": dict(evaluation["expected_vs_actual"]),
                "split": dict(evaluation.get("split") or {}),
                "test": dict(evaluation["test"]),
                "model": dict(evaluation.get("model") or {})}
    expected = _number(metrics.get("test_expected_conversions"))
    actual = _number(metrics.get("test_actual_conversions"))
    rows = _number(metrics.get("test_rows"))
    if expected is None or actual is None or rows is None:
        return None
    method = (meta.get("calibration") or {}).get("method")
    return {
        "expected_vs_actual": {"expected_conversions": expected, "actual_conversions": actual,
                               "test_leads": int(rows), "valid_rate": None,
                               "test_rate": actual / rows if rows else None},
        "split": {"rows_test": int(rows)},
        "test": {"ece": _number(metrics.get("test_ece")) or float("nan")},
        "model": {"calibration": method},
    }


def _comparison(evaluation: Mapping[str, Any], metrics: Mapping[str, Any]
                ) -> list[dict[str, Any]]:
    """The model and each baseline on the same test slice (the stored evaluation, else the
    `test_*` and `baseline_<name>_*` metrics)."""
    ours = evaluation.get("test") or {k: metrics.get(f"test_{k}") for k in METRIC_KEYS}
    rows = [{"name": "lightgbm", "label": "This model (LightGBM)",
             **{k: _number(ours.get(k)) for k in METRIC_KEYS}}]
    stored = evaluation.get("baselines")
    if not stored:
        stored = {}
        for key in metrics:
            found = re.fullmatch(r"baseline_(.+)_(roc_auc|pr_auc|brier|ece|lift_top10)", key)
            if found:
                stored.setdefault(found.group(1), {})[found.group(2)] = metrics[key]
    for name, values in stored.items():
        rows.append({"name": name, "label": BASELINE_WORDS.get(name, prettify(name)),
                     **{k: _number(values.get(k)) for k in METRIC_KEYS}})
    return rows


def _version(row: Mapping[str, Any]) -> dict[str, Any]:
    metrics = row.get("metrics") or {}
    return {
        "version": str(row.get("version", "")),
        "aliases": list(row.get("aliases") or []),
        "created": row.get("trained_at") or row.get("created"),
        "promotion": row.get("promotion") or "",
        "reason": row.get("reason") or "",
        "roc_auc": _number(metrics.get("test_roc_auc")),
        "ece": _number(metrics.get("test_ece")),
    }


def recent_cohorts(report: Mapping[str, Any] | None, words: Mapping[str, str] | None = None,
                   last: int = RECENT_COHORTS) -> list[dict[str, Any]]:
    """The newest `last` cohorts of a monitoring report (`monitor.monitor`), each with its tier
    rates as a list in tier order."""
    if not report:
        return []
    rows = list(report.get("cohorts") or [])[-last:]
    out = []
    for row in rows:
        tiers = row.get("tiers") or {}
        out.append({
            **{k: row.get(k) for k in ("cohort", "model_version", "scored", "matured",
                                       "pending", "expected", "actual", "gap", "roc_auc",
                                       "ece")},
            "tiers": [{"tier": t, "word": (words or {}).get(t, t),
                       "leads": (tiers.get(t) or {}).get("leads", 0),
                       "conversion_rate": (tiers.get(t) or {}).get("conversion_rate")}
                      for t in TIERS],
        })
    return out


def _monitor_note(name: str, report: Mapping[str, Any] | None) -> str:
    if not report:
        return (f"No outcomes joined back yet: run `leadscore monitor {name} --outcomes FILE` "
                "to compare expected with actual conversions per cohort of scored leads.")
    return (f"Outcomes joined back as of {report.get('as_of', 'an unknown date')} "
            f"({report.get('period', 'week')}ly cohorts, a {report.get('horizon_days', '?')}-day "
            "horizon).")


def monitor_path(reports_dir: Path, name: str) -> Path:
    """Where `leadscore monitor NAME` writes its report by default (see cli_memory.py)."""
    return reports_dir / "monitoring" / name / MONITOR_FILE


def read_monitor(reports_dir: Path, name: str) -> dict[str, Any] | None:
    """The last monitoring report saved for `name`, or None (none yet, or unreadable: the page
    then says how to make one rather than fail)."""
    path = monitor_path(reports_dir, name)
    try:
        report = json.loads(path.read_text(encoding="utf-8"))
    except FileNotFoundError:
        return None
    except (OSError, ValueError) as exc:
        log.warning("%s: monitoring report not readable (%s)", path, type(exc).__name__)
        return None
    if not isinstance(report, dict) or not isinstance(report.get("cohorts"), list):
        log.warning("%s: not a monitoring report (no cohorts list)", path)
        return None
    return report


def _number(value: Any) -> float | None:
    if value is None or isinstance(value, bool):
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        return None
    return number if math.isfinite(number) else None


def registry_versions(name: str, settings: Any) -> tuple[list[dict[str, Any]], str]:
    """Every registered version of `name` (newest first) with its promotion reason, and a note
    when there are none to show (not registered: served from a bundle folder; or the registry
    cannot be read). MLflow is imported only here, through `tracking`."""
    from leadscore import tracking

    try:
        found = tracking.list_versions(name, settings)
    except Exception as exc:  # an unreachable registry costs the history, not the page
        log.warning("registry versions of %s not readable (%s)", name, type(exc).__name__)
        return [], f"The registry cannot be read ({type(exc).__name__}): no version history."
    if not found:
        return [], f"{name} is not in the registry (served from a bundle folder)."
    return found, ""
