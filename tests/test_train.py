"""Splits, calibration and tiers: the training choices a data team must be able to trust."""

from __future__ import annotations

import json

import numpy as np
import pandas as pd
import pytest

from leadscore.config import DatasetSpec
from leadscore.data import ID, LABEL, ROW, TIME
from leadscore.train import Calibrator, fit_model, split_leads, tier_cutoffs


def make_spec(**train: object) -> DatasetSpec:
    return DatasetSpec.model_validate(
        {
            "name": "handmade",
            "leads": {"path": "unused.csv", "id": "lead_id", "created_at": "created_at"},
            "outcome": {"column": "won", "positive": ["1"], "negative": ["0"]},
            "features": {"categorical": ["channel"], "numeric": ["visits"]},
            "train": {"min_per_class": 5, **train},
        }
    )


def make_leads(n: int = 3000, seed: int = 0, open_share: float = 0.05) -> pd.DataFrame:
    """The `leads` stage as data.load_leads returns it, with a real signal in both features."""
    rng = np.random.default_rng(seed)
    channel = rng.choice(["web", "event", "referral", "cold"], n)
    visits = rng.poisson(3, n).astype(float)
    logit = -1.2 + 0.35 * visits + pd.Series(channel).map(
        {"web": 0.0, "event": 0.6, "referral": 1.0, "cold": -1.2}
    ).to_numpy()
    label = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    label[rng.random(n) < open_share] = np.nan
    times = pd.Timestamp("2024-01-01") + pd.to_timedelta(rng.permutation(n) * 3600, unit="s")
    return pd.DataFrame(
        {
            ID: [f"L{i}" for i in range(n)],
            ROW: np.arange(1, n + 1),
            TIME: times,
            LABEL: label,
            "channel": channel.astype(object),
            "visits": visits,
        }
    )


def test_time_split_holds_out_the_most_recent_leads() -> None:
    leads = make_leads()
    split = split_leads(leads, make_spec())
    assert split.kind == "time"
    times = leads[TIME].to_numpy()
    assert times[split.test].min() >= times[np.concatenate([split.train, split.valid])].max()
    assert times[split.valid].min() >= times[split.train].max()
    labelled = int(leads[LABEL].notna().sum())
    assert abs(len(split.test) - 0.2 * labelled) <= 1
    assert abs(len(split.valid) - 0.2 * (labelled - len(split.test))) <= 1
    everything = np.concatenate([split.train, split.valid, split.test])
    assert len(everything) == len(set(everything)) == labelled, "slices are disjoint, complete"
    assert leads[LABEL].iloc[everything].notna().all(), "open leads are never trained on"


def test_time_split_follows_test_fraction() -> None:
    leads = make_leads(1000, open_share=0.0)
    split = split_leads(leads, make_spec(test_fraction=0.3))
    assert len(split.test) == 300


def test_stratified_split_without_a_clock_keeps_the_class_balance() -> None:
    leads = make_leads(4000).drop(columns=[TIME])
    split = split_leads(leads, make_spec())
    assert split.kind == "stratified"
    y = leads[LABEL].to_numpy()
    labelled = y[~np.isnan(y)]
    rate = labelled.mean()
    assert abs(len(split.test) - 0.2 * len(labelled)) <= 1
    for part in (split.train, split.valid, split.test):
        assert abs(y[part].mean() - rate) < 0.005
    assert len(np.intersect1d(split.test, split.train)) == 0
    assert len(np.intersect1d(split.test, split.valid)) == 0


def test_stratified_split_is_seeded() -> None:
    leads = make_leads(1000).drop(columns=[TIME])
    first = split_leads(leads, make_spec(seed=1))
    again = split_leads(leads, make_spec(seed=1))
    other = split_leads(leads, make_spec(seed=2))
    np.testing.assert_array_equal(first.test, again.test)
    assert not np.array_equal(first.test, other.test)


def _calibration_data(n: int = 20_000) -> tuple[np.ndarray, np.ndarray]:
    rng = np.random.default_rng(11)
    margin = rng.normal(0.0, 2.0, n)
    y = (rng.random(n) < 1 / (1 + np.exp(-(0.5 * margin - 1.0)))).astype(float)
    return margin, y


def _plain_numbers(value: object) -> bool:
    if isinstance(value, dict):
        return all(isinstance(k, str) and _plain_numbers(v) for k, v in value.items())
    if isinstance(value, list):
        return all(_plain_numbers(v) for v in value)
    return type(value) in (float, int, str)


@pytest.mark.parametrize("method", ["platt", "isotonic", "none"])
def test_calibrating_one_value_gives_the_array_path_s_double(method: str) -> None:
    """The API's one-lead path (`transform_one`, Python floats) and the batch path (arrays)
    give the same double for every margin, so a lead scores the same either way."""
    margin, y = _calibration_data()
    calibrator = Calibrator.from_dict({"method": "none"}) if method == "none" else \
        Calibrator(method).fit(margin, y, seed=0)  # type: ignore[arg-type]
    grid = np.concatenate([np.linspace(-40, 40, 4001), margin[:500]])
    batch = calibrator.transform(grid)
    one = np.array([calibrator.transform_one(float(m)) for m in grid])
    np.testing.assert_array_equal(one, batch)
    assert isinstance(calibrator.transform_one(0.25), float)


@pytest.mark.parametrize("method", ["platt", "isotonic", "auto"])
def test_calibrator_state_is_plain_json_and_maps_monotonically(method: str) -> None:
    margin, y = _calibration_data()
    calibrator = Calibrator(method).fit(margin, y, seed=0)
    state = calibrator.to_dict()
    assert _plain_numbers(state), f"calibrator state must be plain JSON: {state!r:.200}"
    assert state["method"] in {"platt", "isotonic"}
    restored = Calibrator.from_dict(json.loads(json.dumps(state)))
    grid = np.linspace(-12, 12, 2001)
    p = calibrator.transform(grid)
    np.testing.assert_array_equal(restored.transform(grid), p)
    assert np.all(np.diff(p) >= 0), "a higher margin never gets a lower probability"
    assert p[-1] - p[0] > 0.8
    assert np.all((p >= 0) & (p <= 1))


def test_platt_recovers_the_true_mapping() -> None:
    margin, y = _calibration_data()
    state = Calibrator("platt").fit(margin, y).to_dict()
    assert state["a"] == pytest.approx(0.5, abs=0.05)
    assert state["b"] == pytest.approx(-1.0, abs=0.07)


def test_auto_calibration_reports_both_candidates() -> None:
    margin, y = _calibration_data(4000)
    calibrator = Calibrator("auto").fit(margin, y)
    assert set(calibrator.losses_) == {"platt", "isotonic"}
    chosen = min(calibrator.losses_, key=calibrator.losses_.get)
    assert calibrator.to_dict()["method"] == chosen


def test_tier_cutoffs_descend() -> None:
    p = np.random.default_rng(5).random(100_000)
    cutoffs = tier_cutoffs(p)
    assert list(cutoffs) == ["A", "B", "C"]
    assert cutoffs["A"] > cutoffs["B"] > cutoffs["C"]
    # top 10% A, next 20% B, next 30% C
    assert cutoffs["A"] == pytest.approx(0.9, abs=0.01)
    assert cutoffs["B"] == pytest.approx(0.7, abs=0.01)
    assert cutoffs["C"] == pytest.approx(0.4, abs=0.01)


@pytest.fixture(scope="module")
def fitted():  # type: ignore[no-untyped-def]
    leads = make_leads(3000)
    return leads, fit_model(leads, make_spec())


def test_fit_model_learns_the_signal(fitted) -> None:  # type: ignore[no-untyped-def]
    from sklearn.metrics import roc_auc_score

    leads, model = fitted
    test = leads.iloc[model.split.test]
    p = model.predict_proba(test)
    assert np.all((p > 0) & (p < 1))
    assert roc_auc_score(test[LABEL], p) > 0.7
    assert 0 < model.best_iteration < 2000, "early stopping chose the tree count"
    assert model.booster.num_trees() == model.best_iteration


def test_fit_model_tiers_descend_and_split_is_by_time(fitted) -> None:  # type: ignore[no-untyped-def]
    _, model = fitted
    assert model.split.kind == "time"
    assert model.tiers["A"] > model.tiers["B"] > model.tiers["C"]
    assert len(model.percentiles) == 101
    assert model.percentiles == sorted(model.percentiles)


def test_more_visits_never_hurts_when_monotone() -> None:
    leads = make_leads(2000)
    spec = DatasetSpec.model_validate(
        {**make_spec().model_dump(exclude={"source"}),
         "features": {"categorical": ["channel"], "numeric": ["visits"],
                      "monotone": {"visits": 1}}}
    )
    model = fit_model(leads, spec)
    grid = pd.DataFrame({"channel": ["web"] * 30, "visits": np.arange(30, dtype=float)})
    p = model.predict_proba(grid)
    assert np.all(np.diff(p) >= -1e-12)
    assert p[-1] > p[0]


def test_training_tells_its_stages_and_every_boosting_round() -> None:
    """What `leadscore train` draws: the stages in order and each round up to the last tree."""
    from leadscore import progress

    stages: list[str] = []
    rounds: list[tuple[int, int]] = []
    listener = progress.Listener(on_stage=stages.append,
                                 on_round=lambda done, total: rounds.append((done, total)))
    with progress.listening(listener):
        model = fit_model(make_leads(2000, seed=3), make_spec())
    assert "calibration" in stages
    assert [r[0] for r in rounds[:3]] == [1, 2, 3]
    assert rounds[-1][0] >= model.best_iteration  # early stopping ran past the best tree
    # nobody listening: the same fit, no callback added
    assert progress.round_callback(100) is None
