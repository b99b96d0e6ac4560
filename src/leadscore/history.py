"""A lead's score history: its scorings, their trend, and why its score changed between the last
two, field by field, split into what changed in the lead and what changed in the model."""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import numpy as np
import pyarrow as pa

from leadscore.errors import LeadscoreError
from leadscore.scoring import ModelBundle, field_impacts, predict
from leadscore.store import ScoreStore

TREND_LOOKBACK = 2  # scorings back from the latest
TREND_POINTS = 5  # score points
TREND_RULE = (
    f"rising when the latest score is at least {TREND_POINTS} points above the score "
    f"{TREND_LOOKBACK} scorings before it (the first one, when there are fewer), falling when "
    f"at least {TREND_POINTS} points below, steady otherwise; unknown with one scoring"
)
WHY_RULE = (
    "each field's impact (score points against the model's average lead) at the last scoring "
    "minus at the one before. Same model version: every change is the lead's data (a field "
    "whose value stayed can still move through the ones that changed). New version: a field "
    "whose value changed counts as data, one whose value stayed (or that only one version "
    "uses) as model, and the average lead's score moving is the model's. `rounding` is the "
    "score's rounding to a whole point. Parts are rounded to 0.01 by largest remainder, so "
    "they add up exactly to the score change."
)

BundleFor = Callable[[str], ModelBundle]  # a model version -> its bundle


def trend_of(scores: list[int]) -> str:
    """rising / falling / steady / unknown, by `TREND_RULE`."""
    if len(scores) < 2:
        return "unknown"
    before = scores[max(0, len(scores) - 1 - TREND_LOOKBACK)]
    move = scores[-1] - before
    if move >= TREND_POINTS:
        return "rising"
    if move <= -TREND_POINTS:
        return "falling"
    return "steady"


def impacts_of(bundle: ModelBundle, features: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
    """Each field's impact in score points for stored feature rows, and the exact points
    (probability x 100) they explain, recomputed with the version's own bundle: the same
    numbers `--reasons` gives at scoring time."""
    scores, contrib = predict(bundle, features, reasons=1)
    assert contrib is not None
    return field_impacts(bundle, contrib, scores.margin), scores.probability * 100.0


def _decoded(bundle: ModelBundle, row: np.ndarray) -> dict[str, tuple[str, Any]]:
    """Feature name -> (field, value as the lead had it: a category's level, a number)."""
    out: dict[str, tuple[str, Any]] = {}
    for j, feature in enumerate(bundle.builder.features_):
        code = float(row[j])
        if math.isnan(code):
            value: Any = None
        elif feature.kind == "categorical":
            value = feature.levels[int(code)]
        else:
            value = code
        out[feature.name] = (feature.source, value)
    return out


def changed_fields(old: ModelBundle, old_row: np.ndarray, new: ModelBundle,
                   new_row: np.ndarray) -> set[str]:
    """Fields with a feature (one both versions have) whose value differs between scorings."""
    before, after = _decoded(old, old_row), _decoded(new, new_row)
    return {after[name][0] for name in after.keys() & before.keys()
            if before[name][1] != after[name][1]}


def _cents(parts: list[float], total_cents: int) -> list[int]:
    """Round parts to cents so they add up to `total_cents` (largest remainder)."""
    scaled = [p * 100.0 for p in parts]
    floors = [math.floor(s) for s in scaled]
    short = total_cents - sum(floors)
    order = sorted(range(len(parts)), key=lambda i: floors[i] - scaled[i])
    for i in order[: max(short, 0)]:
        floors[i] += 1
    for i in sorted(range(len(parts)), key=lambda i: scaled[i] - floors[i])[: max(-short, 0)]:
        floors[i] -= 1
    return floors


def why_changed(old: dict[str, Any], new: dict[str, Any], bundle_for: BundleFor) -> dict[str, Any]:
    """Why the score moved from scoring `old` to `new` (store rows as dicts), by `WHY_RULE`."""
    old_bundle, new_bundle = bundle_for(old["model_version"]), bundle_for(new["model_version"])
    old_row = np.asarray(old["features"], dtype=np.float64)[None, :]
    new_row = np.asarray(new["features"], dtype=np.float64)[None, :]
    old_impacts, old_points = impacts_of(old_bundle, old_row)
    new_impacts, new_points = impacts_of(new_bundle, new_row)
    for row, points in ((old, old_points), (new, new_points)):
        if abs(float(points[0]) - 100.0 * row["probability"]) > 1e-6:
            raise LeadscoreError(
                f"model version {row['model_version']} does not give the stored score of the "
                f"scoring at {row['scored_at']}: its bundle is not the one that scored it"
            )
    same_model = old["model_version"] == new["model_version"]
    moved = changed_fields(old_bundle, old_row[0], new_bundle, new_row[0])
    before = dict(zip(old_bundle.sources, old_impacts[0].tolist(), strict=True))
    after = dict(zip(new_bundle.sources, new_impacts[0].tolist(), strict=True))
    fields = list(dict.fromkeys([*new_bundle.sources, *old_bundle.sources]))
    changes = [after.get(f, 0.0) - before.get(f, 0.0) for f in fields]
    base_change = float((new_points[0] - sum(after.values()))
                        - (old_points[0] - sum(before.values())))
    rounding = float((new["score"] - new_points[0]) - (old["score"] - old_points[0]))
    score_change = int(new["score"]) - int(old["score"])
    cents = _cents([*changes, base_change, rounding], score_change * 100)
    data: list[dict[str, Any]] = []
    model: list[dict[str, Any]] = []
    for name, cent in zip(fields, cents, strict=False):
        if cent == 0:
            continue
        item: dict[str, Any] = {"field": name, "change": cent / 100}
        if same_model or (name in moved and name in before and name in after):
            data.append(item)
        else:
            model.append(item)
    data.sort(key=lambda d: -abs(d["change"]))
    model.sort(key=lambda d: -abs(d["change"]))
    return {
        "from": {k: old[k] for k in ("scored_at", "model_version", "score")},
        "to": {k: new[k] for k in ("scored_at", "model_version", "score")},
        "score_change": score_change,
        "data": data,
        "model": model,
        "baseline_change": cents[-2] / 100,
        "rounding": cents[-1] / 100,
        "rule": WHY_RULE,
    }


def lead_history(store: ScoreStore, model: str | None, lead_id: str,
                 bundle_for: BundleFor | None = None) -> dict[str, Any]:
    """One lead's scorings (oldest first), trend and why its score last changed.

    `bundle_for` loads a version's bundle (the registry's, in the CLI and the API); without it,
    or when a version cannot be loaded, `why_changed` says so instead of guessing.
    """
    model = store.resolve_model(model)
    table = store.lead(model, lead_id, with_features=2)
    rows = _as_rows(table)
    scorings = [
        {
            "scored_at": row["scored_at"],
            "model_version": row["model_version"],
            "probability": row["probability"],
            "score": row["score"],
            "tier": row["tier"],
        }
        for row in rows
    ]
    why: dict[str, Any] | None = None
    if len(rows) >= 2:
        if bundle_for is None:
            why = {"available": False, "reason": "no model registry to explain it with"}
        else:
            try:
                why = {"available": True, **why_changed(rows[-2], rows[-1], bundle_for)}
            except LeadscoreError as exc:
                why = {"available": False, "reason": str(exc)}
    return {
        "lead_id": lead_id,
        "model": model,
        "scorings": scorings,
        "trend": trend_of([r["score"] for r in rows]),
        "trend_rule": TREND_RULE,
        "why_changed": why,
    }


def _as_rows(table: pa.Table) -> list[dict[str, Any]]:
    rows = table.to_pylist()
    for row in rows:
        row["scored_at"] = row["scored_at"].isoformat(timespec="seconds")
    return rows
