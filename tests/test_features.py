"""The encoder every scoring path shares: same leads, same matrix, whatever their shape."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pyarrow as pa
import pytest

from leadscore.errors import DataError
from leadscore.features import SMALL_BATCH, FeatureBuilder

CHANNELS = ["web", "event", "referral", "email", "café"]


@pytest.fixture(scope="module")
def history() -> pd.DataFrame:
    rng = np.random.default_rng(3)
    n = 200
    frame = pd.DataFrame(
        {
            "lead_id": [f"L{i}" for i in range(n)],
            "channel": rng.choice(CHANNELS, n).astype(object),
            "country": rng.choice(["FR", "DE", "ES", "rare"], n, p=[0.4, 0.3, 0.29, 0.01]),
            "visits": rng.integers(0, 20, n).astype("int64"),
            "budget": np.round(rng.normal(50, 10, n), 3),
        }
    )
    frame.loc[::17, "channel"] = None
    frame.loc[::13, "budget"] = np.nan
    return frame


@pytest.fixture(scope="module")
def builder(history: pd.DataFrame) -> FeatureBuilder:
    return FeatureBuilder(
        categorical=["channel", "country"], numeric=["visits", "budget"]
    ).fit(history)


def test_levels_learned_from_training_leads(builder: FeatureBuilder) -> None:
    levels = {f.name: f.levels for f in builder.features_}
    assert levels["channel"] == tuple(sorted(CHANNELS))
    assert "rare" not in levels["country"], "a level seen fewer than 3 times acts as missing"
    assert builder.feature_names_ == ["channel", "country", "visits", "budget"]
    assert builder.categorical_indices_ == [0, 1]
    assert builder.inputs_ == ["channel", "country", "visits", "budget"]


def test_transform_codes_and_numbers(builder: FeatureBuilder) -> None:
    frame = pd.DataFrame(
        {"channel": ["web", "café"], "country": ["DE", "FR"], "visits": [3, 0], "budget": [1.5, 2]}
    )
    matrix = builder.transform(frame)
    channel_levels = sorted(CHANNELS)
    assert matrix.dtype == np.float64 and matrix.shape == (2, 4)
    assert matrix[0].tolist() == [channel_levels.index("web"), 0.0, 3.0, 1.5]
    assert matrix[1].tolist() == [channel_levels.index("café"), 2.0, 0.0, 2.0]  # DE, ES, FR


def test_unseen_category_and_missing_column_are_nan_not_errors(builder: FeatureBuilder) -> None:
    frame = pd.DataFrame({"channel": ["carrier pigeon", "web", None], "visits": [1, 2, 3]})
    matrix = builder.transform(frame)
    assert np.isnan(matrix[0, 0]) and not np.isnan(matrix[1, 0]) and np.isnan(matrix[2, 0])
    assert np.isnan(matrix[:, 1]).all(), "absent column 'country' is all missing"
    assert np.isnan(matrix[:, 3]).all(), "absent column 'budget' is all missing"
    assert matrix[:, 2].tolist() == [1.0, 2.0, 3.0]
    # the same through the small-batch (dict) path
    records = builder.transform({"channel": ["carrier pigeon"], "visits": [1]})
    assert np.isnan(records[0, [0, 1, 3]]).all() and records[0, 2] == 1.0


def test_rare_training_level_is_scored_as_missing(builder: FeatureBuilder) -> None:
    matrix = builder.transform({"country": ["rare", "FR"]})
    assert np.isnan(matrix[0, 1]) and matrix[1, 1] == 2.0


def test_small_batch_and_arrow_paths_give_identical_matrices(
    history: pd.DataFrame, builder: FeatureBuilder
) -> None:
    assert len(history) > SMALL_BATCH
    big = builder.transform(history)  # Arrow path
    picks = [0, 5, 13, 17, 34, 51, 99, 120, 150, 199]  # includes missing channel and budget
    sample = history.iloc[picks]
    # the API's shape: a mapping of lists built from JSON-like dicts (None for missing)
    records = [
        {k: (None if pd.isna(v) else v) for k, v in row.items()}
        for row in sample.to_dict(orient="records")
    ]
    as_dict = {name: [r[name] for r in records] for name in builder.inputs_}
    small = builder.transform(as_dict)
    small_frame = builder.transform(sample.reset_index(drop=True))  # pandas, small path
    arrow = builder.transform(pa.Table.from_pandas(history, preserve_index=False))
    np.testing.assert_array_equal(small, big[picks])
    np.testing.assert_array_equal(small_frame, big[picks])
    np.testing.assert_array_equal(arrow, big)
    assert np.isnan(small).any(), "the sample must exercise missing values"


def test_numbers_as_text_match_numbers(builder: FeatureBuilder) -> None:
    as_text = builder.transform({"visits": ["3", " 4 ", ""], "budget": ["1.5", "", "2"]})
    as_numbers = builder.transform({"visits": [3, 4, None], "budget": [1.5, None, 2.0]})
    np.testing.assert_array_equal(as_text, as_numbers)
    frame = pd.DataFrame({"visits": ["3", " 4 ", ""] * 30, "budget": ["1.5", "", "2"] * 30})
    np.testing.assert_array_equal(builder.transform(frame)[:3], as_numbers)


def test_non_numeric_text_in_a_numeric_field_is_a_data_error(builder: FeatureBuilder) -> None:
    with pytest.raises(DataError, match="field 'visits' should be a number") as small:
        builder.transform({"visits": ["canary@example.com"]})
    assert "canary" not in str(small.value)
    frame = pd.DataFrame({"visits": ["canary@example.com"] * 100})
    with pytest.raises(DataError, match="field 'visits' should be a number") as big:
        builder.transform(frame)
    assert "canary" not in str(big.value)


def test_json_round_trip_gives_identical_transforms(
    history: pd.DataFrame, builder: FeatureBuilder
) -> None:
    state = json.loads(json.dumps(builder.to_dict()))
    restored = FeatureBuilder.from_dict(state)
    assert restored.feature_names_ == builder.feature_names_
    np.testing.assert_array_equal(restored.transform(history), builder.transform(history))
    few = {"channel": ["web", "unseen"], "visits": [1, 2]}
    np.testing.assert_array_equal(restored.transform(few), builder.transform(few))
    assert restored.to_dict() == builder.to_dict()


def test_column_order_does_not_matter(history: pd.DataFrame, builder: FeatureBuilder) -> None:
    shuffled = history[["budget", "lead_id", "visits", "country", "channel"]]
    np.testing.assert_array_equal(builder.transform(shuffled), builder.transform(history))
    few = shuffled.iloc[:5]
    np.testing.assert_array_equal(builder.transform(few), builder.transform(history.iloc[:5]))
    reversed_dict = {k: list(history[k].iloc[:5]) for k in reversed(builder.inputs_)}
    np.testing.assert_array_equal(
        builder.transform(reversed_dict), builder.transform(history.iloc[:5])
    )


def test_extra_columns_are_ignored(history: pd.DataFrame, builder: FeatureBuilder) -> None:
    extra = history.assign(email="someone@example.com", notes="call back")
    np.testing.assert_array_equal(builder.transform(extra), builder.transform(history))


def test_empty_input_gives_an_empty_matrix(builder: FeatureBuilder) -> None:
    assert builder.transform(pd.DataFrame({"channel": []})).shape == (0, 4)
    assert builder.transform({}).shape == (0, 4)
