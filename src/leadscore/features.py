"""Turn lead columns into the numeric matrix the model reads; fitted on history, reused at scoring.

The encoder is the seam between training, the API and batch: all three call `transform`, so a
lead gets the same numbers wherever it is scored. Categories become integer codes that LightGBM
reads as categorical; an unseen or missing category becomes NaN (LightGBM's "missing"), never
an error. Its whole learned state is JSON, so a model bundle never needs a pickle.
"""

from __future__ import annotations

import logging
import math
import re
from collections.abc import Callable, Mapping, Sequence
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Literal, TypeAlias

import numpy as np
import pandas as pd
import pyarrow as pa
import pyarrow.compute as pc

from leadscore.config import ActivitySpec, DatasetSpec
from leadscore.data import (
    ID,
    LABEL,
    TIME,
    load_activities,
    load_conversions,
    load_dimension,
    load_leads,
    normalise_keys,
    pandera,
    validate,
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


# --------------------------------------------------------------------------- derived fields

FREE_MAIL = frozenset(
    [
        "gmail.com",
        "googlemail.com",
        "yahoo.com",
        "yahoo.co.uk",
        "yahoo.fr",
        "ymail.com",
        "hotmail.com",
        "hotmail.co.uk",
        "hotmail.fr",
        "outlook.com",
        "live.com",
        "msn.com",
        "aol.com",
        "icloud.com",
        "me.com",
        "mac.com",
        "gmx.com",
        "gmx.de",
        "gmx.net",
        "web.de",
        "mail.com",
        "mail.ru",
        "yandex.ru",
        "yandex.com",
        "protonmail.com",
        "proton.me",
        "zoho.com",
        "qq.com",
        "163.com",
        "126.com",
        "rediffmail.com",
        "libero.it",
        "orange.fr",
        "free.fr",
        "laposte.net",
        "t-online.de",
        "seznam.cz",
        "wp.pl",
        "o2.pl",
        "btinternet.com",
        "comcast.net",
        "verizon.net",
        "att.net",
        "sbcglobal.net",
    ]
)

_SENIORITY = (  # first match wins: "VP of Engineering Operations Manager" is a VP
    (
        "c_level",
        re.compile(
            r"\b(chief|ceo|cto|cfo|coo|cmo|cio|cro|ciso|founder|co-founder|"
            r"owner|president|partner|managing director)\b"
        ),
    ),
    ("vp", re.compile(r"\b(vp|svp|evp|vice president|vice-president)\b")),
    ("director", re.compile(r"\b(director|head of|head)\b")),
    ("manager", re.compile(r"\b(manager|mgr|lead|supervisor|principal)\b")),
    ("intern", re.compile(r"\b(intern|internship|student|trainee|apprentice)\b")),
)
_DEPARTMENT = (
    (
        "sales",
        re.compile(
            r"\b(sales|account executive|business development|bdr|sdr|cro|"
            r"account manager|revenue)\b"
        ),
    ),
    ("marketing", re.compile(r"\b(marketing|cmo|growth|brand|content|seo|demand gen)\b")),
    (
        "engineering",
        re.compile(
            r"\b(engineer|engineering|developer|software|cto|it|devops|"
            r"technology|technical|architect|data|ciso|security)\b"
        ),
    ),
    (
        "finance",
        re.compile(
            r"\b(finance|financial|cfo|accounting|accountant|controller|"
            r"procurement|purchasing)\b"
        ),
    ),
    ("operations", re.compile(r"\b(operations|coo|ops|logistics|supply chain)\b")),
    ("hr", re.compile(r"\b(hr|human resources|people|talent|recruiter|recruiting)\b")),
    ("product", re.compile(r"\b(product)\b")),
    (
        "executive",
        re.compile(
            r"\b(ceo|founder|co-founder|owner|president|managing director|"
            r"general manager)\b"
        ),
    ),
)


def seniority(title: str) -> str:
    text = title.lower()
    for label, pattern in _SENIORITY:
        if pattern.search(text):
            return label
    return "individual"


def department(title: str) -> str:
    text = title.lower()
    for label, pattern in _DEPARTMENT:
        if pattern.search(text):
            return label
    return "other"


def email_domain_type(email: str) -> str:
    """business / free / invalid: the address itself never leaves this function."""
    _, at, domain = email.strip().lower().rpartition("@")
    if not at or "." not in domain or not _ or " " in domain:
        return "invalid"
    return "free" if domain in FREE_MAIL else "business"


def _domain_type(domain: str) -> str:
    if domain == "@":
        return "invalid"
    return "free" if domain in FREE_MAIL else "business"


TEXT_DERIVATIONS: dict[str, Callable[[str], str]] = {
    "seniority": seniority,
    "department": department,
    "email_domain": email_domain_type,
}


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
            array = _email_domains(array)
        encoded = (
            pc.dictionary_encode(array).combine_chunks()
            if isinstance(array, pa.ChunkedArray)
            else pc.dictionary_encode(array)
        )
        func = TEXT_DERIVATIONS[str(feature.derive)]
        if feature.derive == "email_domain":
            func = _domain_type  # the dictionary holds domains ("@" for an invalid address)
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


def _email_domains(array: pa.Array) -> pa.Array:
    """Each address's domain, lower-cased ("@" for an invalid address, null for none): the rule
    of `email_domain_type` (after the last "@", a "." and no space in it, something before it).

    Found with numpy on the string buffers (the positions of the last "@", "." and " " in each
    value) rather than a regular expression per address: 0.5 s per 1M addresses against 1.9 s,
    a quarter of a batch job's encoding time.
    """
    if isinstance(array, pa.ChunkedArray):
        array = array.combine_chunks()
    if array.offset:
        array = pa.concat_arrays([array])  # buffers starting at the first value
    n = len(array)
    wide = pa.types.is_large_string(array.type)
    validity, offset_buffer, data = array.buffers()
    offsets = np.frombuffer(offset_buffer, dtype=np.int64 if wide else np.int32, count=n + 1)
    raw = np.frombuffer(data, dtype=np.uint8)[: offsets[-1]] if data else np.zeros(0, np.uint8)
    start, end = offsets[:-1].astype(np.int64), offsets[1:].astype(np.int64)

    def last(byte: int) -> np.ndarray:
        """The position of each value's last `byte` (-1: none)."""
        where = np.flatnonzero(raw == byte)
        if not len(where):
            return np.full(n, -1, dtype=np.int64)
        k = np.searchsorted(where, end) - 1
        found = np.where(k >= 0, where[np.maximum(k, 0)], -1)
        return np.where(found >= start, found, -1)

    at, dot, space = last(ord("@")), last(ord(".")), last(ord(" "))
    valid = (at > start) & (dot > at) & (space < at)
    first = np.where(valid, at + 1, end)
    # each value split in two over the same bytes, no copy: value 2i its head (up to the "@"),
    # value 2i + 1 its domain; Arrow's take then copies the domains alone (a numpy gather of
    # every domain byte through an index array cost three times as much)
    halves = np.empty(2 * n + 1, dtype=np.int64)
    halves[0:-1:2], halves[1::2], halves[-1] = start, first, end[-1] if n else 0
    split = pa.LargeStringArray.from_buffers(2 * n, pa.py_buffer(halves), pa.py_buffer(raw))
    domains = pc.take(split, pa.array(np.arange(1, 2 * n, 2, dtype=np.int64)))
    domains = pc.cast(pc.utf8_lower(domains), pa.string())
    invalid = pc.if_else(pc.is_valid(array), pa.scalar("@"), pa.scalar(None, pa.string()))
    return pc.if_else(pa.array(valid), domains, invalid)


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


@dataclass
class TableReport:
    """What happened to every lead on the way to the training table, with reasons."""

    leads: int = 0
    rows: int = 0
    labelled: int = 0
    positives: int = 0
    excluded: dict[str, int] = field(default_factory=dict)
    notes: dict[str, Any] = field(default_factory=dict)

    def exclude(self, reason: str, count: int) -> None:
        if count:
            self.excluded[reason] = self.excluded.get(reason, 0) + int(count)

    def as_dict(self) -> dict[str, Any]:
        return {
            "leads": self.leads,
            "rows": self.rows,
            "labelled": self.labelled,
            "positives": self.positives,
            "excluded": dict(self.excluded),
            **self.notes,
        }


def aggregate_activities(
    activities: pa.Table,
    lead_ids: Sequence[str],
    as_of: np.ndarray,
    spec: ActivitySpec,
    types: Sequence[str] | None = None,
) -> tuple[pd.DataFrame, list[str], dict[str, int]]:
    """Per-lead activity features counting only what happened before each lead's as-of time.

    Vectorised with integer codes and `np.bincount` (20M activities in seconds): counts per type
    and window, total per window, days since the last activity, first- and last-touch channel.
    Returns the features, the activity types used, and counts of activities left out.
    """
    n = len(lead_ids)
    idx_arr = pc.index_in(activities.column("id"), value_set=pa.array(list(lead_ids), pa.string()))
    idx = idx_arr.to_numpy(zero_copy_only=False)
    known = ~np.isnan(idx) if idx.dtype.kind == "f" else np.ones(len(idx), bool)
    idx = np.nan_to_num(idx, nan=-1).astype(np.int64)
    ts = activities.column("ts").cast(pa.int64()).to_numpy(zero_copy_only=False)
    as_of_ns = as_of.astype("datetime64[ns]").astype(np.int64)
    before = np.zeros(len(idx), bool)
    before[known] = ts[known] < as_of_ns[idx[known]]
    skipped = {
        "activities for leads not in the lead table": int((~known).sum()),
        "activities at or after the lead's as-of time": int((known & ~before).sum()),
    }
    idx, ts = idx[before], ts[before]
    type_col = activities.column("type").filter(pa.array(before))
    if types is None:
        counts = pc.value_counts(type_col).to_pylist()
        types = sorted(
            str(c["values"])
            for c in counts
            if c["values"] is not None and c["counts"] >= spec.min_count
        )
    type_codes = pc.index_in(type_col, value_set=pa.array(list(types), pa.string()))
    tcode = np.nan_to_num(type_codes.to_numpy(zero_copy_only=False), nan=-1).astype(np.int64)
    age_days = (as_of_ns[idx] - ts) / 86_400e9

    out: dict[str, np.ndarray] = {}
    n_types = len(types)
    typed = tcode >= 0
    for window in spec.windows:
        in_window = age_days <= window  # [as_of - window, as_of)
        total = np.bincount(idx[in_window], minlength=n).astype("float64")
        out[f"{ACTIVITY_PREFIX}total.{window}d"] = total
        mask = in_window & typed
        flat = np.bincount(idx[mask] * n_types + tcode[mask], minlength=n * n_types)
        grid = flat.reshape(n, n_types).astype("float64") if n_types else np.zeros((n, 0))
        for t, kind in enumerate(types):
            out[activity_count_column(kind, window)] = grid[:, t]

    since = np.full(n, np.nan)
    first_channel = np.full(n, None, dtype=object)
    last_channel = np.full(n, None, dtype=object)
    if len(idx):
        order = _lead_time_order(idx, ts)
        sorted_idx = idx[order]
        starts = np.flatnonzero(np.r_[True, sorted_idx[1:] != sorted_idx[:-1]])
        ends = np.r_[starts[1:], len(sorted_idx)] - 1
        leads_with = sorted_idx[starts]
        since[leads_with] = age_days[order[ends]]
        if "channel" in activities.column_names:
            channel = activities.column("channel").filter(pa.array(before))
            encoded = pc.dictionary_encode(channel).combine_chunks()
            names = np.asarray(encoded.dictionary.to_pylist() + [None], dtype=object)
            codes = encoded.indices.fill_null(len(names) - 1).to_numpy(zero_copy_only=False)
            first_channel[leads_with] = names[codes[order[starts]]]
            last_channel[leads_with] = names[codes[order[ends]]]
    out[f"{ACTIVITY_PREFIX}days_since_last"] = since
    frame = pd.DataFrame(out)
    if "channel" in activities.column_names:
        frame[CHANNEL_COLUMNS[0]] = first_channel
        frame[CHANNEL_COLUMNS[1]] = last_channel
    return frame, list(types), skipped


def table_schema(columns: Sequence[str]) -> pandera.DataFrameSchema:
    """The contract of the built table: unique ids, 0/1/unlabelled outcome, counts ≥ 0."""
    checks: dict[str, pandera.Column] = {
        ID: pandera.Column(str, nullable=False, unique=True),
        LABEL: pandera.Column(float, pandera.Check.isin([0.0, 1.0]), nullable=True),
    }
    for column in columns:
        if column.startswith(ACTIVITY_PREFIX) and column not in CHANNEL_COLUMNS:
            checks[column] = pandera.Column(float, pandera.Check.ge(0), nullable=True)
    return pandera.DataFrameSchema(checks, strict=False)


def _lead_time_order(idx: np.ndarray, ts: np.ndarray) -> np.ndarray:
    """Positions sorted by (lead, time), skipping the sorts an export already did: logs usually
    come sorted by time, or by lead then time (a 20M-row lexsort costs seconds)."""
    same_lead = idx[1:] == idx[:-1]
    if np.all(idx[1:] >= idx[:-1]) and np.all(ts[1:][same_lead] >= ts[:-1][same_lead]):
        return np.arange(len(idx))
    if np.all(ts[1:] >= ts[:-1]):
        return np.argsort(idx, kind="stable")
    return np.lexsort((ts, idx))


def build_table(
    spec: DatasetSpec,
    *,
    data_path: Path | None = None,
    scoring_time: pd.Timestamp | Literal["cutoff"] | None = None,
    activity_types: Sequence[str] | None = None,
    engine: str | None = None,
) -> tuple[pd.DataFrame, TableReport]:
    """The training table: one row per usable lead, as of the moment it would have been scored.

    With `scoring_time` (a timestamp, or "cutoff" for the data's latest timestamp), the table of
    leads to score instead: every lead, as of that moment, labels left as they are.
    `engine` aggregates the activity log: local (in memory, here), duckdb (SQL over the files,
    spilling to disk) or spark; default from `feature_engines.choose_engine`. Same table from
    each.
    """
    from leadscore import feature_engines

    engine = feature_engines.choose_engine(spec, engine)
    leads, load_report = load_leads(spec, data_path)
    report = TableReport(leads=len(leads))
    for reason, count in load_report.unusable.items():
        report.notes.setdefault("load", {})[reason] = count
    has_clock = spec.leads.created_at is not None
    created = leads[TIME].to_numpy(dtype="datetime64[ns]") if has_clock else None

    conversions = None
    if spec.outcome.table is not None:
        conversions = load_conversions(spec)
        # Arrow's hash set: pandas 3's string isin builds a scalar per id (seconds at 1M leads)
        known = pc.is_in(
            pa.array(conversions[ID].to_numpy(dtype=object), pa.string()),
            value_set=pa.array(leads[ID].to_numpy(dtype=object), pa.string()),
        )
        unknown = ~known.to_numpy(zero_copy_only=False)
        report.notes["conversions_for_unknown_leads"] = int(unknown.sum())
        converted_at = leads[ID].map(conversions.set_index(ID)["converted_at"])
        leads["_converted_at"] = converted_at.to_numpy(dtype="datetime64[ns]")

    # the SQL engines read the log where it lies: its latest time comes with the aggregation,
    # or from a scan of its time column when scoring as of the cut-off needs it first
    in_sql = engine != "local" and spec.activities is not None and created is not None
    activities = (
        load_activities(spec) if spec.activities is not None and not in_sql else None
    )
    latest = _latest(activities)
    if in_sql and scoring_time == "cutoff" and not spec.cutoff:
        latest = feature_engines.latest_activity(engine, spec)
    cutoff = _cutoff(spec, leads, latest)

    if scoring_time == "cutoff":
        scoring_time = cutoff if cutoff is not None else pd.Timestamp.now()
    if created is not None:
        if scoring_time is not None:
            leads["_as_of"] = np.full(len(leads), np.datetime64(scoring_time, "ns"))
        else:
            leads["_as_of"] = created + np.timedelta64(int(spec.as_of_days * 86_400e9), "ns")
    sql_result = None
    if in_sql:
        sql_result = feature_engines.aggregate(
            engine, spec, leads[ID].tolist(), leads["_as_of"].to_numpy(), activity_types
        )
        cutoff = _cutoff(spec, leads, sql_result.latest)
    report.notes["cutoff"] = str(cutoff) if cutoff is not None else None
    if conversions is not None and created is not None:
        _label_from_conversions(spec, leads, created, cutoff)

    for dim in spec.dimensions:
        leads = _join_dimension(spec, dim, leads, report)

    if sql_result is not None:
        aggregates, types, skipped = sql_result.frame, sql_result.types, sql_result.skipped
    elif activities is not None and spec.activities is not None and created is not None:
        aggregates, types, skipped = aggregate_activities(
            activities,
            leads[ID].tolist(),
            leads["_as_of"].to_numpy(),
            spec.activities,
            activity_types,
        )
    if spec.activities is not None and created is not None:
        report.notes["activity_types"] = types
        report.notes["activities_skipped"] = skipped
        leads = pd.concat([leads.reset_index(drop=True), aggregates], axis=1)

    if scoring_time is None:
        leads = _training_rows(spec, leads, cutoff, report)
    validate(table_schema(list(leads.columns)), leads, spec.name)
    report.rows = len(leads)
    report.labelled = int(leads[LABEL].notna().sum())
    report.positives = int((leads[LABEL] == 1).sum())
    return leads.reset_index(drop=True), report


def export_table(table: pd.DataFrame, spec: DatasetSpec, output: Path, with_label: bool) -> Path:
    """Write a built table with the spec's own id column name, ready for `leadscore score`."""
    id_name = spec.leads.id or "lead_id"
    out = table.drop(columns=[c for c in table.columns if c.startswith("_")])
    out.insert(0, id_name, table[ID].astype(str).to_numpy())
    if with_label:
        out["label"] = table[LABEL].to_numpy()
    output.parent.mkdir(parents=True, exist_ok=True)
    if output.suffix.lower() == ".csv":
        out.to_csv(output, index=False)
    elif output.suffix.lower() in {".parquet", ".pq"}:
        out.to_parquet(output, index=False)
    else:
        raise DataError(f"{output}: output must end in .parquet or .csv")
    return output


def _latest(activities: pa.Table | None) -> pd.Timestamp | None:
    if activities is None or not activities.num_rows:
        return None
    return pd.Timestamp(pc.max(activities.column("ts")).as_py())


def _cutoff(
    spec: DatasetSpec, leads: pd.DataFrame, latest_activity: pd.Timestamp | None
) -> pd.Timestamp | None:
    if spec.cutoff:
        return pd.Timestamp(spec.cutoff)
    if spec.leads.created_at is None:
        return None
    stamps = [leads[TIME].max()]
    if "_converted_at" in leads:
        stamps.append(leads["_converted_at"].max())
    if latest_activity is not None:
        stamps.append(latest_activity)
    return max(pd.Timestamp(s) for s in stamps if s is not None and not pd.isna(s))


def _label_from_conversions(
    spec: DatasetSpec, leads: pd.DataFrame, created: np.ndarray, cutoff: pd.Timestamp | None
) -> None:
    """Converted (within the horizon) → 1; otherwise 0 once the horizon has passed by the
    cut-off; a younger unconverted lead stays unlabelled (it may still convert)."""
    converted_at = leads["_converted_at"].to_numpy(dtype="datetime64[ns]")
    converted = ~np.isnat(converted_at)
    horizon = spec.outcome.horizon_days
    label = np.zeros(len(leads))
    if horizon is None:
        label[converted] = 1.0
    else:
        end = created + np.timedelta64(int(horizon * 86_400e9), "ns")
        label[converted & (converted_at <= end)] = 1.0
        if cutoff is not None:
            young = ~(label == 1) & (end > np.datetime64(cutoff, "ns"))
            label[young] = np.nan
    leads[LABEL] = label


def _join_dimension(
    spec: DatasetSpec, dim: Any, leads: pd.DataFrame, report: TableReport
) -> pd.DataFrame:
    table = load_dimension(spec, dim)
    keys = normalise_keys(leads[dim.lead_key], dim.normalise_keys)
    matched = keys.isin(table["_key"])
    report.notes.setdefault("unmatched_keys", {})[dim.name] = int((keys.notna() & ~matched).sum())
    joined = pd.DataFrame({"_key": keys.to_numpy(dtype=object)}).merge(
        table, on="_key", how="left"
    )
    joined = joined.drop(columns="_key")
    joined.index = leads.index
    return pd.concat([leads, joined], axis=1)


def _training_rows(
    spec: DatasetSpec, leads: pd.DataFrame, cutoff: pd.Timestamp | None, report: TableReport
) -> pd.DataFrame:
    """Drop, and count, the leads that cannot be training examples at their as-of time."""
    keep = np.ones(len(leads), bool)
    if "_as_of" in leads and cutoff is not None:
        unseen = leads["_as_of"].to_numpy() > np.datetime64(cutoff, "ns")
        report.exclude(
            "as-of time after the data cut-off (too recent to score yet)",
            int((keep & unseen).sum()),
        )
        keep &= ~unseen
    if "_converted_at" in leads and "_as_of" in leads:
        early = (
            leads["_converted_at"].to_numpy(dtype="datetime64[ns]") < leads["_as_of"].to_numpy()
        )
        early &= ~np.isnat(leads["_converted_at"].to_numpy(dtype="datetime64[ns]"))
        report.exclude(
            "converted before its as-of time (never scored then)", int((keep & early).sum())
        )
        keep &= ~early
    if spec.outcome.horizon_days is not None:
        young = leads[LABEL].isna().to_numpy() & keep
        report.exclude(
            f"younger than the {spec.outcome.horizon_days}-day horizon at the cut-off",
            int(young.sum()),
        )
    return leads[keep]
