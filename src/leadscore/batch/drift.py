"""Input drift of a batch job: its rows counted in the training profile's bins."""

from __future__ import annotations

import logging
from typing import Any

import numpy as np
import pyarrow as pa

from leadscore.batch.sources import Source
from leadscore.evaluate import PSI_WARNING, bin_counts, population_stability
from leadscore.scoring import ModelBundle

log = logging.getLogger(__name__)


# drift is profiled on every row of a small input and on every 10th row (by row number, so the
# same rows whatever the chunk size) of a large one: PSI needs thousands of rows, not millions
DRIFT_STRIDE = 10
DRIFT_ALL_ROWS_UP_TO = 200_000


# below this many sampled rows PSI measures the sample's noise, not the population: with ten
# bins, 100 leads drawn from the training distribution itself score PSI ~0.1 and often > 0.2
DRIFT_MIN_ROWS = 500


class Drift:
    """The scored input's counts in the training profile's bins (`evaluate.feature_profile`)."""

    def __init__(self, bundle: ModelBundle, stride: int) -> None:
        self.profile = bundle.meta.get("profile") or {}
        self.stride = stride
        features = self.profile.get("features", {})
        self.features = [f.name for f in bundle.builder.features_ if f.name in features]
        self.index = [j for j, f in enumerate(bundle.builder.features_) if f.name in features]
        self.counts: dict[str, np.ndarray] = {
            name: np.zeros(len(features[name]["proportions"]), np.int64) for name in self.features
        }
        score = self.profile.get("score")
        self.score = np.zeros(len(score["proportions"]), np.int64) if score else None
        self.sampled = 0

    @property
    def enabled(self) -> bool:
        return bool(self.profile)

    def counts_for(
        self, bundle: ModelBundle, table: pa.Table, rows: np.ndarray, probability: np.ndarray,
        matrix: np.ndarray | None = None,
    ) -> dict[str, list[int]]:
        """One chunk's bin counts (added to the totals by `add`, once the chunk is written).
        `matrix`: the chunk's encoded features when already computed (else the sampled rows
        are encoded here)."""
        if not self.enabled or len(rows) == 0:
            return {}
        out: dict[str, list[int]] = {}
        if self.score is not None:
            out["score"] = bin_counts(self.profile["score"], probability).tolist()
        positions = np.flatnonzero((rows - 1) % self.stride == 0)
        if len(positions) and self.features:
            if matrix is not None and len(matrix) == len(rows):
                matrix = matrix if len(positions) == len(rows) else matrix[positions]
            else:
                sample = table if len(positions) == len(rows) else table.take(pa.array(positions))
                matrix = bundle.builder.transform(sample)
            for name, j in zip(self.features, self.index, strict=True):
                out[name] = bin_counts(self.profile["features"][name], matrix[:, j]).tolist()
        out["_sampled"] = [len(positions)]
        return out

    def add(self, counts: dict[str, list[int]]) -> None:
        for name, values in counts.items():
            if name == "_sampled":
                self.sampled += values[0]
            elif name == "score" and self.score is not None:
                self.score += np.asarray(values, dtype=np.int64)
            elif name in self.counts:
                self.counts[name] += np.asarray(values, dtype=np.int64)

    def state(self) -> dict[str, Any]:
        return {
            "sampled": self.sampled,
            "score": self.score.tolist() if self.score is not None else None,
            "features": {k: v.tolist() for k, v in self.counts.items()},
        }

    def restore(self, state: dict[str, Any]) -> None:
        self.sampled = int(state.get("sampled", 0))
        if state.get("score") is not None and self.score is not None:
            self.score = np.asarray(state["score"], dtype=np.int64)
        for name, values in state.get("features", {}).items():
            if name in self.counts:
                self.counts[name] = np.asarray(values, dtype=np.int64)

    def report(self) -> dict[str, Any]:
        if not self.enabled:
            return {
                "available": False,
                "reason": "the model bundle has no training profile (trained before drift "
                "checks existed); retrain to get one",
            }
        if self.sampled < DRIFT_MIN_ROWS:
            return {
                "available": False,
                "reason": f"fewer than {DRIFT_MIN_ROWS} rows ({self.sampled:,} sampled)",
                "sampled_rows": self.sampled,
                "min_rows": DRIFT_MIN_ROWS,
                "drifted": [],
            }
        psi = {
            name: round(
                population_stability(
                    self.profile["features"][name]["proportions"], self.counts[name]
                ),
                4,
            )
            for name in self.features
        }
        score_psi = None
        if self.score is not None:
            score_psi = round(
                population_stability(self.profile["score"]["proportions"], self.score), 4
            )
        flagged = sorted((k for k, v in psi.items() if v > PSI_WARNING), key=lambda k: -psi[k])
        if score_psi is not None and score_psi > PSI_WARNING:
            flagged.insert(0, "score")
        return {
            "available": True,
            "threshold": PSI_WARNING,
            "sampled_rows": self.sampled,
            "training_rows": self.profile.get("rows"),
            "score_psi": score_psi,
            "feature_psi": psi,
            "drifted": flagged,
        }


def _drift_stride(source: Source) -> int:
    if source.total_rows is not None:
        return 1 if source.total_rows <= DRIFT_ALL_ROWS_UP_TO else DRIFT_STRIDE
    return 1 if source.total_bytes <= DRIFT_ALL_ROWS_UP_TO * 100 else DRIFT_STRIDE

