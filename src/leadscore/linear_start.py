"""The linear start: a regularised logistic regression whose log-odds LightGBM's trees start
from (`init_score`), so numeric fields that leave their training range (economic indicators, a
rising base rate) extrapolate along a line instead of sticking at the trees' last bin.

`choose_linear_start` decides, on the validation slice, which drifted fields to extrapolate
(along the direction the spec declares, if any), how hard to regularise, and which to hold at
the edge of their range; `train.fit_model` calls it only when `train.drift_check` flags drift
(or when asked). The fitted state is plain numbers (`to_dict`), saved in the bundle's JSON.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from typing import Any

import numpy as np
from sklearn.linear_model import LogisticRegression
from sklearn.metrics import log_loss
from threadpoolctl import threadpool_limits

from leadscore.features import FeatureBuilder

log = logging.getLogger(__name__)

ONE_THREAD_ROWS = 100_000  # below this many training rows, LightGBM and BLAS use one thread
LINEAR_C_GRID = (1.0, 0.1, 0.01, 0.001)
TREND_SEARCH_C = 0.1  # the regularisation at which drifted fields are chosen as trends


class LinearStart:
    """A regularised logistic regression on the encoded features whose log-odds the boosting
    starts from (LightGBM's `init_score`); its state is plain numbers, like the calibrator's.

    Categorical codes become one-hot columns (plus one for missing); numeric features are
    standardised on the training leads (skewed counts through log1p first) with missing as the
    mean plus an indicator. Contributions per feature are exact and centred on the training
    leads, so they join LightGBM's `pred_contrib` for reasons. A declared monotone direction
    the fit contradicts zeroes that feature's weight rather than break the promise; features
    in `exclude` get no weight at all (their contribution is zero, the state keeps its shape).
    """

    def __init__(self, c: float = 1.0, clip: float = 50.0, damping: float = 1.0) -> None:
        self.c = c
        self.clip = clip
        # share of a numeric value's distance beyond its training range that the log-odds
        # follow (1: a straight line, 0: held at the edge); see `choose_linear_start`
        self.damping = damping

    # ---------------------------------------------------------------- design matrix

    def _design(self, matrix: np.ndarray) -> np.ndarray:
        blocks: list[np.ndarray] = []
        for j, spec in enumerate(self.features_):
            column = matrix[:, j]
            missing = np.isnan(column)
            if spec["kind"] == "categorical":
                codes = np.where(missing, -1, column).astype(np.int64)
                width = int(spec["levels"])
                block = np.zeros((len(column), width + 1))
                known = (codes >= 0) & (codes < width)
                block[np.flatnonzero(known), codes[known]] = 1.0
                block[~known, width] = 1.0
            else:
                value = np.where(missing, np.nan, column)
                if spec["log1p"]:
                    value = np.sign(value) * np.log1p(np.abs(value))
                z = (value - spec["mean"]) / spec["scale"]
                if self.damping != 1.0 and "low" in spec:
                    z = _damped(z, spec["low"], spec["high"], self.damping)
                z = np.clip(np.where(missing, 0.0, z), -self.clip, self.clip)
                block = np.column_stack([z, missing.astype(float)])
            blocks.append(block)
        return np.hstack(blocks) if blocks else np.zeros((len(matrix), 0))

    def fit(
        self,
        matrix: np.ndarray,
        y: np.ndarray,
        kinds: list[str],
        levels: list[int],
        monotone: list[int] | None = None,
        weight: np.ndarray | None = None,
        exclude: Sequence[int] = (),
    ) -> LinearStart:
        features: list[dict[str, Any]] = []
        for j, kind in enumerate(kinds):
            if kind == "categorical":
                features.append({"kind": "categorical", "levels": int(levels[j])})
                continue
            column = matrix[:, j]
            present = column[~np.isnan(column)]
            skewed = bool(len(present) and present.min() >= 0 and _skew(present) > 2.0)
            if skewed:
                present = np.log1p(present)
            mean = float(present.mean()) if len(present) else 0.0
            scale = float(present.std()) if len(present) else 1.0
            low, high = (
                ((float(present.min()) - mean) / (scale or 1.0),
                 (float(present.max()) - mean) / (scale or 1.0))
                if len(present) else (0.0, 0.0)
            )
            features.append({"kind": "numeric", "log1p": skewed, "mean": mean,
                             "scale": scale or 1.0, "low": low, "high": high})
        self.features_ = features
        design = self._design(matrix)
        widths = [int(f["levels"]) + 1 if f["kind"] == "categorical" else 2 for f in features]
        owner = np.repeat(np.arange(len(features)), widths)
        allowed = ~np.isin(owner, np.asarray(list(exclude), dtype=np.int64))
        directions = monotone or [0] * len(features)
        intercept = _logit(float(np.average(y, weights=weight)) if len(y) else 0.5)
        coef = np.zeros(design.shape[1])
        # refit until no declared direction is broken: each pass drops at least one column
        while allowed.any() and len(np.unique(y)) > 1:
            model = LogisticRegression(C=self.c, max_iter=2000)
            # BLAS on one thread below ONE_THREAD_ROWS, as LightGBM: two threads made each fit
            # 4x slower on this shared 2-core machine (choosing a linear start takes dozens)
            with threadpool_limits(1 if len(y) < ONE_THREAD_ROWS else None):
                model.fit(design[:, allowed], y, sample_weight=weight)
            coef = np.zeros(design.shape[1])
            coef[allowed] = model.coef_[0]
            intercept = float(model.intercept_[0])
            wrong = [
                j
                for j, sign in enumerate(directions)
                if sign
                and features[j]["kind"] == "numeric"
                and coef[np.flatnonzero(owner == j)[0]] * sign < 0
            ]
            if not wrong:
                break
            for j in wrong:  # the value column only: missing stays free
                allowed[np.flatnonzero(owner == j)[0]] = False
            log.debug(
                "linear start: dropped %d feature(s) against their declared direction", len(wrong)
            )
        self.coef_ = coef
        self.intercept_ = intercept
        self.owner_ = owner
        contributions = self._raw_contributions(matrix)
        self.means_ = contributions.mean(axis=0)
        return self

    def _raw_contributions(self, matrix: np.ndarray) -> np.ndarray:
        weighted = self._design(matrix) * self.coef_[None, :]
        out = np.zeros((len(matrix), len(self.features_)))
        np.add.at(out.T, self.owner_, weighted.T)
        return out

    def margin(self, matrix: np.ndarray) -> np.ndarray:
        return self._design(matrix) @ self.coef_ + self.intercept_

    def contributions(self, matrix: np.ndarray) -> np.ndarray:
        """Per-feature log-odds, centred, with the expected value as the last column (the
        layout of LightGBM's `pred_contrib`); rows sum to `margin`."""
        centred = self._raw_contributions(matrix) - self.means_[None, :]
        bias = np.full((len(matrix), 1), self.intercept_ + float(self.means_.sum()))
        return np.hstack([centred, bias])

    # ---------------------------------------------------------------- JSON state

    def to_dict(self) -> dict[str, Any]:
        return {
            "c": self.c,
            "clip": self.clip,
            "damping": self.damping,
            "features": self.features_,
            "coef": [float(v) for v in self.coef_],
            "intercept": self.intercept_,
            "owner": [int(v) for v in self.owner_],
            "means": [float(v) for v in self.means_],
        }

    @classmethod
    def from_dict(cls, state: dict[str, Any]) -> LinearStart:
        linear = cls(c=float(state["c"]), clip=float(state["clip"]),
                     damping=float(state.get("damping", 1.0)))
        linear.features_ = [dict(f) for f in state["features"]]
        linear.coef_ = np.asarray(state["coef"], dtype=float)
        linear.intercept_ = float(state["intercept"])
        linear.owner_ = np.asarray(state["owner"], dtype=np.int64)
        linear.means_ = np.asarray(state["means"], dtype=float)
        return linear


def _damped(z: np.ndarray, low: float, high: float, damping: float) -> np.ndarray:
    """Standardised values beyond the training range [low, high] moved towards its edge: only
    `damping` of the distance past the edge is kept (a damped trend)."""
    return np.where(z > high, high + damping * (z - high),
                    np.where(z < low, low + damping * (z - low), z))


def _logit(p: float) -> float:
    p = min(max(p, 1e-6), 1 - 1e-6)
    return float(np.log(p / (1 - p)))


def _skew(values: np.ndarray) -> float:
    std = values.std()
    return float(((values - values.mean()) ** 3).mean() / std**3) if std > 0 else 0.0


def fit_linear(
    builder: FeatureBuilder,
    x: np.ndarray,
    y: np.ndarray,
    weight: np.ndarray | None,
    *,
    c: float = 1.0,
    exclude: Sequence[str] = (),
) -> LinearStart:
    kinds: list[str] = [str(f.kind) for f in builder.features_]
    levels = [len(f.levels) for f in builder.features_]
    excluded = set(exclude)
    skip = [j for j, name in enumerate(builder.feature_names_) if name in excluded]
    return LinearStart(c=c).fit(
        x, y, kinds, levels, builder.monotone_constraints_, weight, exclude=skip
    )


def choose_linear_start(
    builder: FeatureBuilder,
    x_train: np.ndarray,
    y_train: np.ndarray,
    x_valid: np.ndarray,
    y_valid: np.ndarray,
    weight: np.ndarray | None,
    drift: dict[str, Any],
    linear_c: float | str = "auto",
    linear_damping: float = 1.0,
) -> tuple[LinearStart, dict[str, Any]]:
    """The linear start fitted on the training slice, its trends chosen by validation log loss.

    A numeric field that left its training range (`drift`) is a trend the linear start may
    carry far beyond anything it was fitted on; a wrong trend then ranks a whole new period
    backwards, which no tree can undo. So the drifted fields start `held` (left out of the
    linear start; the trees see them clamped to the edge of their training range, as always)
    and are extrapolated one at a time, greedily, while each lowers the validation log loss,
    averaged over two forecast origins (see `attempt`).
    A direction the spec declares (`features.monotone`, domain knowledge) is kept: the fit may
    shrink such a field or, if it contradicts the declaration, drop it. The trees leave every
    extrapolated field (`trend`) to the linear start instead of splitting on its old range.
    Several national indicators often drift together (bank marketing: employment, euribor,
    confidence); one of them usually carries the trend and the rest add noise the next period
    punishes, which is what validation shows. The trends are chosen at TREND_SEARCH_C; then,
    with `linear_c="auto"`, the regularisation comes from LINEAR_C_GRID by the same log loss.
    Values beyond the training range extrapolate by `linear_damping` of their distance past
    it (see LEADSCORE_OPTIONS), and the trends are judged that way.
    Only the training and validation slices are read.
    """
    directions = dict(zip(builder.feature_names_, builder.monotone_constraints_, strict=True))
    drifted = [n for n in drift.get("out_of_range_fields", []) if n in directions]
    grid = LINEAR_C_GRID if linear_c == "auto" else (float(linear_c),)
    damping = float(linear_damping)
    losses: dict[str, float] = {}
    scoreable = len(y_valid) > 0 and 0 < float(np.sum(y_valid)) < len(y_valid)
    if not scoreable:  # nothing to choose with: the cautious plan, declared trends only
        declared = [n for n in drifted if directions[n]]
        held = [n for n in drifted if n not in declared]
        linear = fit_linear(builder, x_train, y_train, weight, c=grid[0], exclude=held)
        linear.damping = damping
        return linear, {"c": grid[0], "held": held, "trend": declared, "valid_log_loss": {},
                        "damping": damping}

    # Two forecast origins, as the model will run: fitted on the training slice, scored on the
    # first half of validation; refitted with that half, scored on the second. A trend that
    # only held once (the training years into the next season) does not pass both.
    half = len(y_valid) // 2
    x_later = np.vstack([x_train, x_valid[:half]])
    y_later = np.concatenate([y_train, y_valid[:half]])
    w_later = None if weight is None else np.concatenate([weight, np.ones(half)])
    origins = [(x_valid[:half], y_valid[:half]), (x_valid[half:], y_valid[half:])]
    if not all(0 < float(np.sum(y)) < len(y) for _, y in origins):
        origins = [(x_valid, y_valid)]  # too few of one class in a half: one origin only

    def attempt(c: float, extrapolated: list[str]) -> tuple[float, LinearStart]:
        held = [n for n in drifted if n not in extrapolated]
        linear = fit_linear(builder, x_train, y_train, weight, c=c, exclude=held)
        fits = [linear]
        if len(origins) == 2:
            fits.append(fit_linear(builder, x_later, y_later, w_later, c=c, exclude=held))
        loss = 0.0
        for fit, (x, y) in zip(fits, origins, strict=True):
            fit.damping = damping  # judged as it will extrapolate
            p = 1.0 / (1.0 + np.exp(-fit.margin(x)))
            loss += float(log_loss(y, np.clip(p, 1e-6, 1 - 1e-6), labels=[0, 1])) / len(fits)
        losses[f"C={c:g}, trend={'+'.join(extrapolated) or '-'}"] = loss
        return loss, linear

    # the trends first, greedily, at one moderate regularisation; then the regularisation for
    # them (a greedy search per value of C would cost four times the fits for the same choice)
    c = TREND_SEARCH_C if TREND_SEARCH_C in grid else grid[0]
    trend: list[str] = []
    loss, linear = attempt(c, trend)
    while len(trend) < len(drifted):
        trials = [(*attempt(c, [*trend, n]), n) for n in drifted if n not in trend]
        trial_loss, trial_linear, name = min(trials, key=lambda t: t[0])
        if trial_loss >= loss:
            break
        loss, linear, trend = trial_loss, trial_linear, [*trend, name]
    for other in grid:
        if other != c:
            other_loss, other_linear = attempt(other, trend)
            if other_loss < loss:
                loss, linear, c = other_loss, other_linear, other
    held = [n for n in drifted if n not in trend]
    plan = {"c": c, "held": held, "trend": trend, "valid_log_loss": losses, "damping": damping}
    log.info(
        "linear start: C=%g, damping %g; extrapolating %s; holding %s at the edge of their range",
        c,
        damping,
        ", ".join(trend) or "-",
        ", ".join(held) or "-",
    )
    return linear, plan


def tree_penalty(builder: FeatureBuilder, params: dict[str, Any], trend: Sequence[str]) -> None:
    """Keep the trees off the fields the linear start extrapolates (LightGBM `feature_penalty`
    0: their split gain is zero, so no tree ever splits on them)."""
    if not trend:
        return
    names, kept_off = builder.feature_names_, set(trend)
    given = params.get("feature_penalty") or [1.0] * len(names)
    params["feature_penalty"] = [
        0.0 if name in kept_off else float(given[j]) for j, name in enumerate(names)
    ]
