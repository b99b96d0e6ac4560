"""One lead scored through its own fast path (`FeatureBuilder.transform_one`, what the API uses)
gives the numbers the column paths give: the small-batch dict path and the DataFrame (Arrow)
path batch scoring takes, on random leads with missing fields, unknown categories, text numbers
and values far outside training."""

from __future__ import annotations

import math
import random
from typing import Any

import lightgbm as lgb
import numpy as np
import pandas as pd
import pytest

from leadscore.errors import DataError
from leadscore.features import FeatureBuilder
from leadscore.ranges import training_ranges
from leadscore.scoring import ModelBundle, score, score_arrays, score_records
from leadscore.train import Calibrator, percentile_grid, tier_cutoffs

CATEGORICAL = ["channel", "industry", "size"]
NUMERIC = ["visits", "revenue"]
LEVELS = {"channel": ["web", "event", "referral", "ads"],
          "industry": ["retail", "tech", "health"],
          "size": ["1-10", "11-50", "51-200", "200+"]}
TITLES = ["CEO", "VP Sales", "Sales Manager", "Engineer", "Intern", "Head of Marketing"]
DOMAINS = ["gmail.com", "acme.com", "yahoo.com", "corp.io"]


def _training_leads(n: int, seed: int) -> pd.DataFrame:
    rng = np.random.default_rng(seed)
    frame = pd.DataFrame({name: rng.choice(levels, n) for name, levels in LEVELS.items()})
    frame["visits"] = rng.poisson(5, n).astype(float)
    frame["revenue"] = rng.normal(100.0, 30.0, n)
    frame["job_title"] = rng.choice(TITLES, n)
    frame["email"] = [f"p{i}@{d}" for i, d in enumerate(rng.choice(DOMAINS, n))]
    frame["phone"] = np.where(rng.random(n) < 0.5, "+1 555 0100", "")
    frame["budget"] = np.where(rng.random(n) < 0.6, "yes", "")
    frame["need"] = np.where(rng.random(n) < 0.4, "high", "")
    return frame


def _builder(frame: pd.DataFrame) -> FeatureBuilder:
    return FeatureBuilder(
        categorical=CATEGORICAL, numeric=NUMERIC, missing_values=("", "NA", "n/a"),
        derive={"job_title": "job_title", "email": "email", "phone": "phone",
                "bant": ["budget", "need"]},
    ).fit(frame)


def _random_lead(rng: random.Random, i: int) -> dict[str, Any]:
    """A lead as a CRM might send it: some fields absent or null, unseen categories, padded
    text, numbers as text, missing markers and numbers far outside training."""
    lead: dict[str, Any] = {"lead_id": f"L{i}"}
    for name, levels in LEVELS.items():
        lead[name] = rng.choice([*levels, *levels, "unseen", f"  {levels[0]} ", None, "NA", ""])
    lead["visits"] = rng.choice([3.0, 0.0, 7.5, None, math.nan, 1e300, -1e308, 12, "4.5", " 6 ",
                                 "NA", "", math.inf])
    lead["revenue"] = rng.choice([95.5, -20.0, None, 1e9, "130", 250.25, 0])
    lead["job_title"] = rng.choice([*TITLES, "Chief Bottle Washer", None, "", "  CEO  ", "n/a"])
    lead["email"] = rng.choice(["a@gmail.com", "b@acme.com", "not-an-email", None, "",
                                "c@new.org"])
    lead["phone"] = rng.choice(["+1 555 0101", "", None, "NA"])
    lead["budget"] = rng.choice(["yes", "", None, "no"])
    lead["need"] = rng.choice(["high", "n/a", None])
    for name in list(lead):
        if name != "lead_id" and rng.random() < 0.15:
            del lead[name]  # absent, as in a CRM export without the column
    return lead


def _columns(builder: FeatureBuilder, leads: list[dict[str, Any]]) -> dict[str, list[Any]]:
    return {name: [lead.get(name) for lead in leads] for name in builder.inputs_}


@pytest.fixture(scope="module")
def leads() -> list[dict[str, Any]]:
    rng = random.Random(5)
    return [_random_lead(rng, i) for i in range(400)]


def _bundle(frame: pd.DataFrame, calibration: dict[str, Any]) -> ModelBundle:
    builder = _builder(frame)
    matrix = builder.transform(frame)
    rng = np.random.default_rng(3)
    logit = 0.4 * (frame["channel"] == "referral") + 0.1 * frame["visits"].fillna(0) - 0.8
    label = (rng.random(len(frame)) < 1 / (1 + np.exp(-logit))).astype(int)
    params = {"objective": "binary", "num_leaves": 7, "min_data_in_leaf": 5, "verbose": -1,
              "num_threads": 1, "seed": 1}
    data = lgb.Dataset(matrix, label, categorical_feature=builder.categorical_indices_,
                       free_raw_data=False)
    booster = lgb.train(params, data, num_boost_round=25)
    calibrator = Calibrator.from_dict(calibration)
    probability = calibrator.transform(booster.predict(matrix, raw_score=True))
    meta = {"name": "one-lead", "version": "1", "id_column": "lead_id",
            "tiers": tier_cutoffs(probability), "percentiles": percentile_grid(probability),
            "ranges": training_ranges(builder, matrix)}
    return ModelBundle(booster=booster, builder=builder, calibrator=calibrator, meta=meta)


@pytest.fixture(scope="module", params=["platt", "isotonic"])
def bundle(request: pytest.FixtureRequest) -> ModelBundle:
    calibration: dict[str, Any] = (
        {"method": "platt", "a": 0.9, "b": -0.1} if request.param == "platt"
        else {"method": "isotonic", "x": [-3.0, -1.0, 0.0, 1.0, 3.0],
              "y": [0.01, 0.1, 0.3, 0.6, 0.95]})
    return _bundle(_training_leads(600, seed=2), calibration)


def test_transform_one_encodes_as_the_small_column_path(leads: list[dict[str, Any]]) -> None:
    builder = _builder(_training_leads(600, seed=2))
    kinds = {f.derive or f.kind for f in builder.features_}
    assert kinds >= {"categorical", "numeric", "seniority", "department", "email_domain",
                     "present", "count_filled"}  # every kind of feature is exercised
    one = np.vstack([builder.transform_one(lead) for lead in leads])
    assert one.dtype == np.float64 and one.shape == (len(leads), len(builder.features_))
    for start in range(0, len(leads), 50):  # the small (per-value) path: up to 64 rows
        chunk = leads[start:start + 50]
        np.testing.assert_array_equal(one[start:start + 50],
                                      builder.transform(_columns(builder, chunk)))
    assert np.isnan(one).any() and (one[:, 0] >= 0).any()  # both missing and known values seen


def test_transform_one_matches_a_dataframe_batch(leads: list[dict[str, Any]]) -> None:
    """Against the Arrow path batch scoring takes (more than 64 rows, from a DataFrame), on the
    values a CSV or Parquet file holds: text categories, numbers, nulls."""
    builder = _builder(_training_leads(600, seed=2))
    plain = [{k: (None if isinstance(v, str) and k in NUMERIC else v) for k, v in lead.items()}
             for lead in leads]
    frame = pd.DataFrame(_columns(builder, plain))
    frame[NUMERIC] = frame[NUMERIC].astype(float)
    one = np.vstack([builder.transform_one(lead) for lead in plain])
    np.testing.assert_array_equal(one, builder.transform(frame))


def test_transform_one_refuses_bad_numbers_as_transform_does() -> None:
    builder = _builder(_training_leads(200, seed=4))
    with pytest.raises(DataError) as one:
        builder.transform_one({"visits": "twelve"})
    with pytest.raises(DataError) as columns:
        builder.transform({"visits": ["twelve"]})
    assert str(one.value) == str(columns.value) == "field 'visits' should be a number"


def test_an_empty_lead_is_all_missing() -> None:
    builder = _builder(_training_leads(200, seed=4))
    row = builder.transform_one({})
    np.testing.assert_array_equal(row, builder.transform(_columns(builder, [{}])))
    assert row.shape == (1, len(builder.features_))


@pytest.mark.parametrize("reasons", [0, 3])
def test_one_lead_scores_as_the_batch_paths(
    bundle: ModelBundle, leads: list[dict[str, Any]], reasons: int
) -> None:
    """Probability to 1e-12 (in fact bit for bit), score, tier, percentile, warnings, reasons
    and id: one lead at a time (the API) against all of them as columns and as a DataFrame."""
    sample = leads[:120]
    columns = score_arrays(bundle, _columns(bundle.builder, sample), reasons)
    plain = [{k: (None if isinstance(v, str) and k in NUMERIC else v) for k, v in lead.items()}
             for lead in sample]
    frame = pd.DataFrame(_columns(bundle.builder, plain) | {"lead_id": [x["lead_id"]
                                                                        for x in plain]})
    frame[NUMERIC] = frame[NUMERIC].astype(float)
    table = score(bundle, frame, reasons)
    warned = 0
    for i, lead in enumerate(sample):
        one, ids = score_records(bundle, [lead], reasons)
        assert ids == [lead["lead_id"]]
        assert one.probability[0] == pytest.approx(columns.probability[i], abs=1e-12)
        assert one.probability[0] == columns.probability[i]
        assert one.score.tolist() == [columns.score[i]]
        assert one.tier.tolist() == [columns.tier[i]]
        assert one.percentile.tolist() == [columns.percentile[i]]
        assert one.warnings == [columns.warnings[i]]
        assert one.matrix is not None and columns.matrix is not None
        np.testing.assert_array_equal(one.matrix[0], columns.matrix[i])
        if reasons:
            assert one.reasons == [columns.reasons[i]]  # type: ignore[index]
        else:
            assert one.reasons is None
        warned += bool(one.warnings[0])
        alone, _ = score_records(bundle, [plain[i]], reasons)
        assert alone.probability[0] == pytest.approx(table["probability"][i], abs=1e-12)
        assert [alone.score[0], alone.tier[0], alone.percentile[0]] == \
            [table["score"][i], table["tier"][i], table["percentile"][i]]
    assert warned > 0  # some leads were far outside training, and said so


def test_types_of_one_lead_results_are_those_of_a_batch(bundle: ModelBundle) -> None:
    one, _ = score_records(bundle, [{"channel": "web"}])
    two, _ = score_records(bundle, [{"channel": "web"}, {"channel": "ads"}])
    for name in ("probability", "score", "tier", "percentile"):
        assert getattr(one, name).dtype == getattr(two, name).dtype, name
    assert one.tier.tolist()[0] == two.tier.tolist()[0]
    assert isinstance(one.tier.tolist()[0], str)
