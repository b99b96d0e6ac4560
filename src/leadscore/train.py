"""LightGBM training and probability calibration. Knows nothing about MLflow or files.

`fit_model` takes the `leads` stage and returns a `TrainedModel`: booster, encoder, calibrator,
tier cutoffs and the split it used, so the caller (the CLI, via `tracking`) can evaluate, save
and log it. The linear start the trees begin from under drift is `linear_start`.

Slightly past 600 lines: the split, the calibrator, the options and the fit are the steps of one
training, read top to bottom.
"""

from __future__ import annotations

import difflib
import logging
from collections.abc import Mapping
from dataclasses import dataclass, field
from typing import Any, Literal

import lightgbm as lgb
import numpy as np
import pandas as pd
from sklearn.isotonic import IsotonicRegression
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from sklearn.model_selection import StratifiedKFold, train_test_split

from leadscore.config import DatasetSpec
from leadscore.data import LABEL, TIME
from leadscore.errors import SpecError
from leadscore.features import FeatureBuilder, builder_for
from leadscore.linear_start import (
    ONE_THREAD_ROWS,
    LinearStart,
    choose_linear_start,
    fit_linear,
    tree_penalty,
)

log = logging.getLogger(__name__)

DEFAULT_PARAMS: dict[str, Any] = {
    "objective": "binary",
    # 0.1 rather than 0.05: half the trees (half the TreeSHAP cost of reasons) for the same test
    # AUC (x_education 0.939 vs 0.937, ECE 0.025 both; bank 0.753 vs 0.750)
    "learning_rate": 0.1,
    # shallow trees: TreeSHAP reasons cost trees x leaves x depth squared. Depth 3 with 8 leaves
    # (more trees) explains a lead ~4x faster than depth 6 with 31 leaves, for the same test AUC
    # (x_education 0.937 vs 0.938 with ECE 0.025 vs 0.028, bank 0.750 vs 0.754, synthetic
    # 0.841 vs 0.840): lead tables have few strong interactions and little data per segment
    "num_leaves": 8,
    "max_depth": 3,
    "min_data_in_leaf": 40,
    "feature_fraction": 0.8,
    "bagging_fraction": 0.8,
    "bagging_freq": 1,
    "lambda_l2": 1.0,
    "cat_smooth": 20.0,
    "min_data_per_group": 50,
    "max_cat_threshold": 32,
    "verbosity": -1,
    "num_threads": 0,
    "deterministic": True,
    "force_col_wise": True,
}
NUM_BOOST_ROUND = 2000
EARLY_STOPPING = 100
# leadscore's own training options, read from `train.params` or `fit_model(params=...)` and
# never passed to LightGBM:
#   linear_start: a regularised logistic regression whose log-odds the trees start from, so
#     numeric fields that leave their training range (economic indicators, a rising base rate)
#     extrapolate linearly instead of sticking at the last tree bin. "auto": on when the
#     validation slice shows drift (see `drift_check`). Under drift a field that left its
#     training range is extrapolated only if that lowers the validation log loss, along the
#     direction the spec declares for it (`monotone`), if any; the trees then leave it to the
#     linear start (see `choose_linear_start`);
#   linear_c: the logistic regression's inverse regularisation; "auto": the value of
#     LINEAR_C_GRID with the lowest validation log loss (a trend fitted on a narrow range and
#     extrapolated far beyond it needs shrinking, and only the next slice can say how much);
#   refit: on a time split, after early stopping and calibration chose the tree count, refit on
#     train + valid with that count (otherwise the model never learns from the newest leads).
#     "auto": when the validation slice drifted (see `drift_check`), or the training slice has
#     fewer than REFIT_ALWAYS_BELOW leads. Past that size, on a slice that did not drift, the
#     newest fifth adds little (measured on 100k synthetic leads: test ROC AUC 0.8790 refitted vs
#     0.8786 not) while a second training doubles the time of `train` (151 s of 598 s at 1M);
#   recency_half_life: weight training leads by 0.5 ** (age / (half_life * span)) (time only);
#   linear_damping: the share of a numeric value's distance beyond its training range that the
#     linear start extrapolates (1: a straight line, 0: held at the edge, as trees do). A damped
#     trend suits a model retrained often (each forecast reaches a month ahead: the bank
#     backtest gains +0.007 ROC AUC at 0.5) and costs one scoring far ahead (bank's static
#     split, 18 months: -0.007), so the default stays 1; the validation slice cannot choose it
#     (it chose 0.5 on the static split and 1 in most backtest steps, the wrong way both times;
#     benchmarks/results/backtest_experiments.json).
LEADSCORE_OPTIONS: dict[str, Any] = {
    "linear_start": "auto",
    "linear_c": "auto",
    "linear_damping": 1.0,
    "refit": "auto",
    "recency_half_life": None,
}
REFIT_ALWAYS_BELOW = 200_000  # training leads
# drift: this share of validation leads has a numeric field outside its training range, or the
# conversion rate moved by this factor between the training and validation slices
DRIFT_OUT_OF_RANGE = 0.25
DRIFT_RATE_RATIO = 1.5
TIER_SHARES = {"A": 0.10, "B": 0.20, "C": 0.30}  # top 10% A, next 20% B, next 30% C, rest D


@dataclass(frozen=True)
class Split:
    """Row positions of each slice; `kind` says how they were chosen (the report shows it)."""

    train: np.ndarray
    valid: np.ndarray
    test: np.ndarray
    kind: Literal["time", "stratified"]


def split_leads(leads: pd.DataFrame, spec: DatasetSpec) -> Split:
    """Most recent `test_fraction` as test, the slice before it as validation, the rest train.

    Only labelled leads take part. Without a clock the split is stratified at random, which
    flatters any model when conversion drifts over time: the report says so.
    """
    labelled = np.flatnonzero(leads[LABEL].notna().to_numpy())
    test_frac, valid_frac = spec.train.test_fraction, spec.train.valid_fraction
    if TIME in leads.columns:
        order = labelled[np.argsort(leads[TIME].to_numpy()[labelled], kind="stable")]
        n = len(order)
        n_test = int(round(n * test_frac))
        n_valid = int(round((n - n_test) * valid_frac))
        train = order[: n - n_test - n_valid]
        valid = order[n - n_test - n_valid : n - n_test]
        test = order[n - n_test :]
        return Split(np.sort(train), np.sort(valid), np.sort(test), "time")
    y = leads[LABEL].to_numpy()[labelled]
    rest, test = train_test_split(
        labelled, test_size=test_frac, stratify=y, random_state=spec.train.seed
    )
    y_rest = leads[LABEL].to_numpy()[rest]
    train, valid = train_test_split(
        rest, test_size=valid_frac, stratify=y_rest, random_state=spec.train.seed + 1
    )
    return Split(np.sort(train), np.sort(valid), np.sort(test), "stratified")


class Calibrator:
    """Maps the booster's raw log-odds to calibrated probabilities; its state is plain numbers.

    Platt (a logistic on the log-odds) and isotonic are both fitted on the validation slice;
    the one with the lower out-of-fold log loss there is kept (isotonic over-fits small slices,
    Platt under-fits skewed ones, and only data can tell which this is).
    """

    def __init__(self, method: Literal["auto", "platt", "isotonic", "none"] = "auto") -> None:
        self.method = method
        self._knots: tuple[np.ndarray, np.ndarray] | None = None  # isotonic, as arrays

    def fit(self, margin: np.ndarray, y: np.ndarray, seed: int = 0) -> Calibrator:
        candidates = ["platt", "isotonic"] if self.method == "auto" else [self.method]
        losses: dict[str, float] = {}
        if len(candidates) > 1:
            folds = StratifiedKFold(n_splits=2, shuffle=True, random_state=seed)
            for name in candidates:
                oof = np.empty(len(y))
                for fit_idx, eval_idx in folds.split(margin, y):
                    part = _fit_calibration(name, margin[fit_idx], y[fit_idx])
                    oof[eval_idx] = _apply_calibration(part, margin[eval_idx])
                losses[name] = float(log_loss(y, np.clip(oof, 1e-6, 1 - 1e-6), labels=[0, 1]))
            chosen = min(losses, key=lambda k: losses[k])
        else:
            chosen = candidates[0]
        self.state_ = _fit_calibration(chosen, margin, y)
        self._knots = None
        self.losses_ = losses
        if losses:
            log.info("calibration: %s (out-of-fold log loss %s)", chosen, losses)
        else:  # fixed by the caller (a refit keeps a smooth map, or none under drift)
            log.info("calibration: %s", chosen)
        return self

    def transform(self, margin: np.ndarray) -> np.ndarray:
        isotonic = self.state_["method"] == "isotonic"
        return _apply_calibration(self.state_, margin, self._points() if isotonic else None)

    def transform_one(self, margin: float) -> float:
        """`transform` for one lead (an API request): the same float64 operations in the same
        order, on a Python float (numpy's per-array overhead is most of the cost at one
        value); `np.exp` and `np.interp` themselves are kept, so the result is the same
        double (a test holds it to that)."""
        state = self.state_
        method = state["method"]
        if method == "platt":
            return 1.0 / (1.0 + float(np.exp(-(state["a"] * margin + state["b"]))))
        if method == "isotonic":
            x, y = self._points()
            return float(np.interp(margin, x, y))
        return 1.0 / (1.0 + float(np.exp(-margin)))

    def _points(self) -> tuple[np.ndarray, np.ndarray]:
        """The isotonic map's knots as arrays, converted once (not on every call)."""
        if self._knots is None:
            self._knots = (np.asarray(self.state_["x"], dtype=np.float64),
                           np.asarray(self.state_["y"], dtype=np.float64))
        return self._knots

    def to_dict(self) -> dict[str, Any]:
        return dict(self.state_)

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> Calibrator:
        calibrator = cls(method=state["method"])
        calibrator.state_ = dict(state)
        calibrator.losses_ = {}
        return calibrator


def _fit_calibration(method: str, margin: np.ndarray, y: np.ndarray) -> dict[str, Any]:
    if method == "platt":
        model = LogisticRegression(C=1e6, solver="lbfgs").fit(margin.reshape(-1, 1), y)
        a, b = float(model.coef_[0, 0]), float(model.intercept_[0])
        if a <= 0:
            # the model ranks this slice backwards (a regime change): never flip a model's
            # order from one slice; keep its slope and only move its level to the slice's rate
            a, b = 1.0, _shift_to_rate(margin, float(np.mean(y)))
        return {"method": "platt", "a": a, "b": b}
    if method == "isotonic":
        iso = IsotonicRegression(out_of_bounds="clip", y_min=1e-4, y_max=1 - 1e-4).fit(margin, y)
        return {
            "method": "isotonic",
            "x": [float(v) for v in iso.X_thresholds_],
            "y": [float(v) for v in iso.y_thresholds_],
        }
    return {"method": "none"}


def _shift_to_rate(margin: np.ndarray, rate: float) -> float:
    """The shift of the log-odds that makes the mean probability equal `rate` (bisection)."""
    low, high = -30.0, 30.0
    for _ in range(60):
        mid = (low + high) / 2.0
        if float(np.mean(1.0 / (1.0 + np.exp(-(margin + mid))))) < rate:
            low = mid
        else:
            high = mid
    return (low + high) / 2.0


def _apply_calibration(state: dict[str, Any], margin: np.ndarray,
                       points: tuple[np.ndarray, np.ndarray] | None = None) -> np.ndarray:
    method = state["method"]
    if method == "platt":
        return 1.0 / (1.0 + np.exp(-(state["a"] * margin + state["b"])))
    if method == "isotonic":
        x, y = points or (np.asarray(state["x"]), np.asarray(state["y"]))
        return np.interp(margin, x, y)
    return 1.0 / (1.0 + np.exp(-margin))


def tier_cutoffs(probability: np.ndarray) -> dict[str, float]:
    """Probability thresholds for A, B, C from the validation slice (D is everything below).

    Quantile cutoffs keep tier sizes stable for sales capacity planning: A is the top 10%.
    """
    cutoffs: dict[str, float] = {}
    share = 0.0
    for tier, size in TIER_SHARES.items():
        share += size
        cutoffs[tier] = float(np.quantile(probability, 1.0 - share))
    return cutoffs


def percentile_grid(probability: np.ndarray) -> list[float]:
    """101 quantiles of validation probabilities, so any lead's percentile is one search."""
    return [float(v) for v in np.quantile(probability, np.linspace(0, 1, 101))]


@dataclass
class TrainedModel:
    booster: lgb.Booster
    builder: FeatureBuilder
    calibrator: Calibrator
    split: Split
    params: dict[str, Any]
    best_iteration: int
    tiers: dict[str, float]
    percentiles: list[float]
    extras: dict[str, Any] = field(default_factory=dict)
    linear: LinearStart | None = None

    def margin(self, matrix: np.ndarray) -> np.ndarray:
        """Raw log-odds of an encoded matrix: the linear start (if any) plus the trees."""
        raw = np.asarray(self.booster.predict(matrix, raw_score=True), dtype=float)
        return raw + self.linear.margin(matrix) if self.linear is not None else raw

    def predict_proba(self, leads: pd.DataFrame) -> np.ndarray:
        """Calibrated probabilities for rows of the training table (evaluation, backtests)."""
        return self.calibrator.transform(self.margin(self.builder.transform(leads)))


def training_options(
    spec: DatasetSpec, params: dict[str, Any] | None, rows: int
) -> tuple[dict[str, Any], dict[str, Any]]:
    """LightGBM parameters and leadscore's own options, split apart (spec, then caller)."""
    # one thread below 100k training rows unless asked otherwise: a second gains little there,
    # and OpenMP's spinning made training 10-100x slower on this shared 2-core machine
    threads = {"num_threads": 1} if rows < ONE_THREAD_ROWS else {}
    merged = {
        **DEFAULT_PARAMS,
        **threads,
        "seed": spec.train.seed,
        **spec.train.params,
        **(params or {}),
    }
    options = {k: merged.pop(k, default) for k, default in LEADSCORE_OPTIONS.items()}
    try:
        damping = float(options["linear_damping"])
    except (TypeError, ValueError):
        damping = float("nan")
    if not 0.0 <= damping <= 1.0:  # nan included
        raise SpecError(
            f"linear_damping must be a number from 0 to 1, not {options['linear_damping']!r}"
        )
    options["linear_damping"] = damping
    check_param_names(merged)
    return merged, options


def check_param_names(params: Mapping[str, Any]) -> None:
    """LightGBM ignores a parameter name it does not know (`num_leafs=15` trains the default
    without a word): refuse it here, with the nearest real name."""
    try:  # the names LightGBM's own C API lists (LGBM_DumpParamAliases), aliases included
        aliases = lgb.basic._ConfigAliases._get_all_param_aliases()
    except AttributeError:  # pragma: no cover - another LightGBM version: LightGBM decides
        return
    known = set(aliases) | {a for names in aliases.values() for a in names}
    unknown = [name for name in params if name not in known]
    if unknown:
        parts = []
        for name in unknown:
            # a parameter's main name first (num_leaves, not its alias num_leaf)
            near = difflib.get_close_matches(name, sorted(aliases), n=1, cutoff=0.7)
            near = near or difflib.get_close_matches(name, sorted(known), n=1, cutoff=0.7)
            parts.append(f"{name!r}" + (f" (did you mean {near[0]!r}?)" if near else ""))
        raise SpecError(f"unknown training parameter(s): {', '.join(parts)}")


@dataclass
class Prepared:
    """The split and the encoded slices every fit starts from (training and tuning alike)."""

    split: Split
    builder: FeatureBuilder
    y: np.ndarray
    x_train: np.ndarray
    x_valid: np.ndarray


def prepare(leads: pd.DataFrame, spec: DatasetSpec) -> Prepared:
    split = split_leads(leads, spec)
    builder = builder_for(spec, leads).fit(leads.iloc[split.train])
    return Prepared(
        split,
        builder,
        leads[LABEL].to_numpy(),
        builder.transform(leads.iloc[split.train]),
        builder.transform(leads.iloc[split.valid]),
    )


def recency_weights(times: np.ndarray, half_life: float | None) -> np.ndarray | None:
    """0.5 ** (age / (half_life * span)): the newest lead weighs 1, one half-life back 0.5."""
    if not half_life:
        return None
    t = np.asarray(times, dtype="float64")
    span = float(t.max() - t.min()) or 1.0
    return np.asarray(0.5 ** ((t.max() - t) / (half_life * span)))


def _times(leads: pd.DataFrame, rows: np.ndarray) -> np.ndarray:
    values = leads[TIME].to_numpy()[rows]
    if np.issubdtype(values.dtype, np.datetime64):
        return values.astype("datetime64[s]").astype("float64")
    return values.astype("float64")


def boost(
    params: dict[str, Any],
    builder: FeatureBuilder,
    x_train: np.ndarray,
    y_train: np.ndarray,
    *,
    init_train: np.ndarray | None = None,
    weight: np.ndarray | None = None,
    x_valid: np.ndarray | None = None,
    y_valid: np.ndarray | None = None,
    init_valid: np.ndarray | None = None,
    rounds: int = NUM_BOOST_ROUND,
) -> tuple[lgb.Booster, int]:
    """One LightGBM fit; with a validation slice it stops early and keeps the best trees."""
    train_set = lgb.Dataset(
        x_train,
        label=y_train,
        weight=weight,
        init_score=init_train,
        feature_name=builder.feature_names_,
        categorical_feature=builder.categorical_indices_,
        free_raw_data=True,
        params={"verbosity": -1},
    )
    from leadscore import progress

    reporter = progress.round_callback(rounds)
    extra = [reporter] if reporter is not None else []
    try:
        if x_valid is None:
            booster = lgb.train(params, train_set, num_boost_round=rounds, callbacks=extra)
            return booster, rounds
        valid_set = lgb.Dataset(
            x_valid, label=y_valid, init_score=init_valid, reference=train_set
        )
        booster = lgb.train(
            # log loss only: early stopping reads it, and an AUC per round (a sort of the whole
            # validation slice) cost 29 s of 194 s at 1M leads; the validation AUC is computed
            # once, after training
            {**params, "metric": ["binary_logloss"]},
            train_set,
            num_boost_round=rounds,
            valid_sets=[valid_set],
            valid_names=["valid"],
            callbacks=[
                lgb.early_stopping(EARLY_STOPPING, first_metric_only=True, verbose=False),
                *extra,
            ],
        )
    except lgb.basic.LightGBMError as exc:  # a bad value (num_leaves=abc, learning_rate=-1)
        detail = str(exc).split(" at /")[0].strip()  # without the C++ source path
        raise SpecError(
            f"LightGBM refused the training parameters: {detail} (see --param and the spec's "
            "train.params)"
        ) from None
    best = booster.best_iteration or booster.current_iteration()
    return _trimmed(booster, best), best


def drift_check(
    builder: FeatureBuilder,
    x_train: np.ndarray,
    x_valid: np.ndarray,
    y_train: np.ndarray,
    y_valid: np.ndarray,
) -> dict[str, Any]:
    """Does the validation slice look like the training slice? Trees score any value beyond the
    training range as the edge bin and carry the old base rate, so a split where many leads
    fall outside it, or where the conversion rate moved a lot, calls for a linear start and a
    refit. Uses train and validation only, never the test slice."""
    numeric = [j for j, f in enumerate(builder.features_) if f.kind == "numeric"]
    outside = np.zeros(len(x_valid), dtype=bool)
    fields: list[str] = []
    for j in numeric:
        present = x_train[:, j][~np.isnan(x_train[:, j])]
        if not len(present):
            continue
        low, high = present.min(), present.max()
        beyond = (x_valid[:, j] < low) | (x_valid[:, j] > high)
        if beyond.mean() >= DRIFT_OUT_OF_RANGE:
            fields.append(builder.features_[j].name)
        outside |= beyond
    rate_train = float(np.mean(y_train)) if len(y_train) else float("nan")
    rate_valid = float(np.mean(y_valid)) if len(y_valid) else float("nan")
    ratio = rate_valid / rate_train if rate_train > 0 else float("nan")
    share = float(outside.mean()) if len(outside) else 0.0
    drifted = share >= DRIFT_OUT_OF_RANGE or (
        ratio == ratio and (ratio >= DRIFT_RATE_RATIO or ratio <= 1 / DRIFT_RATE_RATIO)
    )
    if drifted:
        log.info(
            "drift between train and valid: %.0f%% of leads out of range (%s), conversion "
            "rate %.3f -> %.3f",
            100 * share,
            ", ".join(fields) or "-",
            rate_train,
            rate_valid,
        )
    return {
        "drift": bool(drifted),
        "out_of_range_share": share,
        "out_of_range_fields": fields,
        "rate_train": rate_train,
        "rate_valid": rate_valid,
    }


@dataclass
class Start:
    """What every boosting on a prepared split starts from (training and tuning alike):
    LightGBM parameters with the spec's monotone directions and the trees' penalties, the
    recency weights, and the linear start under drift with the plan that chose it."""

    params: dict[str, Any]
    options: dict[str, Any]
    weight: np.ndarray | None
    drift: dict[str, Any]
    linear: LinearStart | None
    plan: dict[str, Any]
    half_life: float | None


def plan_start(
    leads: pd.DataFrame,
    spec: DatasetSpec,
    prepared: Prepared,
    params: dict[str, Any] | None = None,
) -> Start:
    split, builder, y = prepared.split, prepared.builder, prepared.y
    merged, options = training_options(spec, params, len(split.train))
    if any(builder.monotone_constraints_):
        merged["monotone_constraints"] = builder.monotone_constraints_
        merged.setdefault("monotone_constraints_method", "advanced")
    half_life = options["recency_half_life"] if split.kind == "time" else None
    weight = recency_weights(_times(leads, split.train), half_life) if half_life else None
    drift = drift_check(
        builder, prepared.x_train, prepared.x_valid, y[split.train], y[split.valid]
    )
    wanted = options["linear_start"]
    linear = None
    plan: dict[str, Any] = {}
    if drift["drift"] if wanted == "auto" else bool(wanted):
        linear, plan = choose_linear_start(
            builder,
            prepared.x_train,
            y[split.train],
            prepared.x_valid,
            y[split.valid],
            weight,
            drift,
            options["linear_c"],
            options["linear_damping"],
        )
        tree_penalty(builder, merged, plan["trend"])
    return Start(merged, options, weight, drift, linear, plan, half_life)


def fit_model(
    leads: pd.DataFrame,
    spec: DatasetSpec,
    params: dict[str, Any] | None = None,
) -> TrainedModel:
    """Encoder on train; linear start and booster on train with early stopping on validation;
    calibration, tiers and percentiles on validation; then (on a time split) a refit on train +
    validation with the chosen tree count, so the model has seen the most recent leads."""
    prepared = prepare(leads, spec)
    split, builder, y = prepared.split, prepared.builder, prepared.y
    x_train, x_valid = prepared.x_train, prepared.x_valid

    start = plan_start(leads, spec, prepared, params)
    merged, options, weight, linear = start.params, start.options, start.weight, start.linear
    drift, plan, half_life = start.drift, start.plan, start.half_life
    init_train = linear.margin(x_train) if linear is not None else None
    init_valid = linear.margin(x_valid) if linear is not None else None
    booster, best = boost(
        merged,
        builder,
        x_train,
        y[split.train],
        init_train=init_train,
        weight=weight,
        x_valid=x_valid,
        y_valid=y[split.valid],
        init_valid=init_valid,
    )
    log.info(
        "LightGBM stopped at %d trees (%s split, linear start %s)",
        best,
        split.kind,
        "on" if linear is not None else "off",
    )
    first = TrainedModel(booster, builder, Calibrator(), split, merged, best, {}, [], {}, linear)
    margin_valid = first.margin(x_valid)
    refit = wants_refit(options["refit"], drift["drift"], len(split.train)) and (
        split.kind == "time" and len(split.valid) > 0
    )
    # A refitted model's log-odds move a little: a smooth map (Platt) carries over to them, while
    # isotonic steps would flatten every lead beyond the validation range into one score. Under
    # drift the validation slice's map mostly encodes "the old model under-predicts the new
    # rate", which the refit has already learned: applying it twice would overshoot, so the
    # refitted model's own log-odds (fitted by log loss on the newest leads) are kept.
    method: Literal["auto", "platt", "none"] = "auto"
    if refit:
        method = "none" if drift["drift"] else "platt"
    from leadscore import progress

    progress.stage("calibration")
    calibrator = Calibrator(method).fit(margin_valid, y[split.valid], seed=spec.train.seed)
    p_valid = calibrator.transform(margin_valid)
    extras: dict[str, Any] = {
        "options": options,
        "drift": drift,
        "linear_start": linear is not None,
        "linear_plan": plan,
        "valid_roc_auc": _auc(y[split.valid], p_valid),
        "refit": False,
    }
    asked = str(options["refit"]).strip().lower()
    if not refit and split.kind == "time" and len(split.valid) and asked == "auto":
        extras["refit_skipped"] = (
            f"Not refitted on train + validation: {len(split.train):,} training leads (at least "
            f"{REFIT_ALWAYS_BELOW:,}) and no drift between the slices, so the newest leads add "
            "little; `--param refit=true` refits anyway."
        )

    if refit:
        progress.stage("refit on the training and validation slices")
        rows = np.concatenate([split.train, split.valid])
        # categories first seen in the validation slice (this season's campaign) count too
        builder = builder_for(spec, leads).fit(leads.iloc[rows])
        x_all = builder.transform(leads.iloc[rows])
        weight_all = recency_weights(_times(leads, rows), half_life) if half_life else None
        if linear is not None:
            # `merged` already keeps the trees off plan["trend"]: the refitted encoder has the
            # same features in the same order, only more category levels
            linear = fit_linear(
                builder, x_all, y[rows], weight_all, c=plan["c"], exclude=plan["held"]
            )
            linear.damping = plan.get("damping", 1.0)
        booster, _ = boost(
            merged,
            builder,
            x_all,
            y[rows],
            weight=weight_all,
            rounds=max(best, 1),
            init_train=linear.margin(x_all) if linear is not None else None,
        )
        extras["refit"] = True
        log.info("refitted on train + valid (%d leads, %d trees)", len(rows), best)

    return TrainedModel(
        booster=booster,
        builder=builder,
        calibrator=calibrator,
        split=split,
        params=merged,
        best_iteration=best,
        tiers=tier_cutoffs(p_valid),
        percentiles=percentile_grid(p_valid),
        extras=extras,
        linear=linear,
    )


def wants_refit(option: Any, drifted: bool, train_rows: int) -> bool:
    """`refit` as asked: true/false, or "auto" (under drift, or below REFIT_ALWAYS_BELOW)."""
    if isinstance(option, str) and option.strip().lower() == "auto":
        return drifted or train_rows < REFIT_ALWAYS_BELOW
    if isinstance(option, str):
        return option.strip().lower() in {"1", "true", "yes", "on"}
    return bool(option)


def _auc(y: np.ndarray, p: np.ndarray) -> float:
    from sklearn.metrics import roc_auc_score

    return float(roc_auc_score(y, p)) if 0 < y.sum() < len(y) else float("nan")


def _trimmed(booster: lgb.Booster, iterations: int) -> lgb.Booster:
    """A booster holding only the kept trees, so the saved text model is what was evaluated."""
    text = booster.model_to_string(num_iteration=iterations)
    return lgb.Booster(model_str=text)
