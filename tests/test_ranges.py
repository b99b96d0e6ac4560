"""Values far outside the training range are scored with a warning; outside bounds, refused."""

from __future__ import annotations

import json
import math
from pathlib import Path

import numpy as np
import pandas as pd
import pyarrow.parquet as pq
import pytest
import yaml

from leadscore.batch import rescore
from leadscore.config import Settings, load_spec
from leadscore.errors import SpecError
from leadscore.pipeline import run_training
from leadscore.ranges import widened
from leadscore.scoring import ModelBundle, load_bundle, score

N = 1500


def leads_frame(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    plan = rng.choice(["free", "team", "enterprise"], n)
    employed = rng.normal(5100, 60, n).round(1)
    visits = rng.poisson(3, n)
    logit = -1 + (plan == "enterprise") * 1.2 + (employed - 5100) / 60 * 0.8 + visits * 0.2
    return pd.DataFrame({
        "lead_id": [f"R{i:05d}" for i in range(n)],
        "created_at": pd.date_range("2024-01-01", periods=n, freq="h").astype(str),
        "plan": plan, "nr.employed": employed, "visits": visits,
        "converted": (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(int),
    })


def spec_dict(leads: Path, **extra: object) -> dict:
    return {
        "name": "ranges_test",
        "leads": {"path": str(leads), "id": "lead_id", "created_at": "created_at"},
        "outcome": {"column": "converted", "positive": ["1"], "negative": ["0"]},
        "features": {"categorical": ["plan"], "numeric": ["nr.employed", "visits"]},
        "train": {"min_per_class": 20, "params": {"num_threads": 1}},
        **extra,
    }


@pytest.fixture(scope="module")
def trained_with_bounds(tmp_path_factory: pytest.TempPathFactory) -> tuple[Path, pd.DataFrame]:
    """A small model trained through the real pipeline, its spec bounding `visits` to 0..40."""
    root = tmp_path_factory.mktemp("ranges")
    frame = leads_frame(N, seed=5)
    frame.to_csv(root / "leads.csv", index=False)
    spec = spec_dict(root / "leads.csv", bounds={"visits": [0, 40]})
    (root / "spec.yaml").write_text(yaml.safe_dump(spec), encoding="utf-8")
    settings = Settings(models_dir=root / "models", model_name="ranges")
    result = run_training(load_spec(root / "spec.yaml"), settings, track=False,
                          with_report=False, baselines=False, bundle_out=root / "bundle")
    return result.bundle_dir, frame


@pytest.fixture(scope="module")
def bundle(trained_with_bounds: tuple[Path, pd.DataFrame]) -> ModelBundle:
    return load_bundle(trained_with_bounds[0])


def test_the_bundle_records_training_ranges_and_bounds(
    bundle: ModelBundle, trained_with_bounds: tuple[Path, pd.DataFrame]
) -> None:
    frame = trained_with_bounds[1]
    ranges = bundle.meta["ranges"]
    assert set(ranges) == {"nr.employed", "visits"}, "numeric fields only"
    for name in ranges:
        low, high = ranges[name]
        # the training rows (not the held-out test slice) are a subset of the frame
        assert frame[name].min() <= low < high <= frame[name].max()
    assert bundle.meta["bounds"] == {"visits": [0.0, 40.0]}
    assert bundle.bounds_ == {"visits": (0.0, 40.0)}


def test_a_value_far_outside_training_is_scored_with_a_warning(bundle: ModelBundle) -> None:
    low, high = bundle.meta["ranges"]["nr.employed"]
    far_low, far_high = widened(low, high)
    leads = pd.DataFrame({
        "lead_id": ["ok", "zero", "tiny", "edge", "inside-widened", "missing", "inf"],
        "plan": ["team"] * 7,
        "nr.employed": [(low + high) / 2, 0.0, -1e308, far_high + 1, far_high - 1, math.nan,
                        math.inf],
        "visits": [3, 3, 3, 3, 3, 3, 3],
    })
    out = score(bundle, leads)
    warned = ["nr.employed outside the training range"]
    assert out["warnings"].tolist() == [[], warned, warned, warned, [], [], warned]
    assert np.isfinite(out["probability"]).all(), "still scored"
    one = score(bundle, leads.iloc[[1]])  # the single-lead path says the same
    assert one["warnings"].tolist() == [warned]
    two = pd.DataFrame({"plan": ["team"], "nr.employed": [0.0], "visits": [1e9]})
    assert score(bundle, two)["warnings"].tolist() == [
        ["nr.employed outside the training range", "visits outside the training range"]]


def test_widening_rule() -> None:
    assert widened(10.0, 20.0) == (0.0, 30.0)
    assert widened(5.0, 5.0) == (0.0, 10.0)  # constant in training: its own size either side
    assert widened(0.0, 0.0) == (-1.0, 1.0)


def test_batch_warns_counts_and_rejects_out_of_bounds(bundle: ModelBundle,
                                                      tmp_path: Path) -> None:
    frame = leads_frame(40, seed=9).drop(columns=["converted", "created_at"])
    frame["visits"] = frame["visits"].astype(str)
    frame.loc[3, "nr.employed"] = 0.0       # far outside training: scored, warned
    frame.loc[7, "nr.employed"] = -1e308    # likewise
    frame.loc[11, "visits"] = "41"          # past the spec's bound: rejected
    frame.loc[12, "visits"] = "-1"
    frame.loc[13, "visits"] = ""            # missing: scored as missing, no warning
    src = tmp_path / "leads.csv"
    frame.to_csv(src, index=False)
    out = tmp_path / "scores.parquet"
    summary = rescore(bundle, src, out, chunk_rows=16).as_dict()
    assert summary["rows"] == 40 and summary["scored"] == 38 and summary["rejected"] == 2
    assert summary["range_warnings"] == 2
    rejects = pd.read_csv(summary["rejects_file"])
    assert rejects["row"].tolist() == [12, 13]
    assert rejects["reason"].tolist() == ["'visits' is outside its bounds [0, 40]"] * 2
    scored = pq.read_table(out).to_pandas()
    warned = dict(zip(scored["lead_id"], scored["warnings"].map(json.loads), strict=True))
    assert warned[frame.loc[3, "lead_id"]] == ["nr.employed outside the training range"]
    assert warned[frame.loc[7, "lead_id"]] == ["nr.employed outside the training range"]
    assert sum(1 for w in warned.values() if w) == 2


@pytest.mark.parametrize(("bounds", "message"), [
    ({"visit": [0, 40]}, "bounds names 'visit', which is not under features.numeric; "
                         "did you mean 'visits'?"),
    ({"plan": [0, 1]}, "bounds names 'plan', which is not under features.numeric"),
    ({"visits": [40, 0]}, "bounds.visits: the low bound must be below the high bound"),
    ({"visits": [1]}, "bounds.visits"),
])
def test_bad_bounds_in_a_spec_are_one_plain_message(tmp_path: Path, bounds: dict,
                                                     message: str) -> None:
    path = tmp_path / "spec.yaml"
    path.write_text(yaml.safe_dump(spec_dict(tmp_path / "leads.csv", bounds=bounds)))
    with pytest.raises(SpecError, match=str(path)) as caught:
        load_spec(path)
    assert message in str(caught.value)
