"""Training quality machinery: the linear start (which drifted fields it extrapolates, its
regularisation chosen on validation), drift detection, calibration guards, refit, and reasons that
add up to the raw score (on small synthetic tables)."""

from __future__ import annotations

import numpy as np
import pandas as pd
import pytest
from sklearn.metrics import roc_auc_score

from leadscore.config import DatasetSpec
from leadscore.data import ID, LABEL, ROW, TIME
from leadscore.errors import SpecError
from leadscore.evaluate import tier_table, tiers_descend
from leadscore.linear_start import LINEAR_C_GRID, TREND_SEARCH_C, LinearStart
from leadscore.scoring import ModelBundle, field_impacts, score
from leadscore.train import Calibrator, drift_check, fit_model

FAST = {"learning_rate": 0.1, "monotone_constraints_method": "basic"}


def make_table(n: int = 3000, seed: int = 0, drift: bool = False) -> pd.DataFrame:
    """A training table whose conversion depends on a channel and a numeric 'index'; with
    `drift`, the index trends down over time and conversion rises with it (bank-like)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n, dtype=float)
    channel = rng.choice(["web", "event", "cold"], size=n, p=[0.5, 0.2, 0.3])
    index = rng.normal(0, 0.2, n) - 4.0 * t / n if drift else rng.normal(0, 1, n)
    visits = rng.poisson(3, n).astype(float)
    logit = -1.2 + np.select([channel == "event", channel == "cold"], [1.0, -1.0], 0.0)
    logit += -0.9 * index + 0.25 * visits - (2.5 if drift else 0.0)
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return pd.DataFrame({
        ROW: np.arange(1, n + 1), ID: [f"L{i}" for i in range(n)], TIME: t, LABEL: y,
        "channel": channel, "index": index, "visits": visits,
    })


def make_regime_table(n: int = 4000, seed: int = 0) -> pd.DataFrame:
    """Bank-like regimes: `index` trends down all along and conversion rises as it falls (a
    true trend); `rate` creeps up with time in the training slice, then collapses far below
    its training range with no effect on conversion (a trend that only looked real)."""
    rng = np.random.default_rng(seed)
    t = np.arange(n) / n
    channel = rng.choice(["web", "event", "cold"], size=n, p=[0.5, 0.2, 0.3])
    index = -4.0 * t + rng.normal(0, 0.05, n)
    rate = np.where(t < 0.64, 4.8 + 0.3 * t, 1.5 - t) + rng.normal(0, 0.02, n)
    visits = rng.poisson(3, n).astype(float)
    logit = -3.2 + np.select([channel == "event", channel == "cold"], [1.0, -1.0], 0.0)
    logit += -0.9 * index + 0.25 * visits
    y = (rng.random(n) < 1 / (1 + np.exp(-logit))).astype(float)
    return pd.DataFrame({
        ROW: np.arange(1, n + 1), ID: [f"L{i}" for i in range(n)], TIME: t * n, LABEL: y,
        "channel": channel, "index": index, "rate": rate, "visits": visits,
    })


def make_spec(**features: object) -> DatasetSpec:
    return DatasetSpec.model_validate({
        "name": "quality",
        "leads": {"path": "leads.csv", "id": "id", "file_order_is_time": True},
        "outcome": {"column": "y", "positive": ["1"]},
        "features": {"categorical": ["channel"], "numeric": ["index", "visits"], **features},
        "leak_audit": {"enabled": False},
    })


def bundle_of(model) -> ModelBundle:  # type: ignore[no-untyped-def]
    meta = {"tiers": model.tiers, "percentiles": model.percentiles}
    if model.linear is not None:
        meta["linear"] = model.linear.to_dict()
    return ModelBundle(model.booster, model.builder, model.calibrator, meta)


def test_linear_start_round_trips_and_its_contributions_add_up() -> None:
    rng = np.random.default_rng(1)
    x = np.column_stack([rng.integers(0, 3, 500).astype(float), rng.normal(size=500)])
    x[::17, 0] = np.nan
    x[::13, 1] = np.nan
    y = (rng.random(500) < 1 / (1 + np.exp(-(x[:, 0] - 1 + np.nan_to_num(x[:, 1]))))).astype(float)
    linear = LinearStart().fit(x, y, ["categorical", "numeric"], [3, 0])
    again = LinearStart.from_dict(linear.to_dict())
    np.testing.assert_allclose(again.margin(x), linear.margin(x), atol=1e-12)
    np.testing.assert_allclose(linear.contributions(x).sum(axis=1), linear.margin(x), atol=1e-9)


def test_damping_shortens_only_the_reach_beyond_the_training_range() -> None:
    rng = np.random.default_rng(3)
    x = rng.uniform(0, 1, size=(1000, 1))
    y = (rng.random(1000) < 1 / (1 + np.exp(-(4 * x[:, 0] - 2)))).astype(float)
    straight = LinearStart().fit(x, y, ["numeric"], [0])
    half = LinearStart.from_dict({**straight.to_dict(), "damping": 0.5})
    inside = np.linspace(x.min(), x.max(), 7).reshape(-1, 1)
    np.testing.assert_allclose(half.margin(inside), straight.margin(inside), atol=1e-12)
    edge, beyond = np.array([[x.max()]]), np.array([[x.max() + 0.5]])
    reach = straight.margin(beyond) - straight.margin(edge)
    assert reach[0] > 0.5  # a real slope: the test would pass trivially on a flat one
    np.testing.assert_allclose(half.margin(beyond) - half.margin(edge), reach / 2, atol=1e-9)
    held = LinearStart.from_dict({**straight.to_dict(), "damping": 0.0})
    np.testing.assert_allclose(held.margin(beyond), held.margin(edge), atol=1e-12)
    np.testing.assert_allclose(half.contributions(beyond).sum(axis=1), half.margin(beyond),
                               atol=1e-9)


def test_a_linear_start_saved_before_damping_extrapolates_straight() -> None:
    rng = np.random.default_rng(4)
    x = rng.normal(size=(500, 1))
    y = (rng.random(500) < 1 / (1 + np.exp(-x[:, 0]))).astype(float)
    state = LinearStart().fit(x, y, ["numeric"], [0]).to_dict()
    old = {k: v for k, v in state.items() if k != "damping"}
    old["features"] = [{k: v for k, v in f.items() if k not in ("low", "high")}
                       for f in state["features"]]
    far = np.array([[10.0]])
    np.testing.assert_allclose(LinearStart.from_dict(old).margin(far),
                               LinearStart.from_dict(state).margin(far), atol=1e-12)


def test_linear_start_never_contradicts_a_declared_direction() -> None:
    rng = np.random.default_rng(2)
    x = rng.normal(size=(2000, 1))
    y = (rng.random(2000) < 1 / (1 + np.exp(-2 * x[:, 0]))).astype(float)  # truly increasing
    linear = LinearStart().fit(x, y, ["numeric"], [0], monotone=[-1])
    grid = np.linspace(-3, 3, 20).reshape(-1, 1)
    assert np.all(np.diff(linear.margin(grid)) <= 1e-12), "declared -1: never rises"


def test_linear_start_excluded_features_weigh_nothing() -> None:
    rng = np.random.default_rng(5)
    x = np.column_stack([rng.integers(0, 3, 800).astype(float), rng.normal(size=(800, 2))])
    logit = x[:, 0] - 1 + x[:, 1] + 2 * x[:, 2]
    y = (rng.random(800) < 1 / (1 + np.exp(-logit))).astype(float)
    linear = LinearStart().fit(x, y, ["categorical", "numeric", "numeric"], [3, 0, 0], exclude=[2])
    contributions = linear.contributions(x)
    assert np.all(contributions[:, 2] == 0), "an excluded field never moves a score"
    assert np.abs(contributions[:, 1]).max() > 0.1
    again = LinearStart.from_dict(linear.to_dict())
    np.testing.assert_allclose(again.margin(x), linear.margin(x), atol=1e-12)
    np.testing.assert_allclose(contributions.sum(axis=1), linear.margin(x), atol=1e-9)


def test_drift_check_flags_out_of_range_fields_and_rate_shifts() -> None:
    table = make_table(drift=True)
    model = fit_model(table, make_spec(), FAST)
    assert model.extras["drift"]["drift"]
    assert model.extras["drift"]["out_of_range_share"] > 0.1
    assert model.extras["drift"]["rate_valid"] > 1.5 * model.extras["drift"]["rate_train"]
    stable = fit_model(make_table(drift=False), make_spec(), FAST)
    assert not stable.extras["drift"]["drift"]
    assert stable.linear is None and model.linear is not None


def test_drift_check_reads_train_and_valid_only() -> None:
    table = make_table(2000, drift=False)
    spec = make_spec()
    model = fit_model(table, spec, FAST)
    x = model.builder.transform(table)
    y = table[LABEL].to_numpy()
    check = drift_check(model.builder, x[:1000], x[1000:1200], y[:1000], y[1000:1200])
    assert check["drift"] is False
    shifted = x[1000:1200].copy()
    shifted[:, model.builder.feature_names_.index("index")] += 100
    assert drift_check(model.builder, x[:1000], shifted, y[:1000], y[1000:1200])["drift"]


def test_drifted_model_extrapolates_and_scores_the_same_through_the_bundle() -> None:
    table = make_table(4000, drift=True)
    linear = fit_model(table, make_spec(), FAST)
    trees = fit_model(table, make_spec(), {**FAST, "linear_start": False, "refit": False})
    test = table.iloc[linear.split.test]
    auc_linear = roc_auc_score(test[LABEL], linear.predict_proba(test))
    auc_trees = roc_auc_score(test[LABEL], trees.predict_proba(test))
    assert linear.extras["refit"] and linear.calibrator.state_["method"] == "none"
    assert auc_linear > auc_trees + 0.01, "trees alone stop at the edge of the training range"
    scored = score(bundle_of(linear), test)
    np.testing.assert_allclose(scored["probability"], linear.predict_proba(test), atol=1e-12)


def test_declared_trends_extrapolate_and_spurious_ones_are_held() -> None:
    table = make_regime_table()
    spec = make_spec(numeric=["index", "rate", "visits"], monotone={"index": -1})
    model = fit_model(table, spec, FAST)
    plan = model.extras["linear_plan"]
    assert set(model.extras["drift"]["out_of_range_fields"]) == {"index", "rate"}
    # declared: the linear start carries it, with its sign, and the trees leave it alone
    assert plan["trend"] == ["index"]
    names = model.builder.feature_names_
    assert model.booster.feature_importance("split")[names.index("index")] == 0
    assert model.linear is not None
    coef = {n: model.linear.coef_[np.flatnonzero(model.linear.owner_ == j)[0]]
            for j, n in enumerate(names) if n != "channel"}
    assert coef["index"] < 0
    # undeclared, and extrapolating it ruins the validation slice: held at its range's edge
    assert plan["held"] == ["rate"] and coef["rate"] == 0
    # chosen greedily by validation log loss: the true trend first, the spurious one refused
    assert plan["c"] in LINEAR_C_GRID
    losses, c = plan["valid_log_loss"], f"C={TREND_SEARCH_C:g}"
    assert losses[f"{c}, trend=index"] < losses[f"{c}, trend=-"]
    assert losses[f"{c}, trend=index+rate"] > losses[f"{c}, trend=index"]
    trees = fit_model(table, spec, {**FAST, "linear_start": False})
    test = table.iloc[model.split.test]
    auc = roc_auc_score(test[LABEL], model.predict_proba(test))
    assert auc > roc_auc_score(test[LABEL], trees.predict_proba(test)) + 0.01
    # the trees' penalty lives in the LightGBM text: the bundle scores the same
    scored = score(bundle_of(model), test)
    np.testing.assert_allclose(scored["probability"], model.predict_proba(test), atol=1e-12)


def test_a_declared_trend_the_next_period_contradicts_is_held() -> None:
    # `rate` rises with conversion all through the training slice, so declaring +1 looks right
    # there; validation shows the trend does not carry over, and it is held, not extrapolated
    table = make_regime_table()
    spec = make_spec(numeric=["index", "rate", "visits"], monotone={"index": -1, "rate": 1})
    model = fit_model(table, spec, FAST)
    plan = model.extras["linear_plan"]
    assert plan["trend"] == ["index"] and plan["held"] == ["rate"]
    names = model.builder.feature_names_
    assert model.linear is not None
    rate = np.flatnonzero(model.linear.owner_ == names.index("rate"))
    assert not model.linear.coef_[rate].any()


def test_linear_start_regularisation_can_be_fixed() -> None:
    table = make_regime_table(3000)
    spec = make_spec(numeric=["index", "rate", "visits"])
    model = fit_model(table, spec, {**FAST, "linear_c": 0.5})
    plan = model.extras["linear_plan"]
    assert plan["c"] == 0.5
    assert all(key.startswith("C=0.5") for key in plan["valid_log_loss"])
    assert model.linear is not None and model.linear.c == 0.5


def test_linear_start_damping_reaches_the_bundle() -> None:
    table = make_regime_table(3000)
    spec = make_spec(numeric=["index", "rate", "visits"], monotone={"index": -1})
    straight = fit_model(table, spec, FAST)
    assert straight.extras["linear_plan"]["damping"] == 1.0
    damped = fit_model(table, spec, {**FAST, "linear_damping": 0.25})
    assert damped.extras["linear_plan"]["damping"] == 0.25
    assert damped.linear is not None and damped.linear.damping == 0.25  # the refitted one
    test = table.iloc[damped.split.test]  # `index` keeps falling past its training range
    scored = score(bundle_of(damped), test)  # the bundle extrapolates as the model did
    np.testing.assert_allclose(scored["probability"], damped.predict_proba(test), atol=1e-12)
    # a damped downward trend predicts a smaller rise in conversion over the test slice
    assert damped.predict_proba(test).mean() < straight.predict_proba(test).mean()


@pytest.mark.parametrize("value", [1.5, -0.1, "half"])
def test_linear_damping_outside_zero_to_one_is_refused(value: object) -> None:
    with pytest.raises(SpecError, match=r"linear_damping must be a number from 0 to 1"):
        fit_model(make_table(600), make_spec(), {**FAST, "linear_damping": value})


def test_reasons_add_up_to_the_raw_score_with_a_linear_start() -> None:
    table = make_table(3000, drift=True)
    model = fit_model(table, make_spec(), FAST)
    assert model.linear is not None
    bundle = bundle_of(model)
    sample = table.iloc[model.split.test[:200]]
    matrix = bundle.builder.transform(sample)
    contrib = np.asarray(bundle.booster.predict(matrix, pred_contrib=True))
    contrib = contrib + bundle.linear_.contributions(matrix)  # type: ignore[union-attr]
    np.testing.assert_allclose(contrib.sum(axis=1), model.margin(matrix), atol=1e-9)
    impacts = field_impacts(bundle, contrib, contrib.sum(axis=1))
    points = 100 * bundle.calibrator.transform(contrib.sum(axis=1))
    base = 100 * bundle.calibrator.transform(contrib[:, -1])
    np.testing.assert_allclose(impacts.sum(axis=1), points - base, atol=1e-6)
    reasons = score(bundle, sample, reasons=3)["reasons"]
    assert all(len(r) == 3 for r in reasons)


def test_platt_never_flips_a_models_order() -> None:
    rng = np.random.default_rng(3)
    margin = rng.normal(size=1000)
    y = (rng.random(1000) < 1 / (1 + np.exp(2 * margin))).astype(float)  # ranked backwards
    calibrator = Calibrator("platt").fit(margin, y)
    p = calibrator.transform(np.sort(margin))
    assert np.all(np.diff(p) >= 0)
    assert calibrator.transform(margin).mean() == pytest.approx(y.mean(), abs=0.01)


def test_calibrator_state_is_json_numbers() -> None:
    import json

    rng = np.random.default_rng(4)
    margin = rng.normal(size=2000)
    y = (rng.random(2000) < 1 / (1 + np.exp(-margin))).astype(float)
    calibrator = Calibrator().fit(margin, y)
    state = json.loads(json.dumps(calibrator.to_dict()))
    again = Calibrator.from_dict(state)
    np.testing.assert_allclose(again.transform(margin), calibrator.transform(margin))
    assert set(calibrator.losses_) == {"platt", "isotonic"}


def test_tiers_fall_from_a_to_d_on_validation() -> None:
    table = make_table(4000)
    model = fit_model(table, make_spec(), FAST)
    valid = table.iloc[model.split.valid]
    rows = tier_table(valid[LABEL].to_numpy(), model.predict_proba(valid), model.tiers)
    assert [r["tier"] for r in rows] == ["A", "B", "C", "D"]
    assert tiers_descend(rows)
    assert rows[0]["conversion_rate"] > rows[-1]["conversion_rate"] + 0.2


def test_split_without_a_clock_is_stratified() -> None:
    table = make_table(1500).drop(columns=[TIME])
    model = fit_model(table, make_spec(), FAST)
    assert model.split.kind == "stratified"
    assert not model.extras["refit"], "no time order: nothing newer to refit on"


def test_tuning_returns_parameters_from_the_search_space() -> None:
    from leadscore.tuning import search_space_keys, tune

    result = tune(make_table(1500), make_spec(), 3, FAST)
    assert result["trials"] == 3
    assert set(result["params"]) == set(search_space_keys())
    assert 0.5 < result["best_value"] <= 1.0
    assert result["best_value"] >= result["default_value"]


def test_tuning_scores_a_trial_as_training_would_score_it() -> None:
    # under drift the trees start from the linear start: the first trial (the defaults) must
    # see the same start, penalties and validation margin as `fit_model`, or the search would
    # pick parameters for a model that is never trained
    from leadscore.tuning import tune

    table = make_table(3000, drift=True)
    model = fit_model(table, make_spec(), FAST)
    assert model.linear is not None
    result = tune(table, make_spec(), 2, FAST)
    assert result["default_value"] == pytest.approx(model.extras["valid_roc_auc"], abs=1e-9)


def test_the_model_card_names_what_the_linear_start_extrapolates() -> None:
    # the trees leave extrapolated fields alone, so the gain table cannot show them: the card
    # must, or a data team reads the strongest field as unused
    from leadscore.report import build_report

    table = make_regime_table()
    spec = make_spec(numeric=["index", "rate", "visits"], monotone={"index": -1})
    model = fit_model(table, spec, FAST)
    y = table[LABEL].to_numpy()
    valid, test = table.iloc[model.split.valid], table.iloc[model.split.test]
    card = build_report(
        dataset="quality", trained=model, y_valid=y[model.split.valid],
        p_valid=model.predict_proba(valid), y_test=y[model.split.test],
        p_test=model.predict_proba(test),
    )
    note = next(n for n in card["notes"] if n.startswith("The logistic start"))
    assert "extrapolates index beyond" in note and note.endswith("held at the edge of their "
                                                                  "training range: rate.")


def test_refit_auto_skips_a_large_steady_table_and_says_so(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    """Past REFIT_ALWAYS_BELOW training leads with no drift, "auto" keeps the first model (a
    second training would double the time for little); under drift it still refits."""
    import leadscore.train as train_module

    assert train_module.wants_refit("auto", True, 10**7)
    assert not train_module.wants_refit("auto", False, 10**7)
    assert train_module.wants_refit("auto", False, 10)
    assert train_module.wants_refit("true", False, 10**7)
    assert not train_module.wants_refit(False, True, 10)
    monkeypatch.setattr(train_module, "REFIT_ALWAYS_BELOW", 1000)
    steady = fit_model(make_table(3000), make_spec(), FAST)
    assert steady.extras["refit"] is False
    assert "Not refitted" in steady.extras["refit_skipped"]
    assert "refit=true" in steady.extras["refit_skipped"]
    assert steady.calibrator.state_["method"] in {"platt", "isotonic", "none"}
    drifted = fit_model(make_table(4000, drift=True), make_spec(), FAST)
    assert drifted.extras["drift"]["drift"] and drifted.extras["refit"] is True
    asked = fit_model(make_table(3000), make_spec(), {**FAST, "refit": True})
    assert asked.extras["refit"] is True and "refit_skipped" not in asked.extras


def test_the_drift_profile_of_a_large_table_comes_from_a_sample(
    monkeypatch: pytest.MonkeyPatch,
) -> None:
    import leadscore.evaluate as evaluate_module
    from leadscore.evaluate import bin_counts, population_stability, profile_training

    table = make_table(3000)
    model = fit_model(table, make_spec(), FAST)
    full = profile_training(model, table)
    monkeypatch.setattr(evaluate_module, "PROFILE_MAX_ROWS", 1500)
    sampled = profile_training(model, table)
    assert full["rows"] == 3000 and "profiled_rows" not in full
    assert sampled["rows"] == 3000 and sampled["profiled_rows"] == 1500
    # the whole table measured against the sampled profile shows no drift
    x = model.builder.transform(table)
    for j, name in enumerate(model.builder.feature_names_):
        entry = sampled["features"][name]
        psi = population_stability(entry["proportions"], bin_counts(entry, x[:, j]))
        assert psi < 0.02, name
