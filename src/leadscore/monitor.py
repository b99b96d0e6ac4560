"""Outcomes joined back to the scores served before them: per scoring cohort and model version,
expected vs actual conversions, realized ROC/PR AUC, calibration error, tier conversion and
input drift; and the alarms a scheduler acts on (the CLI exits 3 when there is one).

The join, stated once: a scoring (lead, scored_at, probability) counts as converted when the
lead's conversion happened after scored_at and at most `horizon_days` later. A scoring given
after its lead had converted is no forecast and is left out. A scoring is *matured* once
scored_at + horizon is at or before `as_of`; younger ones are *pending* and never counted as
lost. Within one cohort (week or month of scored_at) and version, a lead counts once, at its
first scoring there, so daily rescoring does not weigh a lead seven times a week.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Callable
from dataclasses import dataclass
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import numpy as np
import pandas as pd
import pyarrow as pa

from leadscore.config import (  # noqa: F401  (ALARM_EXIT: re-exported)
    ALARM_EXIT,
    DEFAULT_HORIZON_DAYS,
    MAX_AUC_DROP,
    MAX_CALIBRATION_GAP,
    MIN_COHORT,
    DatasetSpec,
)
from leadscore.errors import DataError, LeadscoreError
from leadscore.evaluate import (
    PSI_WARNING,
    bin_counts,
    expected_calibration_error,
    population_stability,
)
from leadscore.scoring import TIERS, ModelBundle
from leadscore.store import FEATURE_PREFIX, ScoreStore, with_features

LABEL = "label"  # outcomes read from a spec's label column: 1, 0, or NaN when still open

log = logging.getLogger(__name__)


BundleFor = Callable[[str], ModelBundle]


@dataclass(frozen=True)
class Thresholds:
    max_auc_drop: float = MAX_AUC_DROP
    max_calibration_gap: float = MAX_CALIBRATION_GAP
    min_cohort: int = MIN_COHORT


def read_outcomes(path: Path, id_column: str = "lead_id") -> pd.DataFrame:
    """lead id, converted (1/0, true/false, yes/no), converted_at (blank when not converted)
    from a CSV or Parquet file; one plain line naming the file, column or row otherwise."""
    if not path.is_file():
        raise DataError(f"{path}: no such outcomes file")
    try:
        if path.suffix.lower() in {".parquet", ".pq"}:
            frame = pd.read_parquet(path).astype(str).replace({"None": "", "nan": "", "NaT": ""})
        else:
            frame = pd.read_csv(path, dtype=str, keep_default_na=False)
    except (OSError, ValueError, pa.ArrowException) as exc:
        raise DataError(
            f"{path}: cannot be read as an outcomes table ({type(exc).__name__})"
        ) from None
    ids = id_column if id_column in frame.columns else "lead_id"
    missing = [c for c in (ids, "converted", "converted_at") if c not in frame.columns]
    if missing:
        raise DataError(f"{path}: outcomes need the column(s) {missing} (has "
                        f"{list(frame.columns)[:10]})")
    flag = frame["converted"].str.strip().str.lower()
    positive, negative = {"1", "true", "yes", "1.0"}, {"0", "false", "no", "0.0", ""}
    bad = ~flag.isin(positive | negative)
    if bad.any():
        row = int(np.flatnonzero(bad.to_numpy())[0]) + 1
        raise DataError(f"{path}: column 'converted', row {row}: expected 1/0, true/false or "
                        "yes/no")
    when = pd.to_datetime(frame["converted_at"].where(frame["converted_at"].str.strip() != ""),
                          errors="coerce", utc=True, format="mixed")
    converted = flag.isin(positive).to_numpy()
    unreadable = converted & when.isna().to_numpy()
    if unreadable.any():
        row = int(np.flatnonzero(unreadable)[0]) + 1
        raise DataError(f"{path}: column 'converted_at', row {row}: a converted lead needs the "
                        "time it converted (ISO date or timestamp)")
    out = pd.DataFrame({"lead_id": frame[ids].astype(str), "converted_at": when})
    out.loc[~converted, "converted_at"] = pd.NaT
    # a lead listed twice: its first conversion counts
    return out.sort_values("converted_at").drop_duplicates("lead_id", keep="first")


def outcomes_of_spec(spec: DatasetSpec, as_of: datetime) -> pd.DataFrame:
    """The outcomes the spec trains on, as the monitor joins them (`SPEC_OUTCOMES_RULE`)."""
    from leadscore.data import ID, TIME, load_conversions, load_leads
    from leadscore.data import LABEL as TRAIN_LABEL

    if spec.outcome.table is not None:
        conversions = load_conversions(spec)
        return pd.DataFrame({
            "lead_id": conversions[ID].astype(str).to_numpy(),
            "converted_at": pd.to_datetime(conversions["converted_at"]).dt.tz_localize(UTC),
        })
    leads, _ = load_leads(spec)
    label = leads[TRAIN_LABEL].to_numpy(dtype=float)
    if spec.leads.created_at:
        when = pd.to_datetime(leads[TIME]).dt.tz_localize(UTC)
        if spec.as_of_days:
            when = when + pd.Timedelta(days=spec.as_of_days)
    else:
        when = pd.Series(pd.Timestamp(as_of), index=leads.index)
    return pd.DataFrame({
        "lead_id": leads[ID].astype(str).to_numpy(),
        "converted_at": when.where(label == 1).to_numpy(),
        LABEL: label,
    })


SPEC_OUTCOMES_RULE = (
    "`--config SPEC` takes the outcomes the spec trains on. A conversion table (lead id, "
    "converted_at) is joined like an --outcomes file: a lead absent from it did not convert. "
    "A label column of the lead table (bank marketing's `y`) says whether a lead converted, "
    "not when: its outcomes count as settled, so every scoring of a decided lead has matured "
    "and counts its label, whatever the horizon, and a lead whose label is open or empty, or "
    "that the file no longer lists, is pending. Their converted_at, reported only, is the "
    "lead's as-of time (the spec's date column plus as_of_days) or, without a date column, "
    "the monitor's --as-of."
)


def cohort_of(times: pd.Series, period: str) -> pd.Series:
    """Week (its Monday, YYYY-MM-DD) or month (YYYY-MM) of each time."""
    if period == "week":
        monday = times.dt.tz_convert(None).dt.normalize() - pd.to_timedelta(
            times.dt.weekday, unit="D")
        return monday.dt.strftime("%Y-%m-%d")
    if period == "month":
        return times.dt.strftime("%Y-%m")
    raise DataError(f"--cohort must be week or month, not {period!r}")


_COHORT_SQL = {
    # the session runs in UTC: a week starts on its Monday, as `cohort_of` has it
    "week": "strftime(date_trunc('week', scored_at), '%Y-%m-%d')",
    "month": "strftime(scored_at, '%Y-%m')",
}


def joined(store: ScoreStore, model: str, outcomes: pd.DataFrame, *, horizon_days: int,
           as_of: datetime, period: str) -> pd.DataFrame:
    """One row per (cohort, version, lead): its first scoring there, with `matured` and `y`.

    DuckDB reads the store (only the columns used, every day's files in one scan), keeps each
    lead's first scoring per cohort and version, and joins the outcomes; the horizon and
    maturity are then stated in pandas, once, for both kinds of outcomes.
    """
    if period not in _COHORT_SQL:
        raise DataError(f"--cohort must be week or month, not {period!r}")
    features = sorted(c for c in store.columns(model) if c.startswith(FEATURE_PREFIX))
    settled = LABEL in outcomes.columns
    known = outcomes[["lead_id", "converted_at", *([LABEL] if settled else [])]]
    picked = ", ".join(f'"{c}"' for c in features)
    con = store.connect(model)
    try:
        con.register("outcomes", known)
        table = con.sql(f"""
            WITH firsts AS (
                SELECT lead_id, model_version, scored_at, probability, score, tier
                       {", " + picked if picked else ""}, {_COHORT_SQL[period]} AS cohort
                FROM scores
                QUALIFY row_number() OVER (PARTITION BY cohort, model_version, lead_id
                                           ORDER BY scored_at) = 1
            )
            SELECT firsts.*, outcomes.* EXCLUDE (lead_id)
            FROM firsts LEFT JOIN outcomes USING (lead_id)
            ORDER BY scored_at, lead_id, model_version
        """).to_arrow_table()
    finally:
        con.close()
    if table.num_rows == 0:
        raise DataError(f"the score history of model {model!r} is empty")
    scores = with_features(table).to_pandas()
    scores["scored_at"] = pd.to_datetime(scores["scored_at"], utc=True)
    scores["converted_at"] = pd.to_datetime(scores["converted_at"], utc=True)
    if settled:
        # a label column says whether, not when: every scoring of a decided lead has matured
        # and counts its label; an open (or unlisted) lead is pending
        scores["y"] = (scores[LABEL] == 1).astype(int)
        scores["matured"] = scores[LABEL].notna()
        return scores.drop(columns=[LABEL])
    horizon = pd.Timedelta(days=horizon_days)
    after = scores["converted_at"] > scores["scored_at"]
    before = scores["converted_at"] <= scores["scored_at"]
    scores = scores[~before.fillna(False)].copy()  # scored after converting: no forecast
    after = after.loc[scores.index].fillna(False)
    within = (scores["converted_at"] <= scores["scored_at"] + horizon).fillna(False)
    scores["y"] = (after & within).astype(int)
    scores["matured"] = scores["scored_at"] + horizon <= pd.Timestamp(as_of)
    return scores


def _auc(y: np.ndarray, p: np.ndarray) -> tuple[float | None, float | None]:
    from sklearn.metrics import average_precision_score, roc_auc_score

    if len(set(y.tolist())) < 2:
        return None, None
    return float(roc_auc_score(y, p)), float(average_precision_score(y, p))


def _drift(bundle: ModelBundle | None, features: pd.Series) -> dict[str, float] | None:
    """PSI per feature of a cohort's stored features against the version's training profile."""
    profile = (bundle.meta.get("profile") or {}) if bundle is not None else {}
    if bundle is None or not profile or features.empty:
        return None
    matrix = np.array(features.tolist(), dtype=float)
    out = {}
    for j, feature in enumerate(bundle.builder.features_):
        entry = profile.get("features", {}).get(feature.name)
        if entry is not None and j < matrix.shape[1]:
            counts = bin_counts(entry, matrix[:, j])
            out[feature.name] = round(population_stability(entry["proportions"], counts), 4)
    return out


def monitor(store: ScoreStore, model: str | None, outcomes: pd.DataFrame, *,
            horizon_days: int = DEFAULT_HORIZON_DAYS, as_of: datetime | None = None,
            period: str = "week", thresholds: Thresholds | None = None,
            bundle_for: BundleFor | None = None) -> dict[str, Any]:
    """The monitoring report (plain JSON-able dict) with its `alarms` (one line each)."""
    limits = thresholds or Thresholds()
    as_of = as_of or datetime.now(UTC)
    if as_of.tzinfo is None:
        as_of = as_of.replace(tzinfo=UTC)
    name = store.resolve_model(model)
    data = joined(store, name, outcomes, horizon_days=horizon_days, as_of=as_of, period=period)
    cohorts: list[dict[str, Any]] = []
    alarms: list[str] = []
    bundles: dict[str, ModelBundle | None] = {}
    for (cohort, key), group in data.groupby(["cohort", "model_version"], sort=True):
        version = str(key)
        if version not in bundles:
            try:
                bundles[version] = bundle_for(version) if bundle_for is not None else None
            except LeadscoreError as exc:
                log.info("version %s: no bundle for its test AUC and drift (%s)", version, exc)
                bundles[version] = None
        bundle = bundles[version]
        ripe = group[group["matured"]]
        y, p = ripe["y"].to_numpy(), ripe["probability"].to_numpy()
        roc, pr = _auc(y, p)
        expected, actual = float(p.sum()), int(y.sum())
        tiers = {
            tier: {"leads": int((ripe["tier"] == tier).sum()),
                   "conversion_rate": _rate(ripe.loc[ripe["tier"] == tier, "y"])}
            for tier in TIERS
        }
        test_auc = _test_auc(bundle)
        row = {
            "cohort": cohort,
            "model_version": version,
            "scored": int(len(group)),
            "matured": int(len(ripe)),
            "pending": int(len(group) - len(ripe)),
            "expected": round(expected, 3),
            "actual": actual,
            "gap": round((expected - actual) / actual, 4) if actual else None,
            "roc_auc": _round(roc),
            "pr_auc": _round(pr),
            "ece": _round(expected_calibration_error(y, p)) if len(ripe) else None,
            "test_roc_auc": _round(test_auc),
            "tiers": tiers,
            "psi": _drift(bundle, ripe["features"] if len(ripe) else group["features"]),
        }
        cohorts.append(row)
        alarms += _alarms(name, row, limits)
    return {
        "model": name,
        "as_of": as_of.isoformat(timespec="seconds"),
        "period": period,
        "horizon_days": horizon_days,
        "thresholds": vars(limits),
        "rule": (__doc__ or "").split("\n\n", 1)[1].strip(),
        "cohorts": cohorts,
        "alarms": alarms,
    }


def _alarms(name: str, row: dict[str, Any], limits: Thresholds) -> list[str]:
    """One plain line per alarm for a cohort large enough to be believed."""
    if row["matured"] < limits.min_cohort:
        return []
    where = f"model {name} version {row['model_version']}, cohort {row['cohort']}"
    out = []
    if row["roc_auc"] is not None and row["test_roc_auc"] is not None:
        drop = row["test_roc_auc"] - row["roc_auc"]
        if drop > limits.max_auc_drop:
            out.append(f"{where}: realized ROC AUC {row['roc_auc']:.3f} is {drop:.3f} below the "
                       f"test AUC {row['test_roc_auc']:.3f} (more than --max-auc-drop "
                       f"{limits.max_auc_drop:g}) on {row['matured']} matured leads")
    expected, actual = row["expected"], row["actual"]
    gap = abs(expected - actual) / max(actual, 1)
    if gap > limits.max_calibration_gap:
        out.append(f"{where}: {expected:.1f} conversions expected, {actual} happened "
                   f"({gap:.0%} apart, more than --max-calibration-gap "
                   f"{limits.max_calibration_gap:.0%}) on {row['matured']} matured leads")
    return out


def _test_auc(bundle: ModelBundle | None) -> float | None:
    if bundle is None:
        return None
    value = (bundle.meta.get("metrics") or {}).get("test_roc_auc")
    return float(value) if value is not None and value == value else None


def _rate(y: pd.Series) -> float | None:
    return round(float(y.mean()), 4) if len(y) else None


def _round(value: float | None) -> float | None:
    return None if value is None or math.isnan(value) else round(float(value), 4)


def markdown(report: dict[str, Any]) -> str:
    """The report for people: one table per concern, cohorts down the side."""
    lines = [f"# Monitoring: {report['model']}", "",
             f"As of {report['as_of']}, {report['period']}ly cohorts, a {report['horizon_days']}"
             "-day horizon.", "", report["rule"], ""]
    lines += ["## Expected vs actual", "",
              "| cohort | version | scored | matured | pending | expected | actual | ROC AUC "
              "| test AUC | PR AUC | ECE |", "|---|---|" + "---:|" * 9]
    for c in report["cohorts"]:
        lines.append(
            f"| {c['cohort']} | {c['model_version']} | {c['scored']} | {c['matured']} | "
            f"{c['pending']} | {c['expected']:.1f} | {c['actual']} | {_cell(c['roc_auc'])} | "
            f"{_cell(c['test_roc_auc'])} | {_cell(c['pr_auc'])} | {_cell(c['ece'])} |")
    lines += ["", "## Conversion rate per tier", "",
              "| cohort | version | " + " | ".join(TIERS) + " |",
              "|---|---|" + "---:|" * len(TIERS)]
    for c in report["cohorts"]:
        cells = [_cell(c["tiers"][t]["conversion_rate"]) for t in TIERS]
        lines.append(f"| {c['cohort']} | {c['model_version']} | " + " | ".join(cells) + " |")
    lines += ["", f"## Input drift (PSI against training; above {PSI_WARNING} is a shift)", ""]
    for c in report["cohorts"]:
        if c["psi"]:
            worst = sorted(c["psi"].items(), key=lambda kv: -kv[1])[:5]
            text = ", ".join(f"{k} {v:.3f}" for k, v in worst)
            lines.append(f"- {c['cohort']} (version {c['model_version']}): {text}")
    lines += ["", "## Plots", ""]
    lines += [f"![{name}]({file})" for name, file in PLOTS.items()]
    lines += ["", "## Alarms", ""]
    lines += [f"- {a}" for a in report["alarms"]] or ["None."]
    return "\n".join(lines) + "\n"


PLOTS = {"calibration": "calibration_over_time.png", "auc": "auc_over_time.png",
         "tiers": "tier_conversion.png"}


def write_plots(folder: Path, report: dict[str, Any]) -> list[Path]:
    """Expected vs actual conversions, realized ROC AUC (the test AUC dashed) and conversion rate
    per tier, each over the matured cohorts, one line per version (PNG, Agg)."""
    from leadscore.report import _figure, _save

    matured = [c for c in report["cohorts"] if c["matured"]]
    versions = sorted({c["model_version"] for c in matured}, key=str)
    paths = []
    figure, ax = _figure("Expected vs actual conversions")
    for version in versions:
        rows = [c for c in matured if c["model_version"] == version]
        ax.plot([c["cohort"] for c in rows], [c["expected"] for c in rows], marker="o", ls="--",
                label=f"v{version} expected")
        ax.plot([c["cohort"] for c in rows], [c["actual"] for c in rows], marker="o",
                label=f"v{version} actual")
    ax.set_ylabel("conversions (matured leads)")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    paths.append(_save(figure, folder / PLOTS["calibration"]))

    figure, ax = _figure("Realized ROC AUC by cohort")
    for version in versions:
        rows = [c for c in matured if c["model_version"] == version and c["roc_auc"] is not None]
        line = ax.plot([c["cohort"] for c in rows], [c["roc_auc"] for c in rows], marker="o",
                       label=f"v{version}")
        tests = {c["test_roc_auc"] for c in rows if c["test_roc_auc"] is not None}
        for test in tests:
            ax.axhline(test, ls="--", lw=0.8, color=line[0].get_color())
    ax.set_ylabel("ROC AUC (dashed: the version's test AUC)")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    paths.append(_save(figure, folder / PLOTS["auc"]))

    figure, ax = _figure("Conversion rate per tier")
    for tier in TIERS:
        rows = [c for c in matured if c["tiers"][tier]["conversion_rate"] is not None]
        ax.plot([f"{c['cohort']} v{c['model_version']}" for c in rows],
                [c["tiers"][tier]["conversion_rate"] for c in rows], marker="o",
                label=f"tier {tier}")
    ax.set_ylabel("conversion rate (matured leads)")
    ax.legend(fontsize=8)
    ax.tick_params(axis="x", labelrotation=45, labelsize=7)
    paths.append(_save(figure, folder / PLOTS["tiers"]))
    return paths


def _cell(value: float | None) -> str:
    return "-" if value is None else f"{value:.3f}"
