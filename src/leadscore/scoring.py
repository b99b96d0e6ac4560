"""The model bundle (LightGBM text + JSON, no pickle) and the one scoring function everything uses.

The API, batch rescoring, the MLflow pyfunc and Spark all call `score` / `score_records`, so a
lead gets the same probability, score, tier and reasons wherever it is scored.

Slightly past 600 lines on purpose: the bundle's loading checks, the single-row predictor and
the scoring paths are kept beside the one function they serve, so no caller can score by
another route.
"""

from __future__ import annotations

import bisect
import ctypes
import hashlib
import hmac
import json
import logging
import math
import os
import shutil
import threading
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pyarrow as pa

from leadscore.config import get_settings
from leadscore.errors import ModelError
from leadscore.features import Columns, FeatureBuilder
from leadscore.labels import FieldWords, reason_text, resolve, tier_words
from leadscore.linear_start import LinearStart
from leadscore.modelcheck import verify_model_text
from leadscore.ranges import RangeCheck
from leadscore.train import Calibrator

log = logging.getLogger(__name__)

MODEL_FILE = "model.txt"
META_FILE = "bundle.json"
FORMAT_VERSION = 1
SIGNATURE_FIELD = "signature"
SIGNATURE_PREFIX = "hmac-sha256:"
TIERS = ("A", "B", "C", "D")
SINGLE_THREAD_ROWS = 64  # LightGBM predicts this many rows or fewer on one thread
# Up to this many rows go through LightGBM's single-row API one row at a time (see RowPredictor):
# a raw score is ~3 µs of tree walking there against ~30 µs of set-up in `Booster.predict`;
# reasons (TreeSHAP, hundreds of µs a row) save their set-up on every batch up to one thread's.
ROW_API_ROWS = {"raw": 8, "contrib": SINGLE_THREAD_ROWS}


def sha256_file(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


_MISSING: Any = object()


class RowPredictor:
    """LightGBM's single-row prediction (`LGBM_BoosterPredictForMatSingleRowFast`) for one model.

    `Booster.predict` parses its parameters and builds a predictor on every call (and for
    `pred_contrib` rescans every tree), ~30 µs before the first tree is walked. Here that is done
    once per model and kind; each row then costs only its own tree walk. Same trees, same C++
    predictor, same order of additions: the results are bit-for-bit those of `Booster.predict`
    (a test holds it to that). Thread-safe: LightGBM locks the predictor during each row.
    """

    KINDS = {"raw": 1, "contrib": 3}  # C_API_PREDICT_RAW_SCORE, C_API_PREDICT_CONTRIB

    def __init__(self, booster: lgb.Booster, kind: str, lib: Any, handle: ctypes.c_void_p,
                 call: Any) -> None:
        self.booster = booster  # the model must outlive its predictor
        self.kind = kind
        self.columns = booster.num_feature()
        self.width = self.columns + 1 if kind == "contrib" else 1
        self._lib = lib
        self._handle: ctypes.c_void_p | None = handle
        self._call = call
        self._local = threading.local()  # per-thread one-row buffers, see `_row_buffers`

    @classmethod
    def create(cls, booster: lgb.Booster, kind: str) -> RowPredictor | None:
        try:
            from lightgbm.basic import _LIB as lib

            init = lib.LGBM_BoosterPredictForMatSingleRowFastInit
            lib.LGBM_BoosterPredictForMatSingleRowFast  # noqa: B018 - fails if absent
            lib.LGBM_FastConfigFree  # noqa: B018
        except (ImportError, AttributeError):
            return None
        handle = ctypes.c_void_p()
        iterations = booster.best_iteration if booster.best_iteration > 0 else -1
        status = init(booster._handle, ctypes.c_int(cls.KINDS[kind]), ctypes.c_int(0),
                      ctypes.c_int(iterations), ctypes.c_int(1),  # C_API_DTYPE_FLOAT64
                      ctypes.c_int32(booster.num_feature()), ctypes.c_char_p(b""),
                      ctypes.byref(handle))
        if status != 0 or not handle.value:
            log.debug("LightGBM's single-row predictor is unavailable; using Booster.predict")
            return None
        args = (ctypes.c_void_p, ctypes.c_void_p, ctypes.POINTER(ctypes.c_int64),
                ctypes.c_void_p)
        # a raw score (µs) keeps the GIL: handing it back and forth costs more than the walk;
        # TreeSHAP releases it, so other threads run while a worker explains a batch
        prototype = ctypes.CFUNCTYPE if kind == "contrib" else ctypes.PYFUNCTYPE
        call = prototype(ctypes.c_int, *args)(("LGBM_BoosterPredictForMatSingleRowFast", lib))
        return cls(booster, kind, lib, handle, call)

    def _row_buffers(self) -> tuple[int, int, Any, np.ndarray, np.ndarray]:
        """This thread's one-row input and output arrays and their addresses, made once: two
        `.ctypes.data` reads and two allocations cost ~7 µs, a fifth of a one-lead prediction.
        Per thread because a worker thread may predict a small batch meanwhile."""
        buffers: tuple[int, int, Any, np.ndarray, np.ndarray] | None = getattr(
            self._local, "buffers", None)
        if buffers is None:
            row, out = np.empty((1, self.columns)), np.empty((1, self.width))
            # (the byref keeps its c_int64 alive; the arrays keep the addresses valid)
            buffers = (row.ctypes.data, out.ctypes.data, ctypes.byref(ctypes.c_int64(0)), row, out)
            self._local.buffers = buffers
        return buffers

    def predict(self, matrix: np.ndarray) -> np.ndarray:
        """One output row per input row: the raw margin, or the contributions (bias last)."""
        rows = matrix
        if rows.dtype != np.float64 or not rows.flags.c_contiguous:
            rows = np.ascontiguousarray(matrix, dtype=np.float64)
        if rows.ndim != 2 or rows.shape[1] != self.columns:
            raise ValueError(f"expected rows of {self.columns} features, got {rows.shape}")
        if self._handle is None:
            raise lgb.basic.LightGBMError("single-row predictor already freed")
        n = len(rows)
        if n == 1:  # an API lead: copied into this thread's buffer, whose address is known
            source, target, written, row, out = self._row_buffers()
            np.copyto(row, rows)
            if self._call(self._handle, source, written, target) != 0:
                raise lgb.basic.LightGBMError(self._lib.LGBM_GetLastError().decode("utf-8"))
            return out.copy()
        out = np.empty((n, self.width))
        length = ctypes.c_int64(0)
        # one pointer read per array (`.ctypes.data` builds an object each time: ~3 µs)
        source, target = rows.ctypes.data, out.ctypes.data
        handle, written = self._handle, ctypes.byref(length)
        row_bytes, out_bytes = 8 * self.columns, 8 * self.width
        for i in range(n):
            if self._call(handle, source + i * row_bytes, written, target + i * out_bytes) != 0:
                raise lgb.basic.LightGBMError(self._lib.LGBM_GetLastError().decode("utf-8"))
        return out

    def __del__(self) -> None:
        handle = getattr(self, "_handle", None)
        if handle is not None and handle.value:
            self._lib.LGBM_FastConfigFree(handle)
            self._handle = None


@dataclass
class ModelBundle:
    """Everything needed to score a lead, loadable without executing code from the artifact."""

    booster: lgb.Booster
    builder: FeatureBuilder
    calibrator: Calibrator
    meta: dict[str, Any] = field(default_factory=dict)

    def __post_init__(self) -> None:
        self._prepare()

    def _prepare(self) -> None:
        """Precompute what every request needs, so the hot path only does arithmetic."""
        features = self.builder.features_
        self.inputs: list[str] = self.builder.inputs_
        self.sources: list[str] = self.builder.sources_
        self.field_matrix_ = np.zeros((len(features), len(self.sources)))
        for j, feature in enumerate(features):
            self.field_matrix_[j, self.sources.index(feature.source)] = 1.0
        # how a reason shows each field's value: the raw input, or (for PII and derived counts)
        # the derived value of the field's first feature, so an email address is never echoed
        sensitive = self.builder.sensitive_inputs_
        self.display_: list[tuple[str, int]] = []
        for source in self.sources:
            if source in self.inputs and source not in sensitive:
                self.display_.append(("raw", self.inputs.index(source)))
            else:
                first = next(j for j, f in enumerate(features) if f.source == source)
                self.display_.append(("derived", first))
        # words for people, stored at training (spec labels); generated for older bundles
        stored = {**resolve(features), **(self.meta.get("labels") or {})}
        self.words_: list[FieldWords] = [FieldWords.from_dict(stored[s]) for s in self.sources]
        self.tier_words_: dict[str, str] = tier_words(self.meta.get("tier_words"))
        cutoffs = self.meta.get("tiers", {})
        self.cutoffs_ = np.array([cutoffs.get(t, -math.inf) for t in TIERS[:-1]])
        self.tier_names_ = np.asarray(TIERS, dtype=object)
        self.cutoff_list_: list[float] = self.cutoffs_.tolist()
        grid = self.meta.get("percentiles") or [0.0, 1.0]
        self.percentile_grid_ = np.asarray(grid, dtype=float)
        self.percentile_list_: list[float] = self.percentile_grid_.tolist()
        # the logistic regression the trees start from, when training chose one (plain JSON)
        linear = self.meta.get("linear")
        self.linear_: LinearStart | None = LinearStart.from_dict(linear) if linear else None
        self.row_predictors_: dict[str, RowPredictor | None] = {}
        # the compiled trees (`compiled.py`) batch scoring attaches when the [fast] extra has
        # them: raw margins for batches, checked against LightGBM's
        self.compiled_: Any = None
        self._row_lock = threading.Lock()
        # numeric values far outside training (a warning) or outside the spec's bounds (refused)
        self.range_check_ = RangeCheck.of(self.builder, self.meta.get("ranges") or {})
        kinds = self.builder.input_kinds_
        self.bounds_: dict[str, tuple[float, float]] = {
            name: (float(pair[0]), float(pair[1]))
            for name, pair in (self.meta.get("bounds") or {}).items()
            if kinds.get(name) == "numeric"
        }

    def row_predictor(self, kind: str) -> RowPredictor | None:
        """The single-row predictor for "raw" or "contrib", built on first use (None when this
        LightGBM has no single-row API: `Booster.predict` then does all the work)."""
        predictor = self.row_predictors_.get(kind, _MISSING)
        if predictor is _MISSING:
            with self._row_lock:
                if kind not in self.row_predictors_:
                    self.row_predictors_[kind] = RowPredictor.create(self.booster, kind)
                predictor = self.row_predictors_[kind]
        return predictor  # type: ignore[return-value]

    @property
    def name(self) -> str:
        return str(self.meta.get("name", "lead-conversion"))

    @property
    def version(self) -> str:
        return str(self.meta.get("version") or "unregistered")

    @property
    def id_column(self) -> str:
        return str(self.meta.get("id_column") or "lead_id")

    def tier_labels(self, tiers: Sequence[str]) -> list[str]:
        """The sales team's word for each tier (hot, warm, cool, cold unless the spec says)."""
        words = self.tier_words_
        return [words.get(tier, tier) for tier in tiers]

    def input_types(self) -> dict[str, str]:
        """Raw field → "categorical" | "numeric": the schema the API and pyfunc expose."""
        return self.builder.input_kinds_

    # ---------------------------------------------------------------- persistence

    def save(self, directory: Path, *, signing_key: str | None = None) -> Path:
        """Write `model.txt` and `bundle.json` (with the model's SHA-256) into `directory`.

        With a signing key (`signing_key`; None: `LEADSCORE_SIGNING_KEY`) the metadata also
        carries an HMAC-SHA256 over the model text and the rest of the metadata, so a bundle
        edited by anyone without the key (checksum updated or not) is refused on load.
        """
        directory.mkdir(parents=True, exist_ok=True)
        model_path = directory / MODEL_FILE
        self.booster.save_model(str(model_path))
        meta = {
            **{k: v for k, v in self.meta.items() if k != SIGNATURE_FIELD},
            "format_version": FORMAT_VERSION,
            "model_file": MODEL_FILE,
            "model_sha256": sha256_file(model_path),
            "encoder": self.builder.to_dict(),
            "calibration": self.calibrator.to_dict(),
        }
        text = json.dumps(meta, indent=2, default=_json_default)
        key = _signing_key(signing_key)
        if key is not None:
            # signed as it will be read back (tuples as lists, numpy numbers as floats)
            meta = json.loads(text)
            meta[SIGNATURE_FIELD] = bundle_signature(model_path.read_bytes(), meta, key)
            text = json.dumps(meta, indent=2)
        tmp = directory / (META_FILE + ".tmp")
        tmp.write_text(text, encoding="utf-8")
        tmp.replace(directory / META_FILE)
        self.meta = meta
        return directory


def _signing_key(explicit: str | None) -> str | None:
    """The key to sign and verify with: the caller's ("" for none), else (None)
    `LEADSCORE_SIGNING_KEY`, else none."""
    if explicit is not None:
        return explicit or None
    return get_settings().signing_secret()


def bundle_signature(model_text: bytes, meta: Mapping[str, Any], key: str) -> str:
    """`hmac-sha256:<hex>` over the model text and the canonical JSON of the metadata (sorted
    keys, no spaces, the signature field itself left out). The model's length goes first, so no
    bytes can be moved between the two parts without changing the signature."""
    body = {k: v for k, v in meta.items() if k != SIGNATURE_FIELD}
    canonical = json.dumps(body, sort_keys=True, separators=(",", ":"), default=_json_default)
    message = b"leadscore-bundle\n%d\n" % len(model_text) + model_text + canonical.encode()
    return SIGNATURE_PREFIX + hmac.new(key.encode(), message, hashlib.sha256).hexdigest()


def _json_default(value: Any) -> Any:
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.floating):
        return float(value)
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"not JSON serialisable: {type(value).__name__}")


def publish_bundle(bundle: ModelBundle, folder: Path) -> Path:
    """Write `bundle` to `folder`, replacing what was there only once the new copy is complete:
    a deployment reading the folder sees the old bundle or the new one, never half of each."""
    folder = Path(folder)
    folder.parent.mkdir(parents=True, exist_ok=True)
    staging = folder.with_name(f".{folder.name}.staging-{os.getpid()}")
    retired = folder.with_name(f".{folder.name}.old-{os.getpid()}")
    for leftover in (staging, retired):
        shutil.rmtree(leftover, ignore_errors=True)
    bundle.save(staging)
    if folder.exists():
        folder.replace(retired)
    staging.replace(folder)
    shutil.rmtree(retired, ignore_errors=True)
    return folder


def load_bundle(directory: str | Path, *, signing_key: str | None = None) -> ModelBundle:
    """Read a bundle folder, verifying the model file against the checksum in its metadata, its
    signature when a key is set (`signing_key`; None: `LEADSCORE_SIGNING_KEY`; "": no key), and
    the model text itself (`modelcheck`) before LightGBM parses it in this process: a damaged
    text is a `ModelError`, never an abort. LightGBM parses the very bytes that were checked."""
    folder = Path(directory)
    meta_path = folder / META_FILE
    if not meta_path.is_file():
        raise ModelError(f"{folder}: not a model bundle (no {META_FILE})")
    try:
        meta = json.loads(meta_path.read_text(encoding="utf-8"))
    except (json.JSONDecodeError, UnicodeDecodeError):
        raise ModelError(f"{meta_path}: not valid JSON") from None
    if not isinstance(meta, dict) or meta.get("format_version") != FORMAT_VERSION:
        version = meta.get("format_version") if isinstance(meta, dict) else None
        raise ModelError(
            f"{meta_path}: bundle format {version!r} is not supported "
            f"(expected {FORMAT_VERSION})"
        )
    model_path = folder / str(meta.get("model_file", MODEL_FILE))
    if not model_path.is_file():
        raise ModelError(f"{folder}: model file {model_path.name} is missing")
    model_bytes = model_path.read_bytes()
    digest = hashlib.sha256(model_bytes).hexdigest()
    if digest != meta.get("model_sha256"):
        raise ModelError(f"{model_path}: checksum does not match {META_FILE}; refusing to load")
    key = _signing_key(signing_key)
    if key is not None:
        signature = meta.get(SIGNATURE_FIELD)
        if not isinstance(signature, str) or not signature:
            raise ModelError(
                f"{folder}: bundle signature missing (LEADSCORE_SIGNING_KEY is set)"
            )
        expected = bundle_signature(model_bytes, meta, key)
        if not hmac.compare_digest(signature.encode(), expected.encode()):
            raise ModelError(
                f"{folder}: bundle signature does not match (LEADSCORE_SIGNING_KEY is set)"
            )
    try:
        model_text = model_bytes.decode("utf-8")
    except UnicodeDecodeError:
        raise ModelError(f"{folder}: {model_path.name} is damaged: not UTF-8 text") from None
    verify_model_text(model_bytes, digest, str(folder))
    try:
        booster = lgb.Booster(model_str=model_text)
        builder = FeatureBuilder.from_dict(meta["encoder"])
        calibrator = Calibrator.from_dict(meta["calibration"])
    except (lgb.basic.LightGBMError, KeyError, TypeError, ValueError) as exc:
        raise ModelError(
            f"{folder}: bundle is incomplete or corrupt ({type(exc).__name__})"
        ) from None
    if booster.num_feature() != len(builder.features_):
        raise ModelError(
            f"{folder}: model expects {booster.num_feature()} features but the encoder "
            f"describes {len(builder.features_)}"
        )
    return ModelBundle(booster=booster, builder=builder, calibrator=calibrator, meta=meta)


# --------------------------------------------------------------------------- scoring


@dataclass
class Scores:
    """Column arrays for n leads; `reasons` is None unless asked for."""

    margin: np.ndarray
    probability: np.ndarray
    score: np.ndarray
    tier: np.ndarray
    percentile: np.ndarray
    reasons: list[list[dict[str, Any]]] | None = None
    # per lead, e.g. "nr.employed outside the training range" (see leadscore.ranges)
    warnings: list[list[str]] = field(default_factory=list)
    # the encoded features the scores came from: the score history keeps them (`store.py`),
    # so each field's impact can be recomputed exactly later without keeping the lead's data
    matrix: np.ndarray | None = None


def predict(
    bundle: ModelBundle, matrix: np.ndarray, reasons: int = 0
) -> tuple[Scores, np.ndarray | None]:
    """Probabilities (and, with reasons > 0, per-field contributions) for an encoded matrix."""
    if reasons > 0:
        contrib = _booster_predict(bundle, matrix, "contrib")
        if bundle.linear_ is not None:
            contrib = contrib + bundle.linear_.contributions(matrix)
        margin = contrib.sum(axis=1)
    else:
        contrib = None
        margin = _booster_predict(bundle, matrix, "raw")
        if bundle.linear_ is not None:
            margin = margin + bundle.linear_.margin(matrix)
    if len(margin) == 1:  # one lead (an API request): the same steps on Python floats
        return _one(bundle, margin, bundle.calibrator.transform_one(margin.item())), contrib
    calibrated = bundle.calibrator.transform(margin)
    # np.minimum/np.maximum rather than np.clip: the same numbers, a fifth of the overhead
    probability = np.minimum(np.maximum(calibrated, 0.0), 1.0)
    score = np.rint(probability * 100).astype(np.int64)
    tier_index = (probability[:, None] < bundle.cutoffs_[None, :]).sum(axis=1)
    tier = bundle.tier_names_[tier_index]
    position = np.searchsorted(bundle.percentile_grid_, probability, side="right") - 1
    percentile = np.minimum(np.maximum(position, 0), 100).astype(np.int64)
    return Scores(margin, probability, score, tier, percentile), contrib


def _one(bundle: ModelBundle, margin: np.ndarray, calibrated: float) -> Scores:
    """`predict`'s arithmetic for a single lead without numpy's per-call overhead (~8 µs of a
    ~30 µs prediction): the same operations on the same float64 values, so the same results
    (round() and np.rint both round half to even; bisect_right is searchsorted "right")."""
    probability = min(max(calibrated, 0.0), 1.0)
    tier_index = 0
    for cutoff in bundle.cutoff_list_:
        if probability < cutoff:
            tier_index += 1
    position = bisect.bisect_right(bundle.percentile_list_, probability) - 1
    return Scores(
        margin,
        np.array([probability]),
        np.array([round(probability * 100)], dtype=np.int64),
        np.array([TIERS[tier_index]], dtype=object),
        np.array([min(max(position, 0), 100)], dtype=np.int64),
    )


def _booster_predict(bundle: ModelBundle, matrix: np.ndarray, kind: str) -> np.ndarray:
    """The booster's raw margins (n,) or contributions (n, features + 1).

    A few rows go through LightGBM's single-row API (`RowPredictor`); more through
    `Booster.predict`, on one thread up to SINGLE_THREAD_ROWS rows: OpenMP's start-up and
    spin-waits cost more than the work there, and far more on a busy machine.
    """
    n = len(matrix)
    row_api = bundle.row_predictor(kind) if 0 < n <= ROW_API_ROWS[kind] else None
    if row_api is not None:
        out = row_api.predict(matrix)
        return out if kind == "contrib" else out[:, 0]
    threads: dict[str, Any] = {"num_threads": 1} if n <= SINGLE_THREAD_ROWS else {}
    compiled = bundle.compiled_
    if compiled is not None and kind == "raw" and n > SINGLE_THREAD_ROWS:
        return np.asarray(compiled.predict(matrix))
    if kind == "contrib":
        return np.asarray(bundle.booster.predict(matrix, pred_contrib=True, **threads))
    return np.asarray(bundle.booster.predict(matrix, raw_score=True, **threads))


def field_impacts(bundle: ModelBundle, contrib: np.ndarray, margin: np.ndarray) -> np.ndarray:
    """Each business field's contribution, in score points, for each lead.

    LightGBM's `pred_contrib` is additive in log-odds; sales want points. Each field's log-odds
    contribution is scaled by the secant slope of the calibrated curve between the average lead
    (the expected value column) and this lead, so the impacts add up exactly to the lead's
    score minus the average lead's score, and a tiny move never divides by zero.
    """
    n = len(margin)
    bias = contrib[:, -1]
    per_field = contrib[:, :-1] @ bundle.field_matrix_
    eps = 1e-6
    # one calibration call for the lead, the average lead and a step beside it (elementwise,
    # so the same numbers as three calls, at a third of the per-call overhead)
    p = bundle.calibrator.transform(np.concatenate([margin, bias, bias + eps]))
    p_lead, p_base, p_hi = p[:n], p[n : 2 * n], p[2 * n :]
    delta = margin - bias
    slope_at_base = (p_hi - p_base) / eps
    slope = np.where(
        np.abs(delta) > eps, (p_lead - p_base) / np.where(delta == 0, 1, delta), slope_at_base
    )
    return per_field * (slope * 100.0)[:, None]


def top_reasons(
    bundle: ModelBundle,
    impacts: np.ndarray,
    values: Sequence[Sequence[Any]],
    k: int,
    matrix: np.ndarray | None = None,
) -> list[list[dict[str, Any]]]:
    """Each lead's top factors, as {feature, value, impact, label, text} with impact in score
    points, `label` the field in words and `text` one line for a person ("Previous campaign
    succeeded: +18 points"; points rounded to whole numbers, to one decimal below 1).

    Up to k fields that raised the lead's score (largest first), then up to k that lowered it
    (most negative first); a field whose impact rounds to 0.00 points is neither and is left
    out, so a lead has between 0 and 2k reasons. `values` holds the raw input columns (in
    `bundle.inputs` order); `matrix` the encoded features, used to show derived values (a
    free-mail domain rather than the address).
    """
    if k <= 0:
        return [[] for _ in range(len(impacts))]
    # one sort per lead, descending: raisers from the front, lowerers from the back
    order = np.argsort(-impacts, axis=1, kind="stable").tolist()
    points = impacts.tolist()
    sources, display, features = bundle.sources, bundle.display_, bundle.builder.features_
    words = bundle.words_
    out = []
    for i, ranked in enumerate(order):
        row = points[i]
        up = [(j, round(row[j], 2)) for j in ranked[:k]]
        down = [(j, round(row[j], 2)) for j in ranked[: -k - 1 : -1]]
        reasons = []
        for j, impact in [u for u in up if u[1] > 0] + [d for d in down if d[1] < 0]:
            how, where = display[j]
            if how == "raw":
                value = _plain(values[where][i])
            elif matrix is not None:
                value = _decode(features[where], matrix[i, where])
            else:
                value = None
            reasons.append({"feature": sources[j], "value": value, "impact": impact,
                            "label": words[j].label,
                            "text": reason_text(words[j], value, impact)})
        out.append(reasons)
    return out


def _decode(feature: Any, code: float) -> Any:
    if math.isnan(code):
        return None
    if feature.kind == "categorical":
        return feature.levels[int(code)]
    return float(code)


def _plain(value: Any) -> Any:
    """JSON-safe value for a reason (NaN and pandas NA become None)."""
    if value is None:
        return None
    if isinstance(value, float | np.floating):
        return None if math.isnan(value) else float(value)
    if isinstance(value, np.integer):
        return int(value)
    if isinstance(value, np.bool_):
        return bool(value)
    try:
        if pd.isna(value):
            return None
    except (TypeError, ValueError):
        pass
    return value


def _column_values(leads: Columns, name: str, n: int) -> Sequence[Any]:
    if isinstance(leads, pa.Table):
        return leads.column(name).to_pylist() if name in leads.column_names else [None] * n
    if isinstance(leads, pd.DataFrame):
        return leads[name].tolist() if name in leads.columns else [None] * n
    column = leads.get(name)
    return list(column) if column is not None else [None] * n


def score_arrays(bundle: ModelBundle, leads: Columns, reasons: int = 0) -> Scores:
    """Score column-shaped leads (DataFrame, Arrow table, or mapping of lists)."""
    matrix = bundle.builder.transform(leads)
    return _score_matrix(
        bundle, matrix, reasons,
        lambda: [_column_values(leads, name, len(matrix)) for name in bundle.inputs],
    )


def _score_matrix(
    bundle: ModelBundle,
    matrix: np.ndarray,
    reasons: int,
    values: Callable[[], Sequence[Sequence[Any]]],
) -> Scores:
    """Everything after encoding, whatever shape the leads came in: `values` gives the raw
    input columns (in `bundle.inputs` order) when reasons need to show them."""
    scores, contrib = predict(bundle, matrix, reasons)
    scores.warnings = bundle.range_check_.warnings(matrix)
    scores.matrix = matrix
    if contrib is not None:
        impacts = field_impacts(bundle, contrib, scores.margin)
        scores.reasons = top_reasons(bundle, impacts, values(), reasons, matrix)
    return scores


def score(bundle: ModelBundle, leads: Columns, reasons: int = 0) -> pd.DataFrame:
    """One row per lead: id, probability (0–1), score (0–100), tier (A–D), tier_label (hot,
    warm, cool, cold or the spec's words), percentile, reasons (when asked for) and warnings (a
    list, empty unless a value is far outside training).

    Columns are matched by name; absent fields and unseen categories are scored as missing.
    """
    scores = score_arrays(bundle, leads, reasons)
    id_column = bundle.id_column
    ids = _column_values(leads, id_column, len(scores.probability))
    out = pd.DataFrame(
        {
            id_column: pd.Series(
                [None if _plain(v) is None else str(v) for v in ids], dtype=object
            ),
            "probability": scores.probability,
            "score": scores.score,
            "tier": scores.tier,
            "tier_label": pd.Series(bundle.tier_labels(scores.tier.tolist()), dtype=object),
            "percentile": scores.percentile,
        }
    )
    if scores.reasons is not None:
        out["reasons"] = pd.Series(scores.reasons, dtype=object)
    out["warnings"] = pd.Series(scores.warnings, dtype=object)
    out["model_name"] = bundle.name
    out["model_version"] = bundle.version
    return out


def score_records(
    bundle: ModelBundle, records: Sequence[Mapping[str, Any]], reasons: int = 0
) -> tuple[Scores, list[Any]]:
    """The API's path: lead dicts in, column arrays out, no DataFrame built on the way.

    One lead (most API requests) is encoded straight from its dict (`transform_one`, the same
    rules value by value) and then scored exactly as a batch is."""
    if len(records) == 1:
        record = records[0]
        matrix = bundle.builder.transform_one(record)
        scores = _score_matrix(bundle, matrix, reasons,
                               lambda: [[record.get(name)] for name in bundle.inputs])
        return scores, [record.get(bundle.id_column)]
    columns = {name: [record.get(name) for record in records] for name in bundle.inputs}
    scores = score_arrays(bundle, columns, reasons)
    ids = [record.get(bundle.id_column) for record in records]
    return scores, ids
