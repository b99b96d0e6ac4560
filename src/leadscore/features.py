"""Turn lead columns into the numeric matrix the model reads; fitted on history, reused at scoring.

The encoder is the seam between training, the API and batch: all three call `transform`, so a
lead gets the same numbers wherever it is scored. Categories become integer codes that LightGBM
reads as categorical; an unseen or missing category becomes NaN (LightGBM's "missing"), never
an error. Its whole learned state is JSON, so a model bundle never needs a pickle.
"""

from __future__ import annotations

import logging
import math
from collections.abc import Mapping, Sequence
from dataclasses import asdict, dataclass
from typing import Any, Literal

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from leadscore.errors import DataError

log = logging.getLogger(__name__)

# Below this many rows a Python dict lookup beats building Arrow arrays (a single API lead
# scores in microseconds instead of the ~1 ms an Arrow/pandas round trip costs).
SMALL_BATCH = 64


@dataclass(frozen=True)
class Feature:
    """One model input. `source` is the business field it comes from, which reasons report."""

    name: str
    kind: Literal["categorical", "numeric"]
    source: str
    levels: tuple[str, ...] = ()


Columns = pd.DataFrame | pa.Table | Mapping[str, Sequence[Any]]


class FeatureBuilder:
    """Learns category levels from training leads, then encodes any leads the same way."""

    def __init__(
        self,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        missing_values: Sequence[str] = ("",),
        max_levels: int = 200,
        min_level_count: int = 3,
    ) -> None:
        self.categorical = list(categorical)
        self.numeric = list(numeric)
        self.missing_values = list(missing_values)
        self.max_levels = max_levels
        self.min_level_count = min_level_count

    # ------------------------------------------------------------------ fit

    def fit(self, leads: pd.DataFrame) -> FeatureBuilder:
        """Keep the levels seen at least `min_level_count` times (rarer ones act as missing:
        a level seen twice teaches the trees noise, not signal)."""
        features: list[Feature] = []
        for name in self.categorical:
            counts = leads[name].dropna().astype(str).str.strip().value_counts()
            counts = counts[(counts >= self.min_level_count) & ~counts.index.isin(self.missing_values)]
            levels = tuple(sorted(counts.index[: self.max_levels]))
            if not levels:
                log.warning("categorical column %r has no level seen %d+ times", name, self.min_level_count)
            features.append(Feature(name, "categorical", name, levels))
        for name in self.numeric:
            features.append(Feature(name, "numeric", name))
        self.features_ = features
        self._index()
        return self

    def _index(self) -> None:
        self.lookup_ = {f.name: {lvl: float(i) for i, lvl in enumerate(f.levels)} for f in self.features_}
        self.level_arrays_ = {f.name: pa.array(f.levels, type=pa.string()) for f in self.features_}
        self.missing_ = set(self.missing_values)

    # ------------------------------------------------------------------ transform

    @property
    def feature_names_(self) -> list[str]:
        return [f.name for f in self.features_]

    @property
    def categorical_indices_(self) -> list[int]:
        return [j for j, f in enumerate(self.features_) if f.kind == "categorical"]

    @property
    def inputs_(self) -> list[str]:
        """The raw columns a caller supplies (business fields), in model order."""
        return list(dict.fromkeys(f.source for f in self.features_))

    def transform(self, leads: Columns) -> np.ndarray:
        """A float64 matrix in model order. Absent columns are all-missing, never an error."""
        if isinstance(leads, pd.DataFrame):
            n = len(leads)
        elif isinstance(leads, pa.Table):
            n = leads.num_rows
        else:
            n = len(next(iter(leads.values()))) if leads else 0
        matrix = np.full((n, len(self.features_)), np.nan)
        small = n <= SMALL_BATCH and not isinstance(leads, pa.Table)
        names = set(leads.column_names) if isinstance(leads, pa.Table) else set(leads.keys())
        for j, feature in enumerate(self.features_):
            if feature.source not in names:
                continue
            column = leads[feature.source]
            if small:
                values = list(column)
                if feature.kind == "categorical":
                    matrix[:, j] = self._codes_small(feature, values)
                else:
                    matrix[:, j] = self._numbers_small(feature, values)
            else:
                array = _to_arrow(column)
                if feature.kind == "categorical":
                    matrix[:, j] = self._codes_arrow(feature, array)
                else:
                    matrix[:, j] = self._numbers_arrow(feature, array)
        return matrix

    def _codes_small(self, feature: Feature, values: list[Any]) -> list[float]:
        index = self.lookup_[feature.name]
        out = []
        for value in values:
            if value is None or (isinstance(value, float) and math.isnan(value)):
                out.append(math.nan)
            else:
                out.append(index.get(str(value).strip(), math.nan))
        return out

    def _numbers_small(self, feature: Feature, values: list[Any]) -> list[float]:
        out = []
        for value in values:
            if value is None:
                out.append(math.nan)
            elif isinstance(value, str):
                text = value.strip()
                if text in self.missing_ or text == "":
                    out.append(math.nan)
                else:
                    try:
                        out.append(float(text))
                    except ValueError:
                        raise DataError(f"field {feature.source!r} should be a number") from None
            else:
                out.append(float(value))
        return out

    def _codes_arrow(self, feature: Feature, array: pa.Array) -> np.ndarray:
        if not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
            array = pc.cast(array, pa.string())
        array = pc.utf8_trim_whitespace(array)
        codes = pc.index_in(array, value_set=self.level_arrays_[feature.name])
        return codes.to_numpy(zero_copy_only=False).astype("float64")  # nulls become NaN

    def _numbers_arrow(self, feature: Feature, array: pa.Array) -> np.ndarray:
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            array = pc.utf8_trim_whitespace(array)
            missing = pa.array(sorted(self.missing_), type=pa.string())
            array = pc.if_else(pc.is_in(array, value_set=missing), pa.scalar(None, pa.string()), array)
            try:
                array = pc.cast(array, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise DataError(f"field {feature.source!r} should be a number") from None
        elif not pa.types.is_floating(array.type):
            try:
                array = pc.cast(array, pa.float64())
            except (pa.ArrowInvalid, pa.ArrowNotImplementedError):
                raise DataError(f"field {feature.source!r} should be a number") from None
        return array.to_numpy(zero_copy_only=False).astype("float64", copy=False)

    # ------------------------------------------------------------------ JSON state

    def to_dict(self) -> dict[str, Any]:
        return {
            "params": {
                "categorical": self.categorical,
                "numeric": self.numeric,
                "missing_values": self.missing_values,
                "max_levels": self.max_levels,
                "min_level_count": self.min_level_count,
            },
            "features": [{**asdict(f), "levels": list(f.levels)} for f in self.features_],
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> FeatureBuilder:
        builder = cls(**state["params"])
        builder.features_ = [
            Feature(f["name"], f["kind"], f["source"], tuple(f["levels"])) for f in state["features"]
        ]
        builder._index()
        return builder


def _to_arrow(column: Any) -> pa.Array:
    if isinstance(column, pa.ChunkedArray):
        return column.combine_chunks()
    if isinstance(column, pa.Array):
        return column
    if isinstance(column, pd.Series):
        if column.dtype == object:
            # object columns may mix str and numbers (a JSON batch); Arrow wants one type
            column = column.map(lambda v: v if v is None or isinstance(v, str | float) else str(v))
        try:
            return pa.Array.from_pandas(column)
        except (pa.ArrowInvalid, pa.ArrowTypeError):
            return pa.Array.from_pandas(column.astype("string"))
    try:
        return pa.array(list(column), from_pandas=True)
    except (pa.ArrowInvalid, pa.ArrowTypeError):
        return pa.array([None if v is None else str(v) for v in column], type=pa.string())
