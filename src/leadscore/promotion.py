"""When a new version may take `@champion`: the rules alone, without MLflow (tracking.py applies
them to the registry), so the CLI, training and the API's reload all judge the same way.

Three gates, in order; a version fails at the first it does not pass:
1. Its own worth: a test ROC AUC within `NEAR_CHANCE` of 0.5, or below the points scorecard's or
   the logistic baseline's on its own test slice, is never promoted automatically.
2. Same model, same inputs: a champion of another dataset is never compared with (a store from
   before one-model-per-dataset may hold several under one name), and a version whose input
   fields differ from the champion's waits for `leadscore promote --allow-schema-change`: the
   callers of a served model send the champion's fields, and a new field set breaks them.
3. Against the champion on the challenger's test slice (`decide`).
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass, field

from leadscore.config import Settings

# a test ROC AUC this close to 0.5 ranks leads no better than a coin
NEAR_CHANCE = 0.02
# baselines a model must not lose to on its own test slice (names as baselines.py reports them)
GATING_BASELINES = ("scorecard", "logistic")

# a challenger takes @champion when, on the challenger's own test slice, its ROC AUC is at least
# the champion's minus AUC_TOLERANCE and its calibration error at most the champion's plus
# ECE_TOLERANCE (retrains wobble by a few thousandths; a real regression is larger): the
# defaults of `LEADSCORE_PROMOTE_AUC_TOLERANCE` and `LEADSCORE_PROMOTE_ECE_TOLERANCE`
AUC_TOLERANCE: float = Settings.model_fields["promote_auc_tolerance"].default
ECE_TOLERANCE: float = Settings.model_fields["promote_ece_tolerance"].default


@dataclass(frozen=True)
class SchemaChange:
    """How two versions' input fields differ (name -> kind: categorical or numeric)."""

    added: list[str] = field(default_factory=list)
    removed: list[str] = field(default_factory=list)
    retyped: dict[str, tuple[str, str]] = field(default_factory=dict)

    def __bool__(self) -> bool:
        return bool(self.added or self.removed or self.retyped)

    def describe(self) -> str:
        parts = []
        if self.added:
            parts.append("added " + ", ".join(repr(f) for f in self.added))
        if self.removed:
            parts.append("removed " + ", ".join(repr(f) for f in self.removed))
        if self.retyped:
            parts.append("retyped " + ", ".join(
                f"{name!r} ({old} -> {new})" for name, (old, new) in self.retyped.items()
            ))
        return "; ".join(parts)

    def as_dict(self) -> dict[str, object]:
        return {"added": self.added, "removed": self.removed,
                "retyped": {k: list(v) for k, v in self.retyped.items()}}


def schema_change(old: Mapping[str, str], new: Mapping[str, str]) -> SchemaChange:
    """What a caller of the `old` model would have to change to call the `new` one."""
    return SchemaChange(
        added=sorted(set(new) - set(old)),
        removed=sorted(set(old) - set(new)),
        retyped={k: (old[k], new[k]) for k in sorted(set(old) & set(new)) if old[k] != new[k]},
    )


def quality_problem(
    metrics: Mapping[str, float],
    baselines: Mapping[str, Mapping[str, float]] | None,
    tolerance: float = AUC_TOLERANCE,
) -> str | None:
    """Why a model is not worth serving on its own test slice, or None. `metrics` holds
    `test_roc_auc`; `baselines` the baselines' metrics on the same slice (None: not computed).

    "Loses to a baseline" means a ROC AUC below the baseline's by more than `tolerance`, the
    same allowance a challenger gets against the champion: on a test slice of a few thousand
    leads two equally good models differ by a few thousandths."""
    auc = float(metrics.get("test_roc_auc", float("nan")))
    if auc != auc:
        return "its test ROC AUC is undefined (one class only in the test slice)"
    if abs(auc - 0.5) <= NEAR_CHANCE:
        return (
            f"its test ROC AUC {auc:.4f} is within {NEAR_CHANCE} of 0.5: it ranks leads no "
            "better than chance"
        )
    for name in GATING_BASELINES:
        theirs = float((baselines or {}).get(name, {}).get("roc_auc", float("nan")))
        if theirs == theirs and auc < theirs - tolerance:
            return (
                f"its test ROC AUC {auc:.4f} is below the {name} baseline's {theirs:.4f} "
                f"- {tolerance} on the same test slice"
            )
    return None


def decide(
    challenger: Mapping[str, float],
    champion: Mapping[str, float] | None,
    auc_tolerance: float = AUC_TOLERANCE,
    ece_tolerance: float = ECE_TOLERANCE,
) -> tuple[bool, str]:
    """Should the challenger replace the champion? Both scored on the same test slice."""
    if champion is None:
        return True, "no champion yet"
    auc_new, auc_old = challenger["roc_auc"], champion["roc_auc"]
    ece_new, ece_old = challenger["ece"], champion["ece"]
    if auc_new != auc_new:
        return False, "challenger ROC AUC is undefined on its test slice"
    if auc_old == auc_old and auc_new < auc_old - auc_tolerance:
        return False, (
            f"ROC AUC {auc_new:.4f} is below the champion's {auc_old:.4f} "
            f"- {auc_tolerance} on the same test slice"
        )
    if ece_old == ece_old and ece_new > ece_old + ece_tolerance:
        return False, (
            f"ECE {ece_new:.4f} is above the champion's {ece_old:.4f} "
            f"+ {ece_tolerance} on the same test slice"
        )
    return True, (
        f"ROC AUC {auc_new:.4f} vs champion {auc_old:.4f}, "
        f"ECE {ece_new:.4f} vs {ece_old:.4f} on the same test slice"
    )
