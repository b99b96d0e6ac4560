"""Numeric values the model never saw the like of: a warning beside the score, or (outside a
spec's hard `bounds`) a refusal.

Trees extrapolate flat: a lead with `nr.employed = 0` or `age = -1e308` gets the score of the
nearest training value, which looks confident and means little. The bundle records each plain
numeric field's training range; a value *far* outside it is still scored, and its result says
so (`"nr.employed outside the training range"`). Far outside means beyond the range widened by
its own width on either side — outside [min - w, max + w] with w = max - min (w = max(|min|, 1)
for a field that was constant in training) — or infinite. A missing value is never outside.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

WARNING = "{} outside the training range"


def training_ranges(builder: Any, matrix: np.ndarray) -> dict[str, list[float]]:
    """[min, max] of each plain numeric input field over the encoded training rows (finite
    values only), as the bundle records them. `builder` is the fitted `FeatureBuilder`."""
    ranges: dict[str, list[float]] = {}
    for j, feature in enumerate(builder.features_):
        if feature.kind != "numeric" or feature.derive:
            continue
        values = matrix[:, j]
        finite = values[np.isfinite(values)]
        if finite.size:
            ranges[feature.source] = [float(finite.min()), float(finite.max())]
    return ranges


def widened(low: float, high: float) -> tuple[float, float]:
    """The interval beyond which a value is far outside the training range [low, high]."""
    width = high - low if high > low else max(abs(low), 1.0)
    return low - width, high + width


class RangeCheck:
    """The bundle's training ranges, widened, in model column order: checked per encoded row."""

    def __init__(self, names: list[str], columns: list[int], low: list[float],
                 high: list[float]) -> None:
        self.names = names
        self.columns = np.asarray(columns, dtype=np.int64)
        self.low = np.asarray(low, dtype=float)
        self.high = np.asarray(high, dtype=float)
        # the same, as Python numbers: one lead (an API request) is checked without numpy
        self.plain_ = list(zip(names, columns, low, high, strict=True))

    @classmethod
    def of(cls, builder: Any, ranges: Mapping[str, Sequence[float]]) -> RangeCheck:
        names, columns, low, high = [], [], [], []
        for j, feature in enumerate(builder.features_):
            span = ranges.get(feature.source)
            if feature.kind != "numeric" or feature.derive or not span or len(span) != 2:
                continue
            lo, hi = widened(float(span[0]), float(span[1]))
            names.append(feature.source)
            columns.append(j)
            low.append(lo)
            high.append(hi)
        return cls(names, columns, low, high)

    def warnings(self, matrix: np.ndarray) -> list[list[str]]:
        """One list per row of the encoded matrix: a warning per field far out of range."""
        n = len(matrix)
        # rows without a warning share one empty list (read, never appended to): 100k fresh
        # lists cost 0.2 s a batch chunk in allocation and the collections they set off
        none: list[str] = []
        if not self.names:
            return [none] * n
        if n == 1:  # plain Python: a third of the time numpy's per-call overhead takes here
            row = matrix[0].tolist()
            return [[WARNING.format(name) for name, j, lo, hi in self.plain_
                     if row[j] < lo or row[j] > hi]]
        out: list[list[str]] = [none] * n
        with np.errstate(invalid="ignore"):  # NaN (missing) compares false: never outside
            values = matrix[:, self.columns]
            outside = (values < self.low) | (values > self.high)
        for i, k in zip(*np.nonzero(outside), strict=True):
            row = int(i)
            if out[row] is none:
                out[row] = []
            out[row].append(WARNING.format(self.names[int(k)]))
        return out


def outside_bounds(values: np.ndarray, low: float, high: float) -> np.ndarray:
    """Which values fall outside [low, high] (both included); a missing value never does."""
    with np.errstate(invalid="ignore"):
        return (values < low) | (values > high)


def bound_reason(name: str, low: float, high: float) -> str:
    """Why a lead was refused, naming the field and its bounds (never the lead's value)."""
    return f"{name!r} is outside its bounds [{low:g}, {high:g}]"


def find_out_of_bounds(
    bounds: Mapping[str, Sequence[float]], records: Sequence[Mapping[str, Any]]
) -> list[tuple[int, str]]:
    """(lead index, field) for each numeric value of a validated lead outside its bounds."""
    problems = []
    for i, record in enumerate(records):
        for name, (low, high) in bounds.items():
            value = record.get(name)
            if isinstance(value, int | float) and value == value and not low <= value <= high:
                problems.append((i, name))
    return problems
