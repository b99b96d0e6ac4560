"""The model bundle (text + JSON, verified on load) and the one scoring function for all."""

from __future__ import annotations

import hashlib
import json
import re
import shutil
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path

import numpy as np
import pandas as pd
import pytest

from leadscore.config import project_root
from leadscore.errors import ModelError
from leadscore.scoring import (
    META_FILE,
    MODEL_FILE,
    ModelBundle,
    field_impacts,
    load_bundle,
    predict,
    score,
    score_records,
)

PICKLE_MAGIC = re.compile(rb"^\x80[\x02-\x05]")


@pytest.fixture(scope="module")
def leads(synth_leads: pd.DataFrame) -> pd.DataFrame:
    return synth_leads.iloc[:500].reset_index(drop=True)


def test_bundle_round_trip_gives_identical_probabilities(
    trained, bundle: ModelBundle, leads: pd.DataFrame, tmp_path: Path
) -> None:
    local = load_bundle(trained.bundle_dir)
    local.save(tmp_path / "copy")
    again = load_bundle(tmp_path / "copy")
    expected = score(bundle, leads)
    for other in (local, again):
        got = score(other, leads)
        np.testing.assert_array_equal(got["probability"], expected["probability"])
        assert got["tier"].tolist() == expected["tier"].tolist()
    assert again.meta["tiers"] == bundle.meta["tiers"]
    assert again.builder.to_dict() == bundle.builder.to_dict()


def test_bundle_metadata_describes_the_model(trained) -> None:
    meta = json.loads((trained.bundle_dir / META_FILE).read_text(encoding="utf-8"))
    model_bytes = (trained.bundle_dir / MODEL_FILE).read_bytes()
    assert meta["model_sha256"] == hashlib.sha256(model_bytes).hexdigest()
    features = meta["encoder"]["features"]
    assert [f["name"] for f in features] == trained.spec.feature_columns
    assert {f["kind"] for f in features} == {"categorical"}
    channel = next(f for f in features if f["name"] == "source_channel")
    assert "referral" in channel["levels"] and "cold_outbound" in channel["levels"]
    assert meta["tiers"]["A"] > meta["tiers"]["B"] > meta["tiers"]["C"]
    assert meta["metrics"]["test_roc_auc"] == pytest.approx(trained.metrics["test_roc_auc"])
    assert re.fullmatch(r"[0-9a-f]{64}", meta["fingerprint"]["sha256"])
    assert meta["split"] == "time"
    assert meta["version"] == trained.version


def test_tampered_model_file_is_refused(trained, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(trained.bundle_dir, tmp_path / "bundle"))
    text = (copy / MODEL_FILE).read_text(encoding="utf-8")
    tampered = text.replace("leaf_value=", "leaf_value=1", 1)
    (copy / MODEL_FILE).write_text(tampered, encoding="utf-8")
    with pytest.raises(ModelError, match="checksum does not match bundle.json; refusing to load"):
        load_bundle(copy)


def test_missing_bundle_json(trained, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(trained.bundle_dir, tmp_path / "bundle"))
    (copy / META_FILE).unlink()
    with pytest.raises(ModelError, match=r"not a model bundle \(no bundle.json\)"):
        load_bundle(copy)


def test_missing_model_file(trained, tmp_path: Path) -> None:
    copy = Path(shutil.copytree(trained.bundle_dir, tmp_path / "bundle"))
    (copy / MODEL_FILE).unlink()
    with pytest.raises(ModelError, match="model file model.txt is missing"):
        load_bundle(copy)


def test_bundle_holds_only_text_files(trained) -> None:
    files = sorted(p.name for p in trained.bundle_dir.iterdir())
    assert files == [META_FILE, MODEL_FILE]
    for path in trained.bundle_dir.iterdir():
        data = path.read_bytes()
        assert not PICKLE_MAGIC.match(data), f"{path} is a pickle"
        data.decode("utf-8")  # text, or this raises
    assert (trained.bundle_dir / MODEL_FILE).read_text(encoding="utf-8").startswith("tree\n")


def test_no_code_saves_a_model_with_pickle_or_joblib() -> None:
    """What `git grep -n pickle` checks, over the working tree (new files included)."""
    dump = re.compile(r"\b(pickle|cloudpickle|joblib)\.dumps?\(|skops|\.pkl\b")
    offenders = []
    for folder in ("src", "serve"):
        for path in (project_root() / folder).rglob("*.py"):
            for number, line in enumerate(path.read_text(encoding="utf-8").splitlines(), 1):
                if dump.search(line):
                    where = path.relative_to(project_root())
                    offenders.append(f"{where}:{number}: {line.strip()}")
    assert offenders == []


def test_score_output(bundle: ModelBundle, leads: pd.DataFrame) -> None:
    out = score(bundle, leads)
    assert list(out.columns[:6]) == ["lead_id", "probability", "score", "tier", "tier_label",
                                     "percentile"]
    assert len(out) == len(leads)
    assert out["lead_id"].tolist() == leads["lead_id"].tolist()
    p = out["probability"].to_numpy()
    assert p.dtype == np.float64
    assert np.all((p >= 0) & (p <= 1))
    assert out["score"].tolist() == [int(round(100 * v)) for v in p]
    assert set(out["tier"]) <= {"A", "B", "C", "D"}
    assert set(out["tier"]) == {"A", "B", "C", "D"}, "500 leads should span every tier"
    cutoffs = bundle.meta["tiers"]
    expected = np.select(
        [p >= cutoffs["A"], p >= cutoffs["B"], p >= cutoffs["C"]], ["A", "B", "C"], default="D"
    )
    assert out["tier"].tolist() == expected.tolist()
    assert np.all((out["percentile"] >= 0) & (out["percentile"] <= 100))
    assert (out["model_version"] == bundle.version).all()


def test_score_rank_matches_probability(bundle: ModelBundle, leads: pd.DataFrame) -> None:
    out = score(bundle, leads).sort_values("probability")
    assert out["score"].is_monotonic_increasing
    assert out["percentile"].is_monotonic_increasing
    order = {"D": 0, "C": 1, "B": 2, "A": 3}
    assert out["tier"].map(order).is_monotonic_increasing


def test_columns_are_matched_by_name(bundle: ModelBundle, leads: pd.DataFrame) -> None:
    shuffled = leads[list(reversed(leads.columns))]
    np.testing.assert_array_equal(
        score(bundle, shuffled)["probability"], score(bundle, leads)["probability"]
    )


def test_unseen_category_and_missing_field_are_scored(
    bundle: ModelBundle, leads: pd.DataFrame
) -> None:
    odd = leads.iloc[:5].copy()
    odd["source_channel"] = "carrier_pigeon"
    odd = odd.drop(columns=["country", "budget"])
    out = score(bundle, odd)
    assert len(out) == 5
    assert np.all(np.isfinite(out["probability"])) and np.all(out["probability"].between(0, 1))
    # an unseen category is scored exactly like a missing one
    missing = leads.iloc[:5].drop(columns=["country", "budget", "source_channel"])
    np.testing.assert_array_equal(out["probability"], score(bundle, missing)["probability"])
    # a lead with no fields at all is still a lead
    scores, ids = score_records(bundle, [{}], reasons=2)
    assert ids == [None] and 0 <= scores.probability[0] <= 1


def test_records_path_matches_frame_path(bundle: ModelBundle, leads: pd.DataFrame) -> None:
    sample = leads.iloc[:10]
    records = [
        {k: v for k, v in row.items() if v != ""} for row in sample.to_dict(orient="records")
    ]
    scores, ids = score_records(bundle, records)
    assert ids == sample["lead_id"].tolist()
    frame = score(bundle, leads)  # Arrow path on 500 rows, empty cells as ""
    np.testing.assert_allclose(
        scores.probability, frame["probability"].iloc[:10], rtol=0, atol=1e-12
    )


def test_lightgbm_contributions_sum_to_the_raw_margin(
    bundle: ModelBundle, leads: pd.DataFrame
) -> None:
    matrix = bundle.builder.transform(leads)
    contrib = np.asarray(bundle.booster.predict(matrix, pred_contrib=True))
    raw = np.asarray(bundle.booster.predict(matrix, raw_score=True))
    assert contrib.shape == (len(leads), len(bundle.builder.features_) + 1)
    np.testing.assert_allclose(contrib.sum(axis=1), raw, rtol=0, atol=1e-9)
    assert np.ptp(contrib[:, -1]) == 0, "the expected value is the same for every lead"


def test_impacts_add_up_to_the_score_difference_from_the_average_lead(
    bundle: ModelBundle, leads: pd.DataFrame
) -> None:
    matrix = bundle.builder.transform(leads)
    scores, contrib = predict(bundle, matrix, reasons=1)
    assert contrib is not None
    # the contributions scoring uses are the whole margin, and the margin is the probability's
    np.testing.assert_allclose(contrib.sum(axis=1), scores.margin, rtol=0, atol=1e-9)
    np.testing.assert_allclose(
        np.clip(bundle.calibrator.transform(scores.margin), 0, 1), scores.probability,
        rtol=0, atol=1e-12,
    )
    plain, _ = predict(bundle, matrix, reasons=0)
    np.testing.assert_allclose(plain.probability, scores.probability, rtol=0, atol=1e-9)
    base = contrib[:, -1]  # the expected value: the average lead's log-odds
    assert np.ptp(base) < 1e-12

    impacts = field_impacts(bundle, contrib, scores.margin)
    assert impacts.shape == (len(leads), len(bundle.inputs)), "every field, not just the top k"
    points_lead = 100 * bundle.calibrator.transform(scores.margin)
    points_base = 100 * bundle.calibrator.transform(base)
    np.testing.assert_allclose(impacts.sum(axis=1), points_lead - points_base, rtol=0, atol=1e-6)
    assert np.abs(impacts).sum() > 0


def _check_reasons(reasons: list[dict], impacts: np.ndarray, k: int) -> None:
    """Up to k raisers, largest first, then up to k lowerers, most negative first; exactly the
    fields with the largest and smallest impacts, none that rounds to 0."""
    up = [r["impact"] for r in reasons if r["impact"] > 0]
    down = [r["impact"] for r in reasons if r["impact"] < 0]
    assert [r["impact"] for r in reasons] == up + down, "raisers first, then lowerers"
    assert all(r["impact"] != 0 for r in reasons)
    assert len(up) <= k and len(down) <= k
    assert up == sorted(up, reverse=True) and down == sorted(down)
    rounded = [round(float(v), 2) for v in impacts]
    assert up == sorted((v for v in rounded if v > 0), reverse=True)[:k]
    assert down == sorted(v for v in rounded if v < 0)[:k]
    assert len({r["feature"] for r in reasons}) == len(reasons)


@pytest.mark.parametrize("k", [1, 3, 10])
def test_reasons_are_the_top_k_raisers_then_the_top_k_lowerers(
    bundle: ModelBundle, leads: pd.DataFrame, k: int
) -> None:
    sample = leads.iloc[:50]
    out = score(bundle, sample, reasons=k)
    scores, contrib = predict(bundle, bundle.builder.transform(sample), reasons=k)
    assert contrib is not None
    impacts = field_impacts(bundle, contrib, scores.margin)
    both = 0
    for i, reasons in enumerate(out["reasons"]):
        _check_reasons(reasons, impacts[i], k)
        signs = {r["impact"] > 0 for r in reasons}
        both += signs == {True, False}
        for r in reasons:
            j = bundle.inputs.index(r["feature"])
            assert r["impact"] == round(float(impacts[i, j]), 2)
            raw = sample.iloc[i][r["feature"]]
            assert r["value"] == raw, "the reason names the lead's own value"
    assert both > 0, "some lead has factors both ways"


def test_one_lead_gets_its_positive_and_negative_factors(
    bundle: ModelBundle, leads: pd.DataFrame
) -> None:
    """The API's path (one lead, records in): raisers > 0 sorted down, lowerers < 0 sorted up,
    at most k each; and the impacts of all fields still add up to score minus average score."""
    k = 2
    for row in leads.iloc[:20].to_dict(orient="records"):
        record = {name: value for name, value in row.items() if value != ""}
        scores, _ = score_records(bundle, [record], reasons=k)
        assert scores.reasons is not None
        (reasons,) = scores.reasons
        up = [r["impact"] for r in reasons if r["impact"] > 0]
        down = [r["impact"] for r in reasons if r["impact"] < 0]
        assert len(up) + len(down) == len(reasons) and 1 <= len(reasons) <= 2 * k
        assert len(up) <= k and len(down) <= k
        assert up == sorted(up, reverse=True) and down == sorted(down)
        assert [r["impact"] for r in reasons] == up + down

        matrix = bundle.builder.transform({n: [record.get(n)] for n in bundle.inputs})
        plain, contrib = predict(bundle, matrix, reasons=k)
        assert contrib is not None
        impacts = field_impacts(bundle, contrib, plain.margin)
        _check_reasons(reasons, impacts[0], k)
        base = 100 * bundle.calibrator.transform(contrib[:, -1])
        assert impacts.sum() == pytest.approx(100 * plain.probability[0] - base[0], abs=1e-6)
        assert contrib.sum() == pytest.approx(plain.margin[0], abs=1e-9)


def test_single_row_predictions_are_those_of_booster_predict(
    bundle: ModelBundle, leads: pd.DataFrame
) -> None:
    """LightGBM's single-row API (few rows) gives the very numbers `Booster.predict` gives."""
    from leadscore.scoring import RowPredictor

    matrix = bundle.builder.transform(leads.iloc[:40])
    matrix[0, :] = np.nan  # every field missing
    matrix[1, :] = 0.0
    raw = RowPredictor.create(bundle.booster, "raw")
    contrib = RowPredictor.create(bundle.booster, "contrib")
    assert raw is not None and contrib is not None
    np.testing.assert_array_equal(
        raw.predict(matrix)[:, 0], bundle.booster.predict(matrix, raw_score=True, num_threads=1)
    )
    np.testing.assert_array_equal(
        contrib.predict(matrix), bundle.booster.predict(matrix, pred_contrib=True, num_threads=1)
    )
    # one row at a time (the path an API lead takes, through this thread's own buffers), from
    # two threads at once: each row still gets its own numbers, and they are not shared buffers
    expected = bundle.booster.predict(matrix, raw_score=True, num_threads=1)
    expected_contrib = bundle.booster.predict(matrix, pred_contrib=True, num_threads=1)

    def one_by_one(_: int) -> bool:
        for _round in range(25):
            for i in range(len(matrix)):
                first = raw.predict(matrix[i:i + 1])
                if first[0, 0] != expected[i]:
                    return False
                if not np.array_equal(contrib.predict(matrix[i:i + 1])[0], expected_contrib[i]):
                    return False
                first[0, 0] = -1.0  # the caller owns what it got: the next row is unaffected
        return True

    with ThreadPoolExecutor(2) as pool:
        assert all(pool.map(one_by_one, range(2)))
    # and scoring one lead at a time agrees with scoring them all at once, reasons included
    sample = leads.iloc[:12]
    together = score(bundle, sample, reasons=3)
    one_by_one = pd.concat([score(bundle, sample.iloc[[i]], reasons=3) for i in range(12)])
    for column in ("probability", "score", "tier", "percentile", "reasons"):
        assert together[column].tolist() == one_by_one[column].tolist(), column
    assert one_by_one["score"].dtype == together["score"].dtype == np.int64
