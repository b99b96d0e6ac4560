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
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from leadscore.config import DatasetSpec
from leadscore.derive import (
    TEXT_DERIVATIONS,
    domain_type,
    email_domains,
)
from leadscore.errors import DataError
from leadscore.privacy import mark_contact_details

log = logging.getLogger(__name__)

# Below this many rows a Python dict lookup beats building Arrow arrays (a single API lead
# scores in microseconds instead of the ~1 ms an Arrow/pandas round trip costs).
SMALL_BATCH = 64


@dataclass(frozen=True)
class Feature:
    """One model input. `source` is the business field reasons report it under; `inputs` are the
    raw columns it is computed from (one, or several for a derived count)."""

    name: str
    kind: Literal["categorical", "numeric"]
    source: str
    levels: tuple[str, ...] = ()
    derive: str | None = None
    inputs: tuple[str, ...] = ()

    @property
    def columns(self) -> tuple[str, ...]:
        return self.inputs or (self.source,)


Columns: TypeAlias = pd.DataFrame | pa.Table | Mapping[str, Sequence[Any]]


class FeatureBuilder:
    """Learns category levels from training leads, then encodes any leads the same way."""

    def __init__(
        self,
        categorical: Sequence[str] = (),
        numeric: Sequence[str] = (),
        missing_values: Sequence[str] = ("",),
        max_levels: int = 200,
        min_level_count: int = 3,
        derive: Mapping[str, Any] | None = None,
        monotone: Mapping[str, int] | None = None,
        exclude: Sequence[str] = (),
    ) -> None:
        self.categorical = list(categorical)
        self.numeric = list(numeric)
        self.missing_values = list(missing_values)
        self.max_levels = max_levels
        self.min_level_count = min_level_count
        self.derive = dict(derive or {})
        self.monotone = dict(monotone or {})
        self.exclude = list(exclude)

    def _planned(self) -> list[Feature]:
        """Every feature before levels are learned: plain columns, then derived fields."""
        plan = [Feature(c, "categorical", c) for c in self.categorical]
        plan += [Feature(c, "numeric", c) for c in self.numeric]
        d = self.derive
        if d.get("job_title"):
            src = d["job_title"]
            plan.append(
                Feature(f"{src}.seniority", "categorical", src, derive="seniority", inputs=(src,))
            )
            plan.append(
                Feature(
                    f"{src}.department", "categorical", src, derive="department", inputs=(src,)
                )
            )
        if d.get("email"):
            src = d["email"]
            plan.append(
                Feature(f"{src}.domain", "categorical", src, derive="email_domain", inputs=(src,))
            )
        if d.get("phone"):
            src = d["phone"]
            plan.append(Feature(f"{src}.present", "numeric", src, derive="present", inputs=(src,)))
        if d.get("bant"):
            cols = tuple(d["bant"])
            plan.append(
                Feature(
                    "bant_answered", "numeric", "BANT answered", derive="count_filled", inputs=cols
                )
            )
        excluded = set(self.exclude)
        return [f for f in plan if f.name not in excluded and f.source not in excluded]

    # ------------------------------------------------------------------ fit

    def fit(self, leads: pd.DataFrame) -> FeatureBuilder:
        """Keep the levels seen at least `min_level_count` times (rarer ones act as missing:
        a level seen twice teaches the trees noise, not signal).

        A value that looks like an e-mail address or a phone number is never a level, whatever
        the spec says (levels are written to `bundle.json` and MLflow); a column that held one
        is remembered in `redacted_`, so reasons show its level, never the raw text.
        """
        self.missing_ = set(self.missing_values)
        features: list[Feature] = []
        redacted: list[str] = []
        for planned in self._planned():
            if planned.kind == "numeric":
                features.append(planned)
                continue
            if planned.derive:
                raw = self._derived_text(planned, leads, len(leads))
                values = pd.Series(raw.to_pylist(), dtype=object)
            else:
                values = (
                    leads[planned.source]
                    if planned.source in leads
                    else pd.Series([], dtype=object)
                )
            counts = values.dropna().astype(str).str.strip().value_counts()
            if not planned.derive:
                personal = mark_contact_details(counts.index)
                if personal.any():
                    log.info(
                        "categorical %r: %d distinct value(s) look like an e-mail address or a "
                        "phone number; never stored as levels, never shown in reasons",
                        planned.name,
                        int(personal.sum()),
                    )
                    redacted.append(planned.source)
                    counts = counts[~personal]
            counts = counts[
                (counts >= self.min_level_count) & ~counts.index.isin(self.missing_values)
            ]
            levels = tuple(sorted(counts.index[: self.max_levels]))
            if not levels:
                log.warning(
                    "categorical %r has no level seen %d+ times",
                    planned.name,
                    self.min_level_count,
                )
            features.append(
                Feature(
                    planned.name,
                    "categorical",
                    planned.source,
                    levels,
                    planned.derive,
                    planned.inputs,
                )
            )
        unknown = sorted(set(self.monotone) - {f.name for f in features if f.kind == "numeric"})
        if unknown:
            log.warning("monotone constraints name %s, which are not numeric features", unknown)
        self.features_ = features
        self.redacted_ = redacted
        self._index()
        return self

    @property
    def monotone_constraints_(self) -> list[int]:
        return [int(self.monotone.get(f.name, 0)) for f in self.features_]

    @property
    def input_kinds_(self) -> dict[str, str]:
        """Raw column → "numeric" | "categorical": what a caller sends (text for derivations)."""
        kinds: dict[str, str] = {}
        for f in self.features_:
            for column in f.columns:
                kind = f.kind if not f.derive else "categorical"
                kinds.setdefault(column, kind)
        return kinds

    @property
    def sensitive_inputs_(self) -> set[str]:
        """Raw columns that are PII (email, phone): read to derive, never shown in a reason;
        and categorical columns whose training values held contact details (`redacted_`)."""
        derived = {self.derive[k] for k in ("email", "phone") if self.derive.get(k)}
        return derived | set(self.redacted_)

    def _index(self) -> None:
        self.lookup_ = {
            f.name: {lvl: float(i) for i, lvl in enumerate(f.levels)} for f in self.features_
        }
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
        """The raw columns a caller supplies, in model order."""
        return list(dict.fromkeys(c for f in self.features_ for c in f.columns))

    @property
    def sources_(self) -> list[str]:
        """The business fields reasons are reported under, in model order."""
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
            if feature.derive:
                matrix[:, j] = self._derived(feature, leads, n, small, names)
                continue
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

    def _derived(self, feature: Feature, leads: Any, n: int, small: bool, names: set[str]) -> Any:
        if feature.derive == "count_filled":
            total = np.zeros(n)
            for column in feature.inputs:
                if column in names:
                    total += self._filled(leads[column], small)
            return total
        if feature.derive == "present":
            if feature.inputs[0] not in names:
                return np.zeros(n)
            return self._filled(leads[feature.inputs[0]], small)
        if small:
            values = list(leads[feature.inputs[0]]) if feature.inputs[0] in names else [None] * n
            func = TEXT_DERIVATIONS[str(feature.derive)]
            derived = [None if _is_missing(v, self.missing_) else func(str(v)) for v in values]
            return self._codes_small(feature, derived)
        return self._codes_arrow(feature, self._derived_text(feature, leads, n))

    def _derived_text(self, feature: Feature, leads: Any, n: int) -> pa.Array:
        """A derived text column, computed once per distinct value (job titles repeat a lot)."""
        names = set(leads.column_names) if isinstance(leads, pa.Table) else set(leads.keys())
        if feature.inputs[0] not in names:
            return pa.nulls(n, pa.string())
        array = _to_arrow(leads[feature.inputs[0]])
        if pa.types.is_dictionary(array.type):
            # a dictionary column (batch reads job titles so): each distinct title derived
            # once, and the result kept as a dictionary over the same indices, so the codes
            # are looked up per distinct value too (`_codes_arrow`)
            values = self._derived_text(feature, {feature.inputs[0]: array.dictionary},
                                        len(array.dictionary))
            return pa.DictionaryArray.from_arrays(array.indices, values)
        if not pa.types.is_string(array.type):
            array = pc.cast(array, pa.string())
        array = pc.utf8_trim_whitespace(array)
        missing = pa.array(sorted(self.missing_ | {""}), type=pa.string())
        array = pc.if_else(pc.is_in(array, value_set=missing), pa.scalar(None, pa.string()), array)
        if feature.derive == "email_domain":
            # addresses are nearly all distinct: classify their few distinct domains instead
            # (same rule as email_domain_type, checked against it in the tests)
            array = email_domains(array)
        encoded = (
            pc.dictionary_encode(array).combine_chunks()
            if isinstance(array, pa.ChunkedArray)
            else pc.dictionary_encode(array)
        )
        func = TEXT_DERIVATIONS[str(feature.derive)]
        if feature.derive == "email_domain":
            func = domain_type  # the dictionary holds domains ("@" for an invalid address)
        mapped = pa.array([func(v) for v in encoded.dictionary.to_pylist()], type=pa.string())
        return pc.take(mapped, encoded.indices)

    def _filled(self, column: Any, small: bool) -> np.ndarray:
        if small:
            return np.array([0.0 if _is_missing(v, self.missing_) else 1.0 for v in column])
        array = _to_arrow(column)
        if pa.types.is_dictionary(array.type):
            # each distinct value judged once (a blank or a missing marker is not filled, as
            # in a text column), a null row not filled
            per_value = np.append(self._filled(array.dictionary, False), 0.0)
            indices = pc.fill_null(array.indices, len(array.dictionary))
            return per_value[indices.to_numpy(zero_copy_only=False)]
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            array = pc.utf8_trim_whitespace(array)
            missing = pa.array(sorted(self.missing_ | {""}), type=pa.string())
            filled = pc.and_(pc.is_valid(array), pc.invert(pc.is_in(array, value_set=missing)))
        else:
            filled = pc.is_valid(array)
            if pa.types.is_floating(array.type):
                filled = pc.and_(filled, pc.invert(pc.is_nan(array)))
        return filled.to_numpy(zero_copy_only=False).astype("float64")

    def _codes_small(self, feature: Feature, values: list[Any]) -> list[float]:
        index = self.lookup_[feature.name]
        return [_code_of(index, value) for value in values]

    def _numbers_small(self, feature: Feature, values: list[Any]) -> list[float]:
        missing = self.missing_
        return [_number_of(feature, value, missing) for value in values]

    def transform_one(self, lead: Mapping[str, Any]) -> np.ndarray:
        """One lead (a dict keyed by field) as a (1, features) matrix: `transform`'s small path
        value by value (the same `_code_of`, `_number_of` and `_is_missing`), without the
        columns, the per-feature lists and the array writes one API lead paid for (~25 µs of a
        ~60 µs scoring). An absent field is missing, as an absent column is in `transform`."""
        missing = self.missing_
        row: list[float] = []
        for feature in self.features_:
            derive = feature.derive
            if derive is None:
                value = lead.get(feature.source)
                if feature.kind == "categorical":
                    row.append(_code_of(self.lookup_[feature.name], value))
                else:
                    row.append(_number_of(feature, value, missing))
            elif derive == "count_filled":
                total = 0.0
                for column in feature.inputs:
                    total += 0.0 if _is_missing(lead.get(column), missing) else 1.0
                row.append(total)
            elif derive == "present":
                row.append(0.0 if _is_missing(lead.get(feature.inputs[0]), missing) else 1.0)
            else:
                value = lead.get(feature.inputs[0])
                derived = TEXT_DERIVATIONS[derive]
                text = None if _is_missing(value, missing) else derived(str(value))
                row.append(_code_of(self.lookup_[feature.name], text))
        return np.array([row], dtype=np.float64)

    def _codes_arrow(self, feature: Feature, array: pa.Array) -> np.ndarray:
        if pa.types.is_dictionary(array.type):
            # a dictionary column (Parquet written from pandas categories, say): its few
            # distinct values are looked up once and the codes taken through its indices,
            # rather than every row decoded to text, trimmed and looked up again
            levels = self._codes_arrow(feature, array.dictionary)
            codes = np.append(levels, np.nan)  # the last slot: a null row
            indices = array.indices.to_numpy(zero_copy_only=False)
            if array.null_count:
                indices = np.where(array.is_valid().to_numpy(zero_copy_only=False),
                                   np.nan_to_num(indices, nan=0.0), len(levels)).astype(np.int64)
            return codes[indices]
        if not pa.types.is_string(array.type) and not pa.types.is_large_string(array.type):
            array = pc.cast(array, pa.string())
        array = pc.utf8_trim_whitespace(array)
        codes = pc.index_in(array, value_set=self.level_arrays_[feature.name])
        return codes.to_numpy(zero_copy_only=False).astype("float64")  # nulls become NaN

    def _numbers_arrow(self, feature: Feature, array: pa.Array) -> np.ndarray:
        if pa.types.is_string(array.type) or pa.types.is_large_string(array.type):
            array = pc.utf8_trim_whitespace(array)
            missing = pa.array(sorted(self.missing_), type=pa.string())
            array = pc.if_else(
                pc.is_in(array, value_set=missing), pa.scalar(None, pa.string()), array
            )
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
                "derive": self.derive,
                "monotone": self.monotone,
                "exclude": self.exclude,
            },
            "features": [
                {**asdict(f), "levels": list(f.levels), "inputs": list(f.inputs)}
                for f in self.features_
            ],
            "redacted": list(self.redacted_),
        }

    @classmethod
    def from_dict(cls, state: Mapping[str, Any]) -> FeatureBuilder:
        builder = cls(**state["params"])
        builder.features_ = [
            Feature(
                f["name"],
                f["kind"],
                f["source"],
                tuple(f["levels"]),
                f.get("derive"),
                tuple(f.get("inputs", ())),
            )
            for f in state["features"]
        ]
        builder.redacted_ = list(state.get("redacted", []))  # bundles from before it: none
        builder._index()
        return builder


def _code_of(index: Mapping[str, float], value: Any) -> float:
    """A category's code (its level's position), NaN for a missing value or an unseen level."""
    if value is None or (isinstance(value, float) and math.isnan(value)):
        return math.nan
    return index.get(str(value).strip(), math.nan)


def _number_of(feature: Feature, value: Any, missing: set[str]) -> float:
    """A numeric value as a float; text is read as a number, a missing marker is NaN."""
    if value is None:
        return math.nan
    if isinstance(value, str):
        text = value.strip()
        if text in missing or text == "":
            return math.nan
        try:
            return float(text)
        except ValueError:
            raise DataError(f"field {feature.source!r} should be a number") from None
    return float(value)


def _is_missing(value: Any, missing: set[str]) -> bool:
    if value is None:
        return True
    if isinstance(value, float):
        return math.isnan(value)
    if isinstance(value, str):
        text = value.strip()
        return text == "" or text in missing
    return False


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


# --------------------------------------------------------------------------- the training table

ACTIVITY_PREFIX = "activity."
CHANNEL_COLUMNS = (f"{ACTIVITY_PREFIX}first_channel", f"{ACTIVITY_PREFIX}last_channel")


def activity_count_column(kind: str, window: int) -> str:
    return f"{ACTIVITY_PREFIX}{kind}.{window}d"


def builder_for(spec: DatasetSpec, table: pd.DataFrame | None = None) -> FeatureBuilder:
    """The (unfitted) encoder a spec asks for: its columns, joined dimension columns, activity
    aggregates found in the training table, derived fields; minus `drop` (which the leak audit
    extends)."""
    columns = list(table.columns) if table is not None else []
    categorical = list(spec.features.categorical)
    numeric = list(spec.features.numeric)
    for dim in spec.dimensions:
        categorical += [f"{dim.name}.{c}" for c in dim.categorical]
        numeric += [f"{dim.name}.{c}" for c in dim.numeric]
    monotone: dict[str, int] = dict(spec.features.monotone)
    if spec.activities is not None:
        generated = [c for c in columns if c.startswith(ACTIVITY_PREFIX)]
        categorical += [c for c in generated if c in CHANNEL_COLUMNS]
        numeric += [c for c in generated if c not in CHANNEL_COLUMNS]
        for kinds, sign in ((spec.activities.positive, 1), (spec.activities.negative, -1)):
            for kind in kinds:
                for window in spec.activities.windows:
                    monotone.setdefault(activity_count_column(kind, window), sign)
    dropped = set(spec.drop)
    derive = spec.derive.model_dump()
    return FeatureBuilder(
        categorical=[c for c in categorical if c not in dropped],
        numeric=[c for c in numeric if c not in dropped],
        missing_values=spec.leads.missing_values,
        derive=derive,
        monotone=monotone,
        exclude=sorted(dropped),
    )
