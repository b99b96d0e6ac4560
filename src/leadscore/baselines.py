"""The models LightGBM must beat, fitted on the same split and the same encoded features: a points
scorecard of the kind sales teams keep in a spreadsheet, logistic regression and scikit-learn's
HistGradientBoosting. Each returns calibrated probabilities so every metric compares."""

from __future__ import annotations

import logging
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np
import pandas as pd
from sklearn.compose import ColumnTransformer
from sklearn.ensemble import HistGradientBoostingClassifier
from sklearn.impute import SimpleImputer
from sklearn.linear_model import LogisticRegression
from sklearn.pipeline import Pipeline, make_pipeline
from sklearn.preprocessing import OneHotEncoder, StandardScaler

from leadscore.data import LABEL
from leadscore.features import Feature
from leadscore.train import Calibrator, TrainedModel

log = logging.getLogger(__name__)

BASELINES = ("scorecard", "logistic", "hist_gb")
POINTS_SCALE = 10.0  # points = round(10 x log-odds lift over the average lead)
NUMERIC_BINS = 5
SMOOTHING = 20.0  # pseudo-leads at the overall rate, so a level seen 3 times earns few points
# The baselines learn from a seeded random sample of at most this many leads: they are yardsticks
# with few parameters (a points table, a logistic regression, a 100-tree HistGradientBoosting on
# one thread) and their test figures settle well before this size, while fitting them on every
# lead of a 1M-lead table took 112 s, more than half of LightGBM's own training.
BASELINE_MAX_ROWS = 200_000


def _logit(p: float) -> float:
    p = min(max(p, 1e-4), 1 - 1e-4)
    return float(np.log(p / (1 - p)))


@dataclass
class FieldPoints:
    """Points for one encoded feature: per category code (categorical) or per numeric bin."""

    name: str
    kind: str
    points: list[int]  # one per level or bin, then one for missing
    edges: list[float]  # numeric: inner bin edges


class Scorecard:
    """Points per field value; a lead's score is the sum of its points.

    Default rules come from each field's conversion rate on the training leads:
    `round(10 * (logit(rate of this value) - logit(overall rate)))`, with numeric fields cut
    into quintiles and missing as a value of its own. Fields with a declared direction (a demo
    request +1, an unanswered call -1) get points that move only that way, so an unanswered call
    never earns points. Rules written in the spec (`scorecard:`) replace the derived points of
    the fields they name. Points become a probability through a logistic fit on the training
    leads' totals (what a team would do to read a score as a chance).
    """

    def __init__(self, rules: Sequence[Mapping[str, Any]] = (), scale: float = POINTS_SCALE):
        self.rules = list(rules)
        self.scale = scale

    def fit(
        self,
        matrix: np.ndarray,
        y: np.ndarray,
        features: Sequence[Feature],
        monotone: Sequence[int] | None = None,
    ) -> Scorecard:
        y = np.asarray(y, dtype=float)
        overall = _logit(float(y.mean()))
        directions = list(monotone or [0] * len(features))
        written = {str(rule["field"]): rule for rule in self.rules}
        fields: list[FieldPoints] = []
        for j, feature in enumerate(features):
            column = matrix[:, j]
            if feature.kind == "categorical":
                edges: list[float] = []
                groups = np.where(np.isnan(column), len(feature.levels), column).astype(int)
                n_groups = len(feature.levels) + 1
            else:
                present = column[~np.isnan(column)]
                inner = np.linspace(0, 1, NUMERIC_BINS + 1)[1:-1]
                qs = np.quantile(present, inner) if len(present) else np.array([])
                edges = [float(e) for e in np.unique(qs)]
                groups = np.where(
                    np.isnan(column), len(edges) + 1, np.searchsorted(edges, column, side="right")
                ).astype(int)
                n_groups = len(edges) + 2
            counts = np.bincount(groups, minlength=n_groups).astype(float)
            wins = np.bincount(groups, weights=y, minlength=n_groups)
            rates = (wins + SMOOTHING * y.mean()) / (counts + SMOOTHING)
            points = [int(round(self.scale * (_logit(r) - overall))) for r in rates]
            sign = directions[j] if j < len(directions) else 0
            if feature.kind == "numeric" and sign:
                body = np.asarray(points[:-1], dtype=float)
                body = np.maximum.accumulate(body) if sign > 0 else np.minimum.accumulate(body)
                if sign < 0:
                    body = np.minimum(body, 0)  # bad news never earns points
                points = [int(v) for v in body] + [points[-1]]
            rule = written.get(feature.name) or written.get(feature.source)
            if rule is not None:
                points = _written_points(rule, feature, edges, points)
            fields.append(FieldPoints(feature.name, feature.kind, points, edges))
        self.fields_ = fields
        totals = self.points(matrix)
        self.link_ = LogisticRegression(C=1e6).fit(totals.reshape(-1, 1), y)
        return self

    def points(self, matrix: np.ndarray) -> np.ndarray:
        total = np.zeros(len(matrix))
        for j, field in enumerate(self.fields_):
            column = matrix[:, j]
            table = np.asarray(field.points, dtype=float)
            if field.kind == "categorical":
                groups = np.where(np.isnan(column), len(table) - 1, column).astype(int)
                groups = np.clip(groups, 0, len(table) - 1)
            else:
                groups = np.where(
                    np.isnan(column),
                    len(table) - 1,
                    np.searchsorted(field.edges, column, side="right"),
                ).astype(int)
            total += table[groups]
        return total

    def predict_proba(self, matrix: np.ndarray) -> np.ndarray:
        return np.asarray(self.link_.predict_proba(self.points(matrix).reshape(-1, 1))[:, 1])

    def to_dict(self) -> dict[str, Any]:
        """The points table, as a sales team would read it (no lead values)."""
        return {
            f.name: {"kind": f.kind, "points": f.points, "edges": f.edges} for f in self.fields_
        }


def _written_points(
    rule: Mapping[str, Any], feature: Feature, edges: list[float], derived: list[int]
) -> list[int]:
    """Points from a rule in the spec; values it does not name keep their derived points.

    Categorical: `points: {value: n}`; numeric: `bins: [edges...]` with `bin_points` (one more
    than the edges); both may give `missing: n`.
    """
    points = list(derived)
    if feature.kind == "categorical":
        for value, n in dict(rule.get("points") or {}).items():
            if str(value) in feature.levels:
                points[feature.levels.index(str(value))] = int(n)
    elif rule.get("bins"):
        rule_edges = [float(e) for e in rule["bins"]]
        bin_points = [int(v) for v in rule.get("bin_points") or []]
        if len(bin_points) != len(rule_edges) + 1:
            raise ValueError(
                f"scorecard rule for {feature.name!r}: bin_points needs "
                f"{len(rule_edges) + 1} values"
            )
        edges[:] = rule_edges
        points = [*bin_points, derived[-1]]
    if rule.get("missing") is not None:
        points[-1] = int(rule["missing"])
    return points


def scorecard_rules(spec: Any) -> tuple[list[dict[str, Any]], float]:
    """Rules and scale from the spec's optional `scorecard:` key (absent: all derived)."""
    card = getattr(spec, "scorecard", None)
    if card is None:
        return [], POINTS_SCALE
    if hasattr(card, "model_dump"):
        card = card.model_dump()
    rules = [dict(r) for r in card.get("rules", [])]
    return rules, float(card.get("scale", POINTS_SCALE))


def _frame(matrix: np.ndarray, features: Sequence[Feature]) -> pd.DataFrame:
    data: dict[str, Any] = {}
    for j, f in enumerate(features):
        column = matrix[:, j]
        if f.kind == "categorical":
            data[f.name] = pd.Series(
                np.where(
                    np.isnan(column), "(missing)", np.nan_to_num(column).astype(int).astype(str)
                ),
                dtype=object,
            )
        else:
            data[f.name] = column
    return pd.DataFrame(data)


def logistic_pipeline(features: Sequence[Feature]) -> Pipeline:
    """One-hot categoricals and standardised numerics (mean-imputed) into a logistic regression."""
    categorical = [f.name for f in features if f.kind == "categorical"]
    numeric = [f.name for f in features if f.kind == "numeric"]
    columns = ColumnTransformer(
        [
            ("categorical", OneHotEncoder(handle_unknown="ignore"), categorical),
            (
                "numeric",
                make_pipeline(
                    SimpleImputer(strategy="mean", add_indicator=True, keep_empty_features=True),
                    StandardScaler(),
                ),
                numeric,
            ),
        ]
    )
    return Pipeline([("encode", columns), ("model", LogisticRegression(C=1.0, max_iter=3000))])


def hist_gb(features: Sequence[Feature], seed: int) -> HistGradientBoostingClassifier:
    mask = [f.kind == "categorical" for f in features]
    return HistGradientBoostingClassifier(
        categorical_features=mask if any(mask) else None,
        early_stopping=True,
        validation_fraction=0.15,
        random_state=seed,
    )


@dataclass
class BaselineResult:
    """Test probabilities per baseline, plus the scorecard's points table for the report."""

    probabilities: dict[str, np.ndarray]
    scorecard: dict[str, Any]
    note: str | None = None  # said in the report when the baselines learned from a sample


def fit_baselines(
    trained: TrainedModel, leads: pd.DataFrame, spec: Any, seed: int = 42
) -> BaselineResult:
    """Fit each baseline on the rows the final LightGBM learned from (train, plus valid when it
    was refitted), calibrate on validation where LightGBM was (Platt), score the test slice.

    On one thread, as LightGBM trains here: scikit-learn's OpenMP threads spin-wait for each
    other, and on a busy 2-core machine HistGradientBoosting took 48 s of a 20k-lead report
    with them against about a quarter of that without (benchmarks/train.py)."""
    from threadpoolctl import threadpool_limits

    with threadpool_limits(limits=1):
        return _fit_baselines(trained, leads, spec, seed)


def _fit_baselines(
    trained: TrainedModel, leads: pd.DataFrame, spec: Any, seed: int
) -> BaselineResult:
    split = trained.split
    builder = trained.builder
    features = builder.features_
    fit_rows = (
        np.concatenate([split.train, split.valid]) if trained.extras.get("refit") else split.train
    )
    y = leads[LABEL].to_numpy()
    note = None
    rng = np.random.default_rng(seed)
    if len(fit_rows) > BASELINE_MAX_ROWS:
        note = (
            f"The baselines learned from a random {BASELINE_MAX_ROWS:,} of the "
            f"{len(fit_rows):,} leads LightGBM learned from (they are yardsticks; see "
            "baselines.BASELINE_MAX_ROWS)."
        )
        fit_rows = np.sort(rng.choice(fit_rows, BASELINE_MAX_ROWS, replace=False))
    valid_rows = split.valid
    if len(valid_rows) > BASELINE_MAX_ROWS:  # only for their Platt calibration
        valid_rows = np.sort(rng.choice(valid_rows, BASELINE_MAX_ROWS, replace=False))
    x_fit = builder.transform(leads.iloc[fit_rows])
    x_valid = builder.transform(leads.iloc[valid_rows])
    x_test = builder.transform(leads.iloc[split.test])
    calibrate = not trained.extras.get("refit")
    out: dict[str, np.ndarray] = {}

    rules, scale = scorecard_rules(spec)
    card = Scorecard(rules, scale).fit(x_fit, y[fit_rows], features, builder.monotone_constraints_)
    out["scorecard"] = card.predict_proba(x_test)

    logistic = logistic_pipeline(features).fit(_frame(x_fit, features), y[fit_rows])
    out["logistic"] = _calibrated(
        lambda m: logistic.predict_proba(_frame(m, features))[:, 1],
        x_valid,
        y[valid_rows],
        x_test,
        calibrate,
    )
    booster = hist_gb(features, seed).fit(np.nan_to_num(x_fit, nan=np.nan), y[fit_rows])
    out["hist_gb"] = _calibrated(
        lambda m: booster.predict_proba(m)[:, 1], x_valid, y[valid_rows], x_test, calibrate
    )
    return BaselineResult(out, card.to_dict(), note)


def _calibrated(
    predict: Any, x_valid: np.ndarray, y_valid: np.ndarray, x_test: np.ndarray, calibrate: bool
) -> np.ndarray:
    """Platt on validation, as LightGBM gets, unless the model was fitted on validation too."""
    p_test = np.clip(np.asarray(predict(x_test), dtype=float), 1e-6, 1 - 1e-6)
    if not calibrate or len(y_valid) == 0 or not 0 < y_valid.sum() < len(y_valid):
        return p_test
    p_valid = np.clip(np.asarray(predict(x_valid), dtype=float), 1e-6, 1 - 1e-6)
    calibrator = Calibrator("platt").fit(np.log(p_valid / (1 - p_valid)), y_valid)
    return calibrator.transform(np.log(p_test / (1 - p_test)))
